"""paste_masks and masks_to_labels: Mask R-CNN's mask probabilities pasted into the image.

The rules are torchvision's `paste_masks_in_image` (torchvision.models.detection.roi_heads): each
M x M mask is padded by `padding` zeros and its box scaled about its centre by (M + 2 padding) / M
(in the boxes' dtype); the box corners are truncated toward zero to integers x0, y0, x2, y2, the
padded mask is resized with bilinear interpolation (align_corners=False, F.interpolate's index
and weight rules, edge clamping included) to max(x2 - x0 + 1, 1) columns by max(y2 - y0 + 1, 1)
rows, and pasted at (x0, y0), clipped to the image. Only each box's footprint is computed: no
full-box resize, no full-image plane per mask before the output.

Differences from torchvision:
- masks are [K, M, M] ([K, 1, M, M], torchvision's layout, is accepted and squeezed); the output
  is [K, H, W] (torchvision: [K, 1, H, W]).
- a box wholly outside the image gives an all-zero mask (torchvision raises a shape error, or
  for some boxes just left of or above the image pastes nothing).
- the probabilities equal torchvision's to a few float ulps (1e-5 is tested), not bit for bit:
  torch's CPU resize picks different kernels (and FMA contraction) by size and CPU. A binary
  mask can therefore differ from `torchvision_probs > threshold` only where the probability is
  within rounding of the threshold.
- float16/bfloat16 masks and boxes are computed in float32 (torchvision: in their own dtype).
- no autograd: the output is detached (torchvision's pasting is differentiable; nothing in
  Mask R-CNN back-propagates through it).
- corners beyond +-2^61 pixels are clamped before truncation (torchvision cannot allocate the
  resize such a box needs).
- NaN or inf in masks, boxes or scores raise ValueError on the CPU (on the GPU they are not
  checked: that would cost a host sync).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import _arrays as arrays

_INT32_MAX = 2**31 - 1


def _image_shape(image_shape) -> tuple[int, int]:
    if (
        isinstance(image_shape, (str, bytes))
        or not hasattr(image_shape, "__len__")
        or len(image_shape) != 2
    ):
        raise ValueError(f"image_shape must be (height, width), got {image_shape!r}")
    h, w = (
        arrays.check_int(v, f"image_shape[{i}]", minimum=0, maximum=_INT32_MAX)
        for i, v in enumerate(image_shape)
    )
    return h, w


def _check_threshold(threshold, name: str = "threshold") -> float:
    t = arrays.check_real(threshold, name)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {t}")
    return t


def _check_masks(masks):
    """masks [K, M, M] or [K, 1, M, M] of a float dtype -> [K, M, M] (a view)."""
    arrays.check_float(masks, "masks")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise arrays.ShapeError(
            f"masks must have shape [K, M, M] or [K, 1, M, M] (square masks), "
            f"got {tuple(masks.shape)}"
        )
    if masks.shape[1] == 0 and masks.shape[0] > 0:  # the static size first: traceable
        raise ValueError(f"masks must be at least 1 x 1, got {tuple(masks.shape)}")
    if masks.shape[0] >= _INT32_MAX:
        raise ValueError(f"masks: at most {_INT32_MAX - 1} masks, got {masks.shape[0]}")
    return masks


def _check_boxes(boxes, k: int) -> None:
    arrays.check_float(boxes, "boxes")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != k:
        raise arrays.ShapeError(
            f"boxes must have shape [K, 4] with K = {k} (masks), got {tuple(boxes.shape)}"
        )


def _padding(padding) -> int:
    # 2^20: padding only widens each box; more would only allocate enormous scratch
    return arrays.check_int(padding, "padding", minimum=0, maximum=2**20)


def _computed(x):
    """x (None passes) in its compute dtype, contiguous: what the kernels take."""
    return None if x is None else arrays.prepare(x, arrays.compute_dtype(x))


# ---- kernels (arrays already of their compute dtype, contiguous) ------------------------------


def _paste(m, b, height: int, width: int, padding: int, threshold):
    K = m.shape[0]
    arrays.check_finite(m, "masks")
    arrays.check_finite(b, "boxes")
    shape = (K, height, width)
    if threshold is None:
        arrays.check_output_size("paste_masks", shape, m)
        out = arrays.empty(m, shape)
    else:
        arrays.check_output_size("paste_masks", shape, np.empty(0, np.bool_))
        out = _empty_bool(m, shape)
    if K and height and width:
        tail = (padding, height, width, threshold, arrays.ptr(out))
        arrays.launch(m, "paste_masks", *_mask_args(m, b), *tail)
    return out


def _mask_args(m, b) -> tuple:
    """The kernels' leading arguments: masks m [K, M, M] in boxes b [K, 4], or, b None,
    full-size masks [K, H, W] (then M and the boxes' pointer are 0)."""
    codes = arrays.dtype_code(m), arrays.dtype_code(m if b is None else b)
    if b is None:
        return (*codes, arrays.ptr(m), m.shape[0], 0, 0)
    return (*codes, arrays.ptr(m), m.shape[0], m.shape[-1], arrays.ptr(b))


def _empty_bool(like, shape):
    if isinstance(like, Tensor):
        return torch.empty(shape, dtype=torch.bool, device=like.device)
    if isinstance(like, np.ndarray):
        return np.empty(shape, np.bool_)
    cp = arrays._cupy()
    with cp.cuda.Device(like.device.id):
        return cp.empty(shape, cp.bool_)


def _order(scores):
    """Indices of scores by decreasing score, ties lower index first (int64, scores' kind)."""
    t = arrays.to_torch(scores)
    if isinstance(scores, (Tensor, np.ndarray)):
        return torch.sort(t, descending=True, stable=True).indices
    # cupy: sort on cupy's current stream, where the kernel will run
    cp = arrays._cupy()
    with cp.cuda.Device(scores.device.id):
        stream = torch.cuda.ExternalStream(cp.cuda.get_current_stream().ptr, device=t.device)
        with torch.cuda.stream(stream):
            return torch.sort(t, descending=True, stable=True).indices


def _labels(m, b, s, height: int, width: int, threshold: float, padding: int):
    arrays.check_finite(m, "masks")
    arrays.check_finite(s, "scores")
    if b is not None:
        arrays.check_finite(b, "boxes")
    out = arrays.empty(m, (height, width), np.int32)
    order = _order(s)
    if height and width:
        tail = (padding, height, width, threshold, arrays.ptr(out))
        arrays.launch(m, "masks_to_labels", *_mask_args(m, b), order.data_ptr(), *tail)
    return out


# ---- torch custom ops ------------------------------------------------------------------------


@torch.library.custom_op("fastdet::paste_masks", mutates_args=())
def _paste_op(
    masks: Tensor,
    boxes: Tensor,
    height: int,
    width: int,
    padding: int,
    threshold: Optional[float],  # noqa: UP045 (torch.library parses the annotation)
) -> Tensor:
    # float16/bfloat16 are computed in float32 and rounded once, as the public function does.
    out = _paste(_computed(masks), _computed(boxes), height, width, padding, threshold)
    return out if threshold is not None else out.to(masks.dtype)


@_paste_op.register_fake
def _(masks, boxes, height, width, padding, threshold):
    dt = torch.bool if threshold is not None else masks.dtype
    return masks.new_empty((masks.shape[0], height, width), dtype=dt)


@torch.library.custom_op("fastdet::masks_to_labels", mutates_args=())
def _labels_op(
    masks: Tensor,
    boxes: Optional[Tensor],  # noqa: UP045
    scores: Tensor,
    height: int,
    width: int,
    threshold: float,
    padding: int,
) -> Tensor:
    m, b, s = _computed(masks), _computed(boxes), _computed(scores)
    return _labels(m, b, s, height, width, threshold, padding)


@_labels_op.register_fake
def _(masks, boxes, scores, height, width, threshold, padding):
    return masks.new_empty((height, width), dtype=torch.int32)


# ---- public ops ------------------------------------------------------------------------------


def paste_masks(masks, boxes, image_shape, padding: int = 1, threshold: float | None = None):
    """Mask probabilities pasted into the image, as torchvision's paste_masks_in_image.

    masks: [K, M, M] (or [K, 1, M, M]) float probabilities, one per box; boxes: [K, 4] float
    (x1, y1, x2, y2) in image pixels; image_shape: (H, W); padding: zeros added around each mask
    (the box grows by (M + 2 padding) / M about its centre), >= 0.

    Returns [K, H, W] of masks' dtype (float16/bfloat16 computed in float32), zero outside each
    box's footprint; with `threshold` in [0, 1], a bool mask prob > threshold (strictly greater,
    as `probs > 0.5` after torchvision). K = 0 gives [0, H, W]. torch (CPU/CUDA), numpy and cupy
    in; the same kind on the same device out. Not differentiable: the output is detached. See
    the module docstring for the rules and what differs from torchvision (a box wholly outside
    the image gives zeros, where torchvision raises).
    """
    arrays.same_kind(masks=masks, boxes=boxes)
    m = _check_masks(masks)
    _check_boxes(boxes, m.shape[0])
    height, width = _image_shape(image_shape)
    pad = _padding(padding)
    thr = None if threshold is None else _check_threshold(threshold)
    if isinstance(m, Tensor):
        return _paste_op(m.detach(), boxes.detach(), height, width, pad, thr)
    out = _paste(_computed(m), _computed(boxes), height, width, pad, thr)
    return out if thr is not None else arrays.cast(out, m)


def masks_to_labels(masks, boxes, scores, image_shape, threshold: float = 0.5, padding: int = 1):
    """One int32 instance label image [H, W] from K mask probabilities.

    masks: [K, M, M] (or [K, 1, M, M]) float probabilities pasted into `boxes` [K, 4] with
    paste_masks' rules (without materialising K full-size masks); or, with boxes=None,
    full-size [K, H, W] probabilities (image_shape must be (H, W)). scores: [K] float, finite.

    A pixel belongs to the masks whose probability is > threshold (in [0, 1]); of those, the one
    of highest score wins (ties: the lower index), and gets label k + 1 for input mask k; 0 is
    background. torch (CPU/CUDA), numpy and cupy in; an int32 array of the same kind out.
    Not differentiable.
    """
    kinds = {"masks": masks, "scores": scores}
    if boxes is not None:
        kinds["boxes"] = boxes
    arrays.same_kind(**kinds)
    height, width = _image_shape(image_shape)
    thr = _check_threshold(threshold)
    pad = _padding(padding)
    if boxes is None:
        arrays.check_float(masks, "masks")
        if masks.ndim != 3 or tuple(masks.shape[1:]) != (height, width):
            raise arrays.ShapeError(
                f"masks must have shape [K, {height}, {width}] (image_shape) when boxes is "
                f"None, got {tuple(masks.shape)}"
            )
        if masks.shape[0] >= _INT32_MAX:
            raise ValueError(f"masks: at most {_INT32_MAX - 1} masks, got {masks.shape[0]}")
        m = masks
    else:
        m = _check_masks(masks)
        _check_boxes(boxes, m.shape[0])
    arrays.check_float(scores, "scores")
    if scores.ndim != 1 or scores.shape[0] != m.shape[0]:
        raise arrays.ShapeError(
            f"scores must have shape [K] with K = {m.shape[0]} (masks), got {tuple(scores.shape)}"
        )
    if isinstance(m, Tensor):
        b = None if boxes is None else boxes.detach()
        return _labels_op(m.detach(), b, scores.detach(), height, width, thr, pad)
    return _labels(_computed(m), _computed(boxes), _computed(scores), height, width, thr, pad)
