"""clip_boxes_to_image, remove_small_boxes and masks_to_boxes, as torchvision.ops, on
torch/numpy/cupy."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import _arrays as arrays


def _clip(b, h: float, w: float):
    arrays.check_finite(b, "boxes")
    out = arrays.empty(b, tuple(b.shape))
    n = arrays.numel(b) // 4
    if n:
        arrays.launch(
            b, "clip_boxes", arrays.dtype_code(b), arrays.ptr(b), n, h, w, arrays.ptr(out)
        )
    return out


@torch.library.custom_op("fastdet::clip_boxes_to_image", mutates_args=())
def _clip_op(boxes: Tensor, height: float, width: float) -> Tensor:
    return _clip(boxes.contiguous(), height, width)


@_clip_op.register_fake
def _(boxes, height, width):
    return boxes.new_empty(boxes.shape)  # contiguous, as the kernel's output


def clip_boxes_to_image(boxes, size):
    """Clip [..., 4] boxes to an image of size (height, width): x in [0, width], y in
    [0, height]."""
    arrays.kind(boxes, "boxes")
    arrays.check_float(boxes, "boxes")
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise arrays.ShapeError(f"boxes must have shape [..., 4], got {tuple(boxes.shape)}")
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    # >= 0: clamping to [0, negative] has no meaning (and std::clamp requires lo <= hi).
    h, w = (arrays.check_real(v, n, minimum=0) for v, n in zip(size, ("size[0]", "size[1]")))
    b = arrays.prepare(boxes, arrays.compute_dtype(boxes))
    if isinstance(b, Tensor) and not arrays.eager(b):
        out = _clip_op(b, h, w)
    else:  # numpy, cupy, or the eager fast path (b is contiguous, as the op makes it)
        out = _clip(b, h, w)
    return arrays.cast(out, boxes)


def _small(b, min_size: float):
    arrays.check_finite(b, "boxes")
    if arrays.is_cuda(
        b
    ):  # a data-dependent count: the framework's nonzero (one sync, as torchvision)
        ws, hs = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        mask = (ws >= min_size) & (hs >= min_size)
        idx = mask.nonzero()[:, 0] if isinstance(b, Tensor) else mask.nonzero()[0]
        return idx.to(torch.int64) if isinstance(b, Tensor) else idx.astype(np.int64)
    keep = arrays.empty(b, (b.shape[0],), np.int64)
    count = arrays.launch(
        b,
        "remove_small_boxes",
        arrays.dtype_code(b),
        arrays.ptr(b),
        b.shape[0],
        min_size,
        arrays.ptr(keep),
    )
    return keep[:count].clone() if isinstance(keep, Tensor) else keep[:count].copy()


@torch.library.custom_op("fastdet::remove_small_boxes", mutates_args=())
def _small_op(boxes: Tensor, min_size: float) -> Tensor:
    return _small(boxes.contiguous(), min_size)


@_small_op.register_fake
def _(boxes, min_size):
    return arrays.fake_indices(boxes)


def remove_small_boxes(boxes, min_size: float):
    """Indices (int64, increasing) of the [N, 4] boxes whose width and height are >= min_size."""
    arrays.kind(boxes, "boxes")
    arrays.check_boxes(boxes, "boxes")
    b = arrays.prepare(boxes, arrays.compute_dtype(boxes))
    m = arrays.check_real(min_size, "min_size")
    if isinstance(b, Tensor) and not arrays.eager(b):
        return _small_op(b, m)
    return _small(b, m)  # numpy, cupy, or the eager fast path (b is contiguous)


def _first_last(hit: Tensor):
    """Index of the first and of the last True along the last dimension (0 where none is)."""
    idx = torch.arange(hit.shape[-1], device=hit.device)
    first = torch.where(hit, idx, hit.shape[-1]).amin(-1)
    last = torch.where(hit, idx, -1).amax(-1)
    return first, last


def _masks_to_boxes(masks: Tensor) -> Tensor:
    n, h, w = masks.shape
    if n == 0 or h == 0 or w == 0:
        return torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    hit = masks != 0  # NaN counts as set, as in torchvision's masks.bool()
    rows, cols = hit.any(2), hit.any(1)
    y1, y2 = _first_last(rows)
    x1, x2 = _first_last(cols)
    boxes = torch.stack([x1, y1, x2, y2], 1).to(torch.float32)
    return torch.where(rows.any(1, keepdim=True), boxes, 0.0)  # an empty mask: [0, 0, 0, 0]


def masks_to_boxes(masks):
    """Boxes [N, 4] (x1, y1, x2, y2, float32, inclusive pixel indices) enclosing the non-zero
    pixels of each mask of masks [N, H, W] (any dtype); an empty mask gives [0, 0, 0, 0]. A
    single row or column gives x1 = x2 or y1 = y2. With H or W = 0: N boxes of zeros
    (torchvision: no boxes)."""
    arrays.kind(masks, "masks")
    if masks.ndim != 3:
        raise arrays.ShapeError(f"masks must have shape [N, H, W], got {tuple(masks.shape)}")
    return arrays.via_torch(_masks_to_boxes, masks)
