"""Box regression losses: generalized_box_iou_loss, distance_box_iou_loss and
complete_box_iou_loss, as torchvision.ops.

The IoU losses compare paired boxes element by element ([..., 4] against [..., 4], x1, y1, x2,
y2), so they are a handful of differentiable torch ops, written to give torchvision's values and
gradients: the same expressions in the same order, eps where torchvision puts it, signed areas
for inverted boxes (unlike the pairwise kernels, which count them as empty), non-float32/64
inputs computed and returned in float32. Numpy and cupy arrays are accepted (no gradient).

`reduction`: "none" (the default, as torchvision), "mean" (0 for no boxes, still differentiable)
or "sum"; anything else raises ValueError("Invalid ...").

Differences from torchvision.ops: boxes1 and boxes2 broadcast (torchvision's need one shape) and
may differ in dtype (promoted as torch does); NaN or inf coordinates raise ValueError on the CPU
(torchvision's loss is NaN; on the GPU a check would cost a host sync); eps must be finite and
>= 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _arrays as arrays

_REDUCTIONS = ("none", "mean", "sum")
_FOUR_OVER_PI2 = 4 / math.pi**2


def _check_reduction(reduction: str) -> None:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(
            f"Invalid value for reduction: {reduction!r}; expected one of {_REDUCTIONS}"
        )


def _reduce(loss: Tensor, reduction: str, empty_mean_zero: bool = True) -> Tensor:
    if reduction == "mean":
        if empty_mean_zero and loss.numel() == 0:
            return 0.0 * loss.sum()  # keeps the graph, so backward gives zero gradients
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _upcast(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_pair(boxes1, boxes2) -> None:
    arrays.same_kind(boxes1=boxes1, boxes2=boxes2)
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        arrays.check_float_or_int(b, name)
        if b.ndim < 1 or b.shape[-1] != 4:
            raise arrays.ShapeError(f"{name} must have shape [..., 4], got {tuple(b.shape)}")
    try:
        torch.broadcast_shapes(tuple(boxes1.shape), tuple(boxes2.shape))
    except RuntimeError:
        raise arrays.ShapeError(
            f"boxes1 {tuple(boxes1.shape)} and boxes2 {tuple(boxes2.shape)} do not broadcast"
        ) from None
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        arrays.check_finite_any(b, name)


# The graphs below unbind and combine the coordinates in torchvision's order, so autograd sums
# the gradient terms in the same order and the gradients match bit for bit.
def _inter_union(b1: Tensor, b2: Tensor):
    """Intersection (0 unless both sides are positive, with no gradient there) and union."""
    x1, y1, x2, y2 = b1.unbind(-1)
    gx1, gy1, gx2, gy2 = b2.unbind(-1)
    iw = torch.minimum(x2, gx2) - torch.maximum(x1, gx1)
    ih = torch.minimum(y2, gy2) - torch.maximum(y1, gy1)
    inter = torch.where((iw > 0) & (ih > 0), iw * ih, torch.zeros_like(iw))
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter
    return inter, union


def _giou_loss(b1: Tensor, b2: Tensor, reduction: str, eps: float) -> Tensor:
    b1, b2 = _upcast(b1), _upcast(b2)
    inter, union = _inter_union(b1, b2)
    iou = inter / (union + eps)
    x1, y1, x2, y2 = b1.unbind(-1)
    gx1, gy1, gx2, gy2 = b2.unbind(-1)
    hull = (torch.maximum(x2, gx2) - torch.minimum(x1, gx1)) * (
        torch.maximum(y2, gy2) - torch.minimum(y1, gy1)
    )
    return _reduce(1 - (iou - (hull - union) / (hull + eps)), reduction)


def _diou_terms(b1: Tensor, b2: Tensor, eps: float):
    """(1 - IoU + d^2 / (c^2 + eps), IoU) of paired boxes."""
    inter, union = _inter_union(b1, b2)
    iou = inter / (union + eps)
    x1, y1, x2, y2 = b1.unbind(-1)
    gx1, gy1, gx2, gy2 = b2.unbind(-1)
    hx1, hy1 = torch.minimum(x1, gx1), torch.minimum(y1, gy1)
    hx2, hy2 = torch.maximum(x2, gx2), torch.maximum(y2, gy2)
    diag = ((hx2 - hx1) ** 2) + ((hy2 - hy1) ** 2) + eps
    cx, cy = (x2 + x1) / 2, (y2 + y1) / 2
    gcx, gcy = (gx1 + gx2) / 2, (gy1 + gy2) / 2
    return 1 - iou + (((cx - gcx) ** 2) + ((cy - gcy) ** 2)) / diag, iou


def _diou_loss(b1: Tensor, b2: Tensor, reduction: str, eps: float) -> Tensor:
    b1, b2 = _upcast(b1), _upcast(b2)
    return _reduce(_diou_terms(b1, b2, eps)[0], reduction)


def _ciou_loss(b1: Tensor, b2: Tensor, reduction: str, eps: float) -> Tensor:
    b1, b2 = _upcast(b1), _upcast(b2)
    # torchvision's DIoU part keeps its default eps whatever eps is given; so does this one.
    diou, iou = _diou_terms(b1, b2, 1e-7)
    x1, y1, x2, y2 = b1.unbind(-1)
    gx1, gy1, gx2, gy2 = b2.unbind(-1)
    w1, h1, w2, h2 = x2 - x1, y2 - y1, gx2 - gx1, gy2 - gy1
    v = _FOUR_OVER_PI2 * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
    alpha = (v / (1 - iou + v + eps)).detach()  # a weight, not a path for gradients
    return _reduce(diou + alpha * v, reduction)


def _loss(fn, boxes1, boxes2, reduction: str, eps: float):
    _check_pair(boxes1, boxes2)
    _check_reduction(reduction)
    eps = arrays.check_real(eps, "eps", finite=True, minimum=0)
    return arrays.via_torch(fn, boxes1, boxes2, reduction=reduction, eps=eps)


def generalized_box_iou_loss(boxes1, boxes2, reduction: str = "none", eps: float = 1e-7):
    """1 - GIoU of paired boxes [..., 4] (Rezatofighi et al., 2019): [...] before reduction."""
    return _loss(_giou_loss, boxes1, boxes2, reduction, eps)


def distance_box_iou_loss(boxes1, boxes2, reduction: str = "none", eps: float = 1e-7):
    """1 - DIoU of paired boxes [..., 4] (Zheng et al., 2020): 1 - IoU + d^2 / (c^2 + eps)."""
    return _loss(_diou_loss, boxes1, boxes2, reduction, eps)


def complete_box_iou_loss(boxes1, boxes2, reduction: str = "none", eps: float = 1e-7):
    """1 - CIoU of paired boxes [..., 4] (Zheng et al., 2020): the DIoU loss + alpha v, v the
    aspect-ratio term and alpha = v / (1 - IoU + v + eps) held constant in the gradient."""
    return _loss(_ciou_loss, boxes1, boxes2, reduction, eps)
