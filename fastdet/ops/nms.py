"""nms and batched_nms: greedy non-maximum suppression, exactly torchvision's kept set; and
suppress_contained, the same greedy pass with containment instead of IoU (a small box nested
in a larger, higher-scoring one has a low IoU with it, so NMS keeps it).

On the CPU each box is compared only with the kept boxes that could exceed the threshold (a grid
of kept-box centres), so sparse overlaps cost far less than torchvision's O(n * kept) loop. On
the GPU a tiled suppression bitmask is reduced on the device; the kept count is the only sync.

Differences from torchvision.ops: ties in score keep the lower index first (a stable sort);
batched_nms keeps classes apart for any coordinates (torchvision's offset trick mixes classes
when coordinates are negative); NaN or inf in boxes or scores raise ValueError.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import _arrays as arrays

try:  # decides a data-dependent size as False while torch.compile traces (torch >= 2.7)
    from torch.fx.experimental.symbolic_shapes import guard_or_false as _guard_or_false
except ImportError:  # pragma: no cover
    _guard_or_false = bool


def _kept(kernel, what, boxes, scores, idx_args, iou_threshold, check=arrays.check_coordinates):
    """Indices kept by NMS kernel `kernel` (idx_args: its category pointer, if it takes one),
    with the workspace `what`_workspace_bytes and errors naming `what`."""
    n = boxes.shape[0]
    check(boxes, "boxes")
    arrays.check_finite(scores, "scores")
    keep = arrays.empty(boxes, (n,), np.int64)
    if n == 0:
        return keep
    ws_args, _ws = arrays.workspace(boxes, f"{what}_workspace_bytes", n)
    count = arrays.launch(
        boxes,
        kernel,
        arrays.dtype_code(boxes),
        arrays.ptr(boxes),
        arrays.ptr(scores),
        *idx_args,
        n,
        iou_threshold,
        arrays.ptr(keep),
        *ws_args,
    )
    if count < 0:
        raise arrays.status_error(count, what)
    out = keep[:count]
    return out.clone() if isinstance(out, Tensor) else out.copy()


def _nms(boxes, scores, iou_threshold: float):
    return _kept("nms", "nms", boxes, scores, (), iou_threshold)


def _batched(boxes, scores, idxs, iou_threshold: float):
    return _kept("batched_nms", "batched_nms", boxes, scores, (arrays.ptr(idxs),), iou_threshold)


def _custom_ops(name: str, single, batched):
    """The ops fastdet::<name> and fastdet::batched_<name> over single(boxes, scores, t) and
    batched(boxes, scores, idxs, t): kept indices, a data-dependent count."""

    @torch.library.custom_op(f"fastdet::{name}", mutates_args=())
    def single_op(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        return single(boxes.contiguous(), scores.contiguous(), iou_threshold)

    @torch.library.custom_op(f"fastdet::batched_{name}", mutates_args=())
    def batched_op(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
        return batched(boxes.contiguous(), scores.contiguous(), idxs.contiguous(), iou_threshold)

    single_op.register_fake(lambda boxes, scores, iou_threshold: arrays.fake_indices(boxes))
    batched_op.register_fake(lambda boxes, scores, idxs, iou_threshold: arrays.fake_indices(boxes))
    return single_op, batched_op


_nms_op, _batched_op = _custom_ops("nms", _nms, _batched)


def _contained(boxes, scores, idxs, fraction: float):
    return _kept(
        "suppress_contained", "suppress_contained", boxes, scores, (arrays.ptr(idxs),), fraction
    )


@torch.library.custom_op("fastdet::suppress_contained", mutates_args=())
def _contained_op(boxes: Tensor, scores: Tensor, idxs: Tensor, fraction: float) -> Tensor:
    return _contained(boxes.contiguous(), scores.contiguous(), idxs.contiguous(), fraction)


_contained_op.register_fake(lambda boxes, scores, idxs, fraction: arrays.fake_indices(boxes))


def nms(boxes, scores, iou_threshold: float):
    """Greedy NMS. boxes [N, 4] (x1, y1, x2, y2), scores [N] -> int64 indices [K] of the kept
    boxes in decreasing score. A box is dropped when its IoU with a kept, higher-scoring box is
    > iou_threshold."""
    t = arrays.check_threshold(iou_threshold)
    b, s = arrays.prepare_boxes_scores(boxes, scores)
    if isinstance(b, Tensor) and not arrays.eager(b, s):
        return _nms_op(b, s, t)
    return _nms(b, s, t)  # numpy, cupy, or the eager fast path (the op's own function)


def _prepare_idxs(idxs, n):
    if isinstance(idxs, Tensor):
        if idxs.dtype.is_floating_point or idxs.dtype.is_complex or idxs.dtype == torch.bool:
            raise TypeError(f"idxs must be an integer tensor, got {idxs.dtype}")
    elif np.dtype(idxs.dtype).kind not in "iu":
        raise TypeError(f"idxs must be an integer array, got {idxs.dtype}")
    if idxs.ndim != 1 or idxs.shape[0] != n:
        raise arrays.ShapeError(
            f"idxs must have shape [N] with N = {n} (boxes), got {tuple(idxs.shape)}"
        )
    return arrays.prepare(idxs, torch.int64 if isinstance(idxs, Tensor) else np.int64)


def batched_nms(boxes, scores, idxs, iou_threshold: float):
    """NMS within each category: boxes [N, 4], scores [N], idxs [N] integer categories ->
    int64 indices [K] of the kept boxes in decreasing score. Boxes of different categories never
    suppress each other, whatever their coordinates. No boxes: an empty result at once, the other
    arguments unread (as torchvision)."""
    arrays.kind(boxes, "boxes")
    if _guard_or_false(arrays.numel(boxes) == 0):  # a size unknown while tracing: the kernel's way
        return arrays.empty(boxes, (0,), np.int64)
    t = arrays.check_threshold(iou_threshold)
    b, s = arrays.prepare_boxes_scores(boxes, scores, idxs=idxs)
    i = _prepare_idxs(idxs, b.shape[0])
    if isinstance(b, Tensor) and not arrays.eager(b, s, i):
        return _batched_op(b, s, i, t)
    return _batched(b, s, i, t)  # numpy, cupy, or the eager fast path


def _one_category(boxes):
    """idxs of zeros for boxes' rows (their kind and device)."""
    idxs = arrays.empty(boxes, (boxes.shape[0] if boxes.ndim else 0,), np.int64)
    return idxs.zero_() if isinstance(idxs, Tensor) else (idxs.fill(0) or idxs)


def suppress_contained(boxes, scores, idxs, fraction: float):
    """Containment suppression: boxes [N, 4] (x1, y1, x2, y2), scores [N], idxs [N] integer
    categories (None: one category) -> int64 indices [K] of the kept boxes in decreasing score.

    Greedy like batched_nms: a box is dropped when more than `fraction` (in [0, 1]) of its own
    area lies inside a kept, higher-scoring box of its category; equal scores go to the lower
    index. fraction 1 keeps every box; a zero-area box is never dropped (it has no area to be
    covered) and covers nothing. Run it after NMS: it removes the boxes nested in larger ones
    that NMS keeps because their IoU with the larger box is low."""
    arrays.kind(boxes, "boxes")
    f = arrays.check_threshold(fraction, "fraction")
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    if idxs is None:
        idxs = _one_category(boxes)
    b, s = arrays.prepare_boxes_scores(boxes, scores, idxs=idxs)
    i = _prepare_idxs(idxs, b.shape[0])
    if isinstance(b, Tensor) and not arrays.eager(b, s, i):
        return _contained_op(b, s, i, f)
    return _contained(b, s, i, f)  # numpy, cupy, or the eager fast path
