"""Losses of the original work's models, on logits (never on probabilities, for stability).

Segmentation: BCE, focal (Lin et al., 2017), soft Dice, BCE + Dice; adversarial terms of
U-Net+GAN; detection: smooth L1 with sigma (Girshick's Fast R-CNN form: sigma 3 for the RPN, 1 for
the RoI head). `reduction` is "mean" (default), "sum" or "none" where a loss is per element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import sigmoid_focal_loss

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    _check_reduction(reduction)
    return x.mean() if reduction == "mean" else x.sum() if reduction == "sum" else x


def _check(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if logits.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the "
            "same shape"
        )
    return target.to(logits.dtype)


def bce(logits, target, reduction: str = "mean"):
    """Binary cross-entropy on logits; target in [0, 1]."""
    target = _check(logits, target)
    return _reduce(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), reduction)


def focal(logits, target, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean"):
    """Focal loss: -alpha_t (1 - p_t)^gamma log p_t, with p_t the probability of the true class and
    alpha_t = alpha for positives, 1 - alpha for negatives (alpha < 0: no weighting); computed by
    fastdet.ops.sigmoid_focal_loss (torchvision's), with "mean" as the default reduction."""
    target = _check(logits, target)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    _check_reduction(reduction)
    return sigmoid_focal_loss(logits, target, -1.0 if alpha < 0 else alpha, gamma, reduction)


def dice(logits, target, eps: float = 1.0, reduction: str = "mean"):
    """Soft Dice loss per sample, 1 - (2 sum(p g) + eps) / (sum(p) + sum(g) + eps), summed over
    all but the batch dimension; eps keeps empty masks defined (empty and predicted empty: 0)."""
    target = _check(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    g = target.flatten(1)
    score = (2 * (p * g).sum(1) + eps) / (p.sum(1) + g.sum(1) + eps)
    return _reduce(1 - score, reduction)


def bce_dice(logits, target, bce_weight: float = 1.0, dice_weight: float = 1.0):
    """bce_weight * BCE + dice_weight * Dice, both averaged."""
    return bce_weight * bce(logits, target) + dice_weight * dice(logits, target)


def generator_adversarial(d_fake_logits):
    """The generator's adversarial term -log D(G(x)), averaged (non-saturating form)."""
    return F.binary_cross_entropy_with_logits(d_fake_logits, torch.ones_like(d_fake_logits))


def discriminator_adversarial(d_real_logits, d_fake_logits):
    """-log D(real) - log(1 - D(fake)), each averaged."""
    return F.binary_cross_entropy_with_logits(
        d_real_logits, torch.ones_like(d_real_logits)
    ) + F.binary_cross_entropy_with_logits(d_fake_logits, torch.zeros_like(d_fake_logits))


def gan_generator_loss(seg_loss, d_fake_logits, lam: float = 0.1):
    """U-Net+GAN generator objective: segmentation loss - lambda * log D(G(x))."""
    return seg_loss + lam * generator_adversarial(d_fake_logits)


def smooth_l1(pred, target, sigma: float = 1.0, reduction: str = "sum"):
    """Fast R-CNN's smooth L1: 0.5 (sigma x)^2 where |x| < 1 / sigma^2, else |x| - 0.5 / sigma^2.
    Sum by default: detection heads divide by their own sample count."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape"
        )
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    s2 = sigma * sigma
    d = (pred - target).abs()
    loss = torch.where(d < 1 / s2, 0.5 * s2 * d * d, d - 0.5 / s2)
    return _reduce(loss, reduction)
