"""sigmoid_focal_loss (Lin et al., 2017, RetinaNet), as torchvision.ops: torchvision's
expressions on torch tensors (gradients as there); numpy and cupy arrays are accepted."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _arrays as arrays
from .iou_loss import _check_reduction, _reduce


def _focal(inputs: Tensor, targets: Tensor, alpha: float, gamma: float, reduction: str):
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction, empty_mean_zero=False)


def sigmoid_focal_loss(
    inputs, targets, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"
):
    """Focal loss (Lin et al., 2017) on logits: -alpha_t (1 - p_t)^gamma log p_t element-wise,
    alpha_t = alpha for positives and 1 - alpha for negatives; alpha = -1 turns the weighting
    off. inputs and targets: same shape, targets in [0, 1]."""
    if not (0 <= alpha <= 1) and alpha != -1:
        raise ValueError(f"alpha must be in [0, 1] or -1 (no weighting), got {alpha}")
    _check_reduction(reduction)
    arrays.same_kind(inputs=inputs, targets=targets)
    return arrays.via_torch(
        _focal, inputs, targets, alpha=float(alpha), gamma=gamma, reduction=reduction
    )
