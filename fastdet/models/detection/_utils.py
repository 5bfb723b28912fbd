"""Matching, sampling and losses shared by the RPN and the RoI head (torchvision's rules).

Matcher: each prediction (anchor or proposal) takes the ground truth of highest IoU; IoU below
`low` marks it negative (-1), IoU in [low, high) ignored (-2). With allow_low_quality_matches, the
predictions of highest IoU with each ground truth are matched to it whatever the IoU (ties
included), as Faster R-CNN's "best anchor for each ground truth" rule and torchvision's Matcher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops import box_iou
from .. import losses

BELOW_LOW = -1
BETWEEN = -2


def match(
    gt_boxes: Tensor, boxes: Tensor, high: float, low: float, allow_low_quality: bool
) -> Tensor:
    """int64 [N]: index of the matched ground truth for each of boxes [N, 4], or BELOW_LOW /
    BETWEEN. gt_boxes [M, 4] with M >= 1 and N >= 1 (callers handle empty ground truth)."""
    iou = box_iou(gt_boxes, boxes)  # [M, N]
    best, matches = iou.max(dim=0)
    # torch.where throughout, not boolean indexing: no size is read back (no host sync)
    out = torch.where(best < low, BELOW_LOW, torch.where(best < high, BETWEEN, matches))
    if allow_low_quality:
        # every prediction that ties for the best IoU of some ground truth becomes positive
        best_per_gt = iou.max(dim=1).values
        out = torch.where((iou == best_per_gt[:, None]).any(0), matches, out)
    return out


def sample(
    labels: list[Tensor], batch_size: int, positive_fraction: float
) -> tuple[list[Tensor], list[Tensor]]:
    """Per image, random indices of at most batch_size * positive_fraction positives (label >= 1)
    and negatives (label 0) filling the rest of batch_size; label -1 is never sampled. Uses
    torch.randperm on the labels' device as torchvision does (same seed, same draw)."""
    pos_out, neg_out = [], []
    for lab in labels:
        # host syncs, two per image: randperm needs each count on the host (torchvision's
        # draws, the same for the same seed)
        pos = torch.where(lab >= 1)[0]
        neg = torch.where(lab == 0)[0]
        n_pos = min(pos.numel(), int(batch_size * positive_fraction))
        n_neg = min(neg.numel(), batch_size - n_pos)
        pos = pos[torch.randperm(pos.numel(), device=pos.device)[:n_pos]]
        neg = neg[torch.randperm(neg.numel(), device=neg.device)[:n_neg]]
        # sorted, as torchvision's masks give them, so losses are summed in the same order
        pos_out.append(pos.sort().values)
        neg_out.append(neg.sort().values)
    return pos_out, neg_out


def large_enough(boxes: Tensor, min_size: float) -> Tensor:
    """bool [N]: width and height >= min_size, remove_small_boxes's rule as a mask (to combine
    with other conditions before one nonzero)."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)


BOX_LOSSES = ("smooth_l1", "l1")
CLS_LOSSES = ("ce", "focal")


def check_loss_options(box_loss: str, cls_loss: str) -> None:
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
    if cls_loss not in CLS_LOSSES:
        raise ValueError(f"cls_loss must be one of {CLS_LOSSES}, got {cls_loss!r}")


def set_loss_options(module, sigma: float, box_loss: str, cls_loss: str, focal_gamma: float):
    """The loss options of the RPN or the RoI heads, checked, as the module's attributes."""
    check_loss_options(box_loss, cls_loss)
    module.sigma, module.focal_gamma = sigma, focal_gamma
    module.box_loss, module.cls_loss = box_loss, cls_loss


def box_regression_loss(pred: Tensor, target: Tensor, kind: str, sigma: float) -> Tensor:
    """Summed over elements (the caller divides by its sample count). smooth_l1 with sigma is
    torch's smooth_l1_loss with beta = 1 / sigma^2 (torchvision's beta 1/9 is sigma 3)."""
    if kind == "l1":
        return (pred - target).abs().sum()
    return losses.smooth_l1(pred, target, sigma=sigma, reduction="sum")


def objectness_loss(logits: Tensor, labels: Tensor, kind: str, gamma: float) -> Tensor:
    """Mean binary loss over the sampled anchors: BCE, or focal with gamma (no alpha weighting,
    the 1:1 sampling already balances classes)."""
    if kind == "focal":
        return losses.focal(logits, labels, alpha=-1.0, gamma=gamma, reduction="mean")
    return F.binary_cross_entropy_with_logits(logits, labels)


def classification_loss(logits: Tensor, labels: Tensor, kind: str, gamma: float) -> Tensor:
    """Mean softmax loss over the sampled RoIs: cross-entropy, or its focal form
    -(1 - p_t)^gamma log p_t (softmax, so scores at inference stay softmax probabilities)."""
    ce = F.cross_entropy(logits, labels, reduction="none" if kind == "focal" else "mean")
    if kind != "focal":
        return ce
    p_t = torch.exp(-ce)
    return ((1 - p_t) ** gamma * ce).mean()
