"""Region Proposal Network (Ren et al., 2015) with torchvision's structure and rules, on
fastdet's AnchorGenerator, BoxCoder, box_iou, clip_boxes_to_image and batched_nms
(remove_small_boxes's rule applied as a mask, with the score threshold: one host sync).

Per feature level: 3x3 convolution + ReLU, 1x1 objectness logits (one per anchor, sigmoid) and
1x1 box deltas (4 per anchor). Anchors and predictions are laid out per level, position-major,
then anchor (torchvision's order). Training: anchors with IoU > fg_iou_thresh (>=) with a ground
truth, and the best anchors of each ground truth, are positive; IoU < bg_iou_thresh negative;
batch_size_per_image anchors per image are sampled, at most positive_fraction positive.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...ops import BoxCoder, batched_nms, clip_boxes_to_image
from . import _utils as det_utils


class RPNHead(nn.Module):
    """conv.0.0 (3x3, ReLU), cls_logits (1x1, A), bbox_pred (1x1, 4A): torchvision's keys."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True))
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """feats: per level [B, C, H, W] -> logits [B, A, H, W] and deltas [B, 4A, H, W] per
        level."""
        logits, deltas = [], []
        for f in feats:
            t = self.conv(f)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten(x: Tensor, c: int) -> Tensor:
    """[B, A * c, H, W] -> [B, H * W * A, c] (position-major, then anchor: the anchors' order)."""
    b, _, h, w = x.shape
    return x.view(b, -1, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, c)


def concat_predictions(logits: list[Tensor], deltas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-level head outputs -> objectness [B, total] and deltas [B * total, 4]."""
    obj = torch.cat([_flatten(o, 1) for o in logits], dim=1).flatten(1)
    reg = torch.cat([_flatten(d, 4) for d in deltas], dim=1).reshape(-1, 4)
    return obj, reg


class RegionProposalNetwork(nn.Module):
    """pre_nms_top_n / post_nms_top_n: dicts {"training": n, "testing": n}. pre_nms_top_n is
    taken per feature level (torchvision's rule; with one level, as the original, it is the
    top-k over all anchors); NMS runs per level at nms_thresh; post_nms_top_n kept per image.
    Losses: objectness "ce" (BCE) or "focal"; box "smooth_l1" (with sigma; 3 = torchvision's
    beta 1/9 = the original) or "l1", summed over positives / number of sampled anchors."""

    def __init__(
        self,
        anchor_generator,
        head: RPNHead,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n=None,
        post_nms_top_n=None,
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        sigma: float = 3.0,
        box_loss: str = "smooth_l1",
        cls_loss: str = "ce",
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        det_utils.set_loss_options(self, sigma, box_loss, cls_loss, focal_gamma)
        self.anchor_generator, self.head = anchor_generator, head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self._pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self._post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh, self.score_thresh = nms_thresh, score_thresh
        self.min_size = 1e-3  # proposals narrower than this (pixels) are dropped, as torchvision

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def forward(self, images, features: dict, targets=None) -> tuple[list[Tensor], dict]:
        """images: ImageList; features: OrderedDict of [B, C, Hl, Wl]; targets (training): list of
        dicts with "boxes" [Ni, 4] in the padded batch's coordinates. Returns per-image proposals
        [Pi, 4] (detached) and the loss dict (empty in evaluation)."""
        feats = list(features.values())
        # box arithmetic in float32 under autocast: a bfloat16 coordinate of a 600-pixel image
        # is exact only to 4 px (torchvision decodes in the heads' dtype). No-op in float32.
        logits, deltas = ([t.float() for t in out] for out in self.head(feats))
        anchors = self.anchor_generator(images, feats)
        per_level = [o[0].numel() for o in logits]
        objectness, pred_deltas = concat_predictions(logits, deltas)
        num_images = len(anchors)
        proposals = self.box_coder.decode(pred_deltas.detach(), list(anchors)).view(
            num_images, -1, 4
        )
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            losses = self.compute_loss(objectness, pred_deltas, anchors, targets)
        return boxes, losses

    def _top_n_idx(self, objectness: Tensor, per_level: list[int]) -> Tensor:
        out, offset = [], 0
        for ob in objectness.split(per_level, 1):
            k = min(self.pre_nms_top_n(), ob.shape[1])
            out.append(ob.topk(k, dim=1).indices + offset)
            offset += ob.shape[1]
        return torch.cat(out, dim=1)

    def filter_proposals(
        self, proposals: Tensor, objectness: Tensor, image_shapes, per_level: list[int]
    ):
        """proposals [B, total, 4], objectness logits [B * total] or [B, total] -> per-image
        boxes [Pi, 4] and sigmoid scores [Pi]: top-k per level, clip to the image, drop boxes
        under min_size, drop scores < score_thresh, NMS per level, keep post_nms_top_n."""
        b = proposals.shape[0]
        objectness = objectness.detach().reshape(b, -1)
        levels = (
            torch.cat(
                [
                    torch.full((n,), i, dtype=torch.int64, device=proposals.device)
                    for i, n in enumerate(per_level)
                ]
            )
            .reshape(1, -1)
            .expand_as(objectness)
        )
        idx = self._top_n_idx(objectness, per_level)
        rows = torch.arange(b, device=proposals.device)[:, None]
        scores_all = torch.sigmoid(objectness[rows, idx])
        levels, proposals = levels[rows, idx], proposals[rows, idx]
        final_boxes, final_scores = [], []
        for boxes, scores, lvl, shape in zip(proposals, scores_all, levels, image_shapes):
            boxes = clip_boxes_to_image(boxes, shape)
            # remove_small_boxes and the score threshold as one mask: one size read back
            keep = torch.where(
                det_utils.large_enough(boxes, self.min_size) & (scores >= self.score_thresh)
            )[0]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            # host syncs left per image: the mask's count above and NMS's (data-sized outputs)
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def assign_targets(
        self, anchors: list[Tensor], targets: list[dict]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: labels [A] float (1 positive, 0 negative, -1 ignored) and the index [A] of
        each anchor's matched ground truth (0 where there is none). No ground truth: all
        negative."""
        labels, matched = [], []
        for anc, t in zip(anchors, targets):
            gt = t["boxes"]
            if gt.numel() == 0:
                labels.append(torch.zeros(anc.shape[0], dtype=anc.dtype, device=anc.device))
                matched.append(torch.zeros(anc.shape[0], dtype=torch.int64, device=anc.device))
                continue
            m = det_utils.match(gt.to(anc.dtype), anc, self.fg_iou_thresh, self.bg_iou_thresh, True)
            lab = (m >= 0).to(anc.dtype)
            lab = torch.where(m == det_utils.BETWEEN, -1.0, lab)  # (no boolean-mask sync)
            labels.append(lab)
            matched.append(m.clamp(min=0))
        return labels, matched

    def compute_loss(self, objectness: Tensor, pred_deltas: Tensor, anchors, targets) -> dict:
        """objectness [B, total] logits, pred_deltas [B * total, 4] -> loss_objectness (mean over
        sampled anchors) and loss_rpn_box_reg (sum over sampled positives / sampled count)."""
        labels, matched = self.assign_targets(anchors, targets)
        pos, neg = det_utils.sample(labels, self.batch_size_per_image, self.positive_fraction)
        total = anchors[0].shape[0]
        pos_flat = torch.cat([p + i * total for i, p in enumerate(pos)])
        neg_flat = torch.cat([n + i * total for i, n in enumerate(neg)])
        sampled = torch.cat([pos_flat, neg_flat])
        # regression targets only for the sampled positives (never for anchors without a match)
        gt_pos = [
            t["boxes"].to(a.dtype)[m[p]] for t, a, m, p in zip(targets, anchors, matched, pos)
        ]
        anc_pos = [a[p] for a, p in zip(anchors, pos)]
        reg_targets = self.box_coder.encode_single(torch.cat(gt_pos), torch.cat(anc_pos))
        box = det_utils.box_regression_loss(
            pred_deltas[pos_flat], reg_targets, self.box_loss, self.sigma
        )
        obj = det_utils.objectness_loss(
            objectness.flatten()[sampled],
            torch.cat(labels)[sampled],
            self.cls_loss,
            self.focal_gamma,
        )
        return {"loss_objectness": obj, "loss_rpn_box_reg": box / max(sampled.numel(), 1)}
