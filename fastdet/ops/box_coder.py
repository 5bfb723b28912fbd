"""BoxCoder: torchvision's box parametrisation (Girshick et al.) with fused C++/CUDA kernels.

encode: (dx, dy, dw, dh) = (wx (gx - px) / pw, wy (gy - py) / ph, ww log(gw / pw), wh log(gh / ph))
of ground-truth boxes g against proposals/anchors p (centres and sizes); decode inverts it with
dw, dh clamped at bbox_xform_clip. The kernels have no autograd: Faster R-CNN encodes targets
and decodes detached deltas, as torchvision's models do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _arrays as arrays


def _encode(gt, proposals, weights):
    arrays.check_finite(gt, "reference_boxes")
    arrays.check_finite(proposals, "proposals")
    out = arrays.empty(gt, (gt.shape[0], 4))
    if gt.shape[0]:
        arrays.launch(
            gt,
            "encode_boxes",
            arrays.dtype_code(gt),
            arrays.ptr(gt),
            arrays.ptr(proposals),
            gt.shape[0],
            weights,
            arrays.ptr(out),
        )
    return out


def _decode(codes, boxes, weights, clip):
    arrays.check_finite(codes, "rel_codes")
    arrays.check_finite(boxes, "boxes")
    n, k = codes.shape[0], codes.shape[1] // 4
    out = arrays.empty(codes, tuple(codes.shape))
    if n and k:
        arrays.launch(
            codes,
            "decode_boxes",
            arrays.dtype_code(codes),
            arrays.ptr(codes),
            arrays.ptr(boxes),
            n,
            k,
            weights,
            clip,
            arrays.ptr(out),
        )
    return out


@torch.library.custom_op("fastdet::encode_boxes", mutates_args=())
def _encode_op(gt: Tensor, proposals: Tensor, weights: list[float]) -> Tensor:
    return _encode(gt.contiguous(), proposals.contiguous(), tuple(weights))


@_encode_op.register_fake
def _(gt, proposals, weights):
    return gt.new_empty((gt.shape[0], 4))


@torch.library.custom_op("fastdet::decode_boxes", mutates_args=())
def _decode_op(codes: Tensor, boxes: Tensor, weights: list[float], clip: float) -> Tensor:
    return _decode(codes.contiguous(), boxes.contiguous(), tuple(weights), clip)


@_decode_op.register_fake
def _(codes, boxes, weights, clip):
    return codes.new_empty(codes.shape)  # contiguous, as the kernel's output


def _run(op, kernel, a, b, weights, *clip):
    """op on a and b in their common compute dtype, or its kernel function directly (numpy,
    cupy, or the eager fast path); the op takes the weights as a list (its schema's float[])."""
    dt = arrays.compute_dtype(a, b)
    x, y = arrays.prepare(a, dt), arrays.prepare(b, dt)
    if isinstance(x, Tensor) and not arrays.eager(x, y):
        return op(x, y, list(weights), *clip)
    return kernel(x, y, weights, *clip)


class BoxCoder:
    """torchvision.models.detection._utils.BoxCoder with fused kernels; same arguments."""

    def __init__(
        self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip: float = math.log(1000.0 / 16)
    ):
        if (
            isinstance(weights, (str, bytes))
            or not hasattr(weights, "__len__")
            or len(weights) != 4
        ):
            raise ValueError(f"weights must be 4 finite non-zero numbers, got {weights!r}")
        weights = tuple(arrays.check_real(w, "weights", allow_nan=True) for w in weights)
        if not all(math.isfinite(w) and w != 0 for w in weights):
            raise ValueError(f"weights must be 4 finite non-zero numbers, got {weights}")
        self.weights = weights
        self.bbox_xform_clip = arrays.check_real(bbox_xform_clip, "bbox_xform_clip")

    def encode_single(self, reference_boxes, proposals):
        """Regression targets [N, 4] of reference (ground-truth) boxes [N, 4] w.r.t. proposals
        [N, 4]."""
        arrays.same_kind(reference_boxes=reference_boxes, proposals=proposals)
        arrays.check_boxes(reference_boxes, "reference_boxes")
        arrays.check_boxes(proposals, "proposals")
        if reference_boxes.shape[0] != proposals.shape[0]:
            raise ValueError(
                f"reference_boxes has {reference_boxes.shape[0]} boxes but proposals "
                f"has {proposals.shape[0]}; expected one per proposal"
            )
        out = _run(_encode_op, _encode, reference_boxes, proposals, self.weights)
        return (
            arrays.cast(out, reference_boxes)
            if arrays.same_dtype(reference_boxes, proposals)
            else out
        )

    def decode_single(self, rel_codes, boxes):
        """Boxes [N, 4k] from codes [N, 4k] applied to boxes [N, 4] (k classes per box)."""
        arrays.same_kind(rel_codes=rel_codes, boxes=boxes)
        arrays.check_float(rel_codes, "rel_codes")
        arrays.check_boxes(boxes, "boxes")
        if rel_codes.ndim != 2 or rel_codes.shape[1] % 4 or rel_codes.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"rel_codes must have shape [N, 4k] with N = {boxes.shape[0]} (boxes), "
                f"got {tuple(rel_codes.shape)}"
            )
        # Both decide (float64 boxes are not squeezed into float32 codes' range, where 1e39
        # would read as inf); the output takes rel_codes' dtype, as torchvision's.
        out = _run(_decode_op, _decode, rel_codes, boxes, self.weights, self.bbox_xform_clip)
        return arrays.cast(out, rel_codes)

    def encode(self, reference_boxes: list, proposals: list):
        """Per-image lists of [Ni, 4] boxes -> a tuple of per-image [Ni, 4] targets."""
        ref, prop = _cat(reference_boxes, "reference_boxes"), _cat(proposals, "proposals")
        sizes = [len(b) for b in reference_boxes]
        targets = self.encode_single(ref, prop)
        return tuple(_split(targets, sizes))

    def decode(self, rel_codes, boxes: list):
        """Codes [sum Ni, 4k] against per-image boxes -> [sum Ni, k, 4], as torchvision."""
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(f"boxes must be a list of [Ni, 4] arrays, got {type(boxes).__name__}")
        concat = _cat(boxes, "boxes")
        box_sum = concat.shape[0]
        arrays.kind(rel_codes, "rel_codes")
        if box_sum > 0:
            if arrays.numel(rel_codes) % (4 * box_sum):
                raise ValueError(
                    f"rel_codes must hold 4k codes per box for {box_sum} boxes, "
                    f"got shape {tuple(rel_codes.shape)}"
                )
            rel_codes = rel_codes.reshape(box_sum, -1)
        pred = self.decode_single(rel_codes, concat)
        return pred.reshape(box_sum, -1, 4) if box_sum > 0 else pred


def _cat(xs, name):
    if not isinstance(xs, (list, tuple)) or not xs:
        raise TypeError(f"{name} must be a non-empty list of [Ni, 4] arrays, got {xs!r:.60}")
    for i, x in enumerate(xs):
        arrays.kind(x, f"{name}[{i}]")
    if isinstance(xs[0], Tensor):
        return torch.cat(list(xs), 0)
    mod = arrays.np if arrays.kind(xs[0], "boxes") == "numpy" else arrays._cupy()
    return mod.concatenate(list(xs), 0)


def _split(x, sizes):
    if isinstance(x, Tensor):
        return x.split(sizes, 0)
    bounds = arrays.np.cumsum(sizes)[:-1]
    mod = arrays.np if arrays.kind(x, "x") == "numpy" else arrays._cupy()
    return mod.split(x, bounds, 0)
