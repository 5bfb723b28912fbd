"""soft_nms (Bodla et al., ICCV 2017): decay the scores of overlapping boxes instead of
dropping them. torchvision has no soft_nms; the semantics follow the paper and mmcv.

Each step selects the remaining box with the highest current score (ties: lower index) and
decays every other remaining box by its IoU o with it: linear: s *= 1 - o when o > iou_threshold;
gaussian: s *= exp(-o^2 / sigma). Boxes whose score falls below score_threshold are dropped.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._ext import _C
from . import _arrays as arrays

# The custom op carries the method as an int (its schema has no enum type); the kernel takes
# the _C.SoftNmsMethod member, looked up from the int here rather than converted per call.
_METHODS = {name: int(m) for name, m in _C.SoftNmsMethod.__members__.items()}
_METHOD_OF_INT = {int(m): m for m in _C.SoftNmsMethod.__members__.values()}


def _soft(boxes, scores, iou_threshold, sigma, score_threshold, method: int):
    kernel_method = _METHOD_OF_INT.get(method)
    if kernel_method is None:  # only reachable through torch.ops.fastdet.soft_nms
        raise ValueError(f"method must be one of {sorted(_METHOD_OF_INT)}, got {method}")
    n = boxes.shape[0]
    arrays.check_coordinates(boxes, "boxes")
    arrays.check_finite(scores, "scores")
    keep = arrays.empty(boxes, (n,), np.int64)
    out = arrays.empty(scores, (n,))
    if n == 0:
        return keep, out
    ws_args, _ws = arrays.workspace(boxes, "soft_nms_workspace_bytes", n)
    count = arrays.launch(
        boxes,
        "soft_nms",
        arrays.dtype_code(boxes),
        arrays.ptr(boxes),
        arrays.ptr(scores),
        n,
        iou_threshold,
        sigma,
        score_threshold,
        kernel_method,
        arrays.ptr(keep),
        arrays.ptr(out),
        *ws_args,
    )
    if count < 0:
        raise arrays.status_error(count, "soft_nms")
    copy = (lambda x: x.clone()) if isinstance(keep, Tensor) else (lambda x: x.copy())
    return copy(keep[:count]), copy(out[:count])


@torch.library.custom_op("fastdet::soft_nms", mutates_args=())
def _soft_op(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    sigma: float,
    score_threshold: float,
    method: int,
) -> tuple[Tensor, Tensor]:
    return _soft(
        boxes.contiguous(), scores.contiguous(), iou_threshold, sigma, score_threshold, method
    )


@_soft_op.register_fake
def _(boxes, scores, iou_threshold, sigma, score_threshold, method):
    keep = arrays.fake_indices(boxes)
    return keep, scores.new_empty(keep.shape)


def soft_nms(
    boxes,
    scores,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
):
    """Soft-NMS. boxes [N, 4] (x1, y1, x2, y2), scores [N] -> (keep int64 [K], scores [K]):
    the selected boxes in selection order (decreasing decayed score) and their decayed scores.
    method "linear" uses iou_threshold; "gaussian" uses sigma (> 0)."""
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be 'linear' or 'gaussian', got {method!r}")
    t = arrays.check_threshold(iou_threshold)
    sigma = arrays.check_real(sigma, "sigma", allow_nan=True)
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be > 0 for the gaussian method, got {sigma}")
    if math.isnan(sigma):  # unused by "linear", but NaN is never meant
        raise ValueError("sigma must be a number, got NaN")
    sthr = arrays.check_threshold(score_threshold, "score_threshold")
    b, s = arrays.prepare_boxes_scores(boxes, scores)
    args = (t, sigma, sthr, _METHODS[method])
    if isinstance(b, Tensor) and not arrays.eager(b, s):
        keep, out = _soft_op(b, s, *args)
    else:  # numpy, cupy, or the eager fast path
        keep, out = _soft(b, s, *args)
    return keep, arrays.cast(out, scores)
