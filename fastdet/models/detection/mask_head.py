"""Mask branch of Mask R-CNN (He et al., 2017), torchvision's structure and state_dict keys:
four 3x3 convolutions with ReLU on the 14 x 14 RoIAlign features (MaskRCNNHeads, keys
"{i}.0.weight"), a 2x2 stride-2 transposed convolution to 28 x 28 and one 1x1 logit map per class
(MaskRCNNPredictor, keys "conv5_mask", "mask_fcn_logits").

Training targets are the ground-truth masks cut by fastdet's roi_align at each positive RoI
(spatial scale 1, adaptive sampling, aligned=False: torchvision's rule); the loss is binary
cross-entropy on each RoI's own class channel, averaged over RoIs and pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import roi_align


def _kaiming(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        if name.endswith("weight"):
            nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.zeros_(p)


class MaskRCNNHeads(nn.Sequential):
    """3x3 convolutions (padding = dilation) with ReLU, one block per entry of `layers`."""

    _version = 2

    def __init__(self, in_channels: int, layers=(256, 256, 256, 256), dilation: int = 1):
        blocks, c = [], in_channels
        for out in layers:
            conv = nn.Conv2d(c, out, 3, padding=dilation, dilation=dilation)
            blocks.append(nn.Sequential(conv, nn.ReLU(inplace=True)))
            c = out
        super().__init__(*blocks)
        _kaiming(self)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        # checkpoints of torchvision before its version 2 name the convolutions mask_fcn1..4
        if local_metadata.get("version", 1) < 2:
            for i in range(len(self)):
                for p in ("weight", "bias"):
                    old = f"{prefix}mask_fcn{i + 1}.{p}"
                    if old in state_dict:
                        state_dict[f"{prefix}{i}.0.{p}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


class MaskRCNNPredictor(nn.Sequential):
    """conv5_mask (2x2 transposed convolution, stride 2), ReLU, mask_fcn_logits (1x1, one map
    per class, background included)."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__()
        self.add_module("conv5_mask", nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("mask_fcn_logits", nn.Conv2d(dim_reduced, num_classes, 1))
        _kaiming(self)


def mask_targets(gt_masks: Tensor, boxes: Tensor, matched: Tensor, size: int) -> Tensor:
    """float [K, size, size]: gt_masks [G, H, W] (0/1) of the matched ground truths cut at
    boxes [K, 4] by roi_align (spatial scale 1, adaptive sampling, aligned=False)."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat([matched.to(boxes)[:, None], boxes], 1)
    return roi_align(gt_masks[:, None].to(boxes), rois, (size, size), 1.0)[:, 0]


def mask_loss(logits: Tensor, proposals, gt_masks, gt_labels, matched) -> Tensor:
    """Mean BCE of logits [K, C, M, M] on the positive RoIs' own class, against the targets of
    mask_targets; a batch without positive RoIs gives a zero loss that keeps the graph."""
    size = logits.shape[-1]
    labels = torch.cat([lab[i] for lab, i in zip(gt_labels, matched)])
    targets = torch.cat(
        [mask_targets(m, p, i, size) for m, p, i in zip(gt_masks, proposals, matched)]
    )
    if targets.numel() == 0:
        return logits.sum() * 0
    picked = logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(picked, targets.to(picked.dtype))


def mask_probabilities(logits: Tensor, labels: list[Tensor]) -> list[Tensor]:
    """Per image [Di, M, M]: the sigmoid of each detection's own class map."""
    # no branch on the count (zero detections index to [0, M, M] all the same), so torch.export
    # traces one graph for any count
    flat = torch.cat(labels)
    probs = logits[torch.arange(flat.shape[0], device=flat.device), flat].sigmoid()
    return list(probs.split([lab.shape[0] for lab in labels]))
