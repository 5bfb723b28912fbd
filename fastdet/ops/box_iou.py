"""box_area and the pairwise IoU family: box_iou, generalized_box_iou, distance_box_iou,
complete_box_iou, as torchvision.ops. Fused C++/CUDA kernels.

Boxes are [..., N, 4] and [..., M, 4] (x1, y1, x2, y2; box_iou and box_area also take
fmt="xywh" or "cxcywh"); leading dimensions broadcast, as torchvision's, giving [..., N, M].
dtypes: float16/bfloat16 (computed in float32), float32, float64, and integer boxes (computed in
float64; IoUs come back float32 and areas int32 / int64, torchvision's dtypes). Torch tensors,
numpy or cupy arrays, with the output of the same kind and device.

Differences from torchvision.ops: a zero-area or inverted box (x2 < x1 or y2 < y1) has area 0
and IoU 0 with every box (torchvision gives NaN for two empty boxes, and treats an inverted box's
signed area as real); GIoU of two empty boxes is 0 (or -1 when their hull has area); CIoU's
aspect term treats an inverted side as 0 and a zero height as an angle of pi/2 (torchvision:
NaN). float16/bfloat16 boxes give IoUs of their dtype (torchvision: float32). NaN or inf
coordinates raise ValueError on the CPU; on the GPU they propagate (a check would cost a sync).
eps (DIoU, CIoU) must be finite and >= 0. Integer areas beyond their dtype raise on the CPU
(torchvision's wrap around).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from . import _arrays as arrays
from .box_convert import format_error, to_xyxy

_KIND = {
    "box_iou": arrays._C.IouKind.iou,
    "generalized_box_iou": arrays._C.IouKind.generalized,
    "distance_box_iou": arrays._C.IouKind.distance,
    "complete_box_iou": arrays._C.IouKind.complete,
}
_HALVES = (torch.float16, torch.bfloat16)


def _dtypes(a, b):
    """(compute dtype, result dtype) of a pairwise op: float64 when either input is float64
    (result float64) or integer (result float32, as torchvision); else float32, with the inputs'
    dtype as the result when they agree."""
    if isinstance(a, Tensor):
        f64, f32 = torch.float64, torch.float32
        da, db = a.dtype, b.dtype
    else:
        f64, f32 = np.dtype(np.float64), np.dtype(np.float32)
        da, db = arrays.native_dtype(a.dtype), arrays.native_dtype(b.dtype)
    if f64 in (da, db):
        return f64, f64
    if arrays.is_int(a) or arrays.is_int(b):
        return f64, f32
    return f32, da if da == db else f32


def _pairwise(name: str, a, b, eps: float = 0.0):
    """The kernel on [..., N, 4] and [..., M, 4] boxes with equal leading dimensions."""
    if tuple(a.shape[:-2]) != tuple(b.shape[:-2]):
        raise arrays.ShapeError(
            f"{name}: boxes1 {tuple(a.shape)} and boxes2 {tuple(b.shape)} must have the same "
            "leading dimensions"
        )
    compute, result = _dtypes(a, b)
    a, b = arrays.prepare(a, compute), arrays.prepare(b, compute)
    arrays.check_coordinates(a, "boxes1")
    arrays.check_coordinates(b, "boxes2")
    lead, n, m = tuple(a.shape[:-2]), a.shape[-2], b.shape[-2]
    arrays.check_output_size(name, lead + (n, m), a)
    batch = math.prod(lead)  # (np.prod: ~2 us a call)
    out = arrays.empty(a, lead + (n, m))
    if batch and n and m:
        arrays.launch(
            a,
            "pairwise_iou",
            _KIND[name],
            arrays.dtype_code(a),
            arrays.ptr(a),
            arrays.ptr(b),
            batch,
            n,
            m,
            float(eps),
            arrays.ptr(out),
        )
    if out.dtype != result:
        out = out.to(result) if isinstance(out, Tensor) else out.astype(result)
    return out


@torch.library.custom_op("fastdet::box_iou", mutates_args=())
def _box_iou_op(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return _pairwise("box_iou", boxes1, boxes2)


@torch.library.custom_op("fastdet::generalized_box_iou", mutates_args=())
def _giou_op(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return _pairwise("generalized_box_iou", boxes1, boxes2)


@torch.library.custom_op("fastdet::distance_box_iou", mutates_args=())
def _diou_op(boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    return _pairwise("distance_box_iou", boxes1, boxes2, eps)


@torch.library.custom_op("fastdet::complete_box_iou", mutates_args=())
def _ciou_op(boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    return _pairwise("complete_box_iou", boxes1, boxes2, eps)


@_box_iou_op.register_fake
@_giou_op.register_fake
def _(boxes1, boxes2):
    return boxes1.new_empty(
        boxes1.shape[:-1] + (boxes2.shape[-2],), dtype=_dtypes(boxes1, boxes2)[1]
    )


@_diou_op.register_fake
@_ciou_op.register_fake
def _(boxes1, boxes2, eps):
    return boxes1.new_empty(
        boxes1.shape[:-1] + (boxes2.shape[-2],), dtype=_dtypes(boxes1, boxes2)[1]
    )


_OPS = {
    "box_iou": _box_iou_op,
    "generalized_box_iou": _giou_op,
    "distance_box_iou": _diou_op,
    "complete_box_iou": _ciou_op,
}


def _check_pairwise_boxes(x, name: str) -> None:
    arrays.check_float_or_int(x, name)
    if x.ndim < 2 or x.shape[-1] != 4:
        raise arrays.ShapeError(f"{name} must have shape [..., N, 4], got {tuple(x.shape)}")


def _broadcast(a, b):
    """a and b with their leading dimensions (all but the last two) broadcast together."""
    la, lb = tuple(a.shape[:-2]), tuple(b.shape[:-2])
    if la == lb:
        return a, b
    try:
        lead = tuple(np.broadcast_shapes(la, lb))
    except ValueError:
        raise arrays.ShapeError(
            f"boxes1 {tuple(a.shape)} and boxes2 {tuple(b.shape)}: leading dimensions do not "
            "broadcast"
        ) from None

    def to(x):
        shape = lead + tuple(x.shape[-2:])
        if isinstance(x, Tensor):
            return x.expand(shape)
        mod = np if isinstance(x, np.ndarray) else arrays._cupy()
        return mod.broadcast_to(x, shape)

    return to(a), to(b)


def _family(name: str, boxes1, boxes2, *eps):
    arrays.same_kind(boxes1=boxes1, boxes2=boxes2)
    _check_pairwise_boxes(boxes1, "boxes1")
    _check_pairwise_boxes(boxes2, "boxes2")
    eps = tuple(arrays.check_real(e, "eps", finite=True, minimum=0) for e in eps)
    a, b = _broadcast(boxes1, boxes2)
    if isinstance(a, Tensor) and not arrays.eager(a, b):
        return _OPS[name](a, b, *eps)
    return _pairwise(name, a, b, *eps)  # numpy, cupy, or the eager fast path


def _iou_in(fmt):
    if fmt == "xyxy":
        return lambda boxes1, boxes2: _family("box_iou", boxes1, boxes2)

    def iou(boxes1, boxes2):
        arrays.same_kind(boxes1=boxes1, boxes2=boxes2)
        _check_pairwise_boxes(boxes1, "boxes1")
        _check_pairwise_boxes(boxes2, "boxes2")
        return _family("box_iou", to_xyxy(boxes1, fmt, "boxes1"), to_xyxy(boxes2, fmt, "boxes2"))

    return iou


# fmt -> box_iou of boxes in that format. fastdet.ops.rotated adds the rotated formats.
IOU_BY_FORMAT = {fmt: _iou_in(fmt) for fmt in ("xyxy", "xywh", "cxcywh")}


def box_iou(boxes1, boxes2, fmt: str = "xyxy"):
    """IoU of every pair: [..., N, 4] and [..., M, 4] boxes -> [..., N, M]. Empty boxes give 0,
    not NaN. fmt: "xyxy" (default), "xywh" or "cxcywh"."""
    fn = IOU_BY_FORMAT.get(fmt) if isinstance(fmt, str) else None
    if fn is None:
        raise format_error(fmt, "box_iou", IOU_BY_FORMAT)
    return fn(boxes1, boxes2)


def generalized_box_iou(boxes1, boxes2):
    """Generalized IoU (Rezatofighi et al., 2019) of every pair: [..., N, 4], [..., M, 4] ->
    [..., N, M]."""
    return _family("generalized_box_iou", boxes1, boxes2)


def distance_box_iou(boxes1, boxes2, eps: float = 1e-7):
    """Distance IoU (Zheng et al., 2020) of every pair: IoU - d^2 / (c^2 + eps), d the distance
    of the centres and c the diagonal of the enclosing box; [..., N, 4], [..., M, 4] ->
    [..., N, M]."""
    return _family("distance_box_iou", boxes1, boxes2, eps)


def complete_box_iou(boxes1, boxes2, eps: float = 1e-7):
    """Complete IoU (Zheng et al., 2020) of every pair: DIoU - alpha v, with v the aspect-ratio
    term 4 / pi^2 (atan(w1 / h1) - atan(w2 / h2))^2 and alpha = v / (1 - IoU + v + eps)."""
    return _family("complete_box_iou", boxes1, boxes2, eps)


def _check_int_area(b, wh: bool) -> None:
    """Integer areas beyond their dtype (int32, or int64 for int64 boxes) raise ValueError
    (torchvision's wrap around). On the CPU: on the GPU a check would cost a host sync."""
    if arrays.is_cuda(b) or arrays.numel(b) == 0 or arrays.is_fake(b):
        return
    if torch.compiler.is_compiling():  # no data to check while tracing
        return
    t = arrays.to_torch(b).to(torch.float64)  # exact below 2^53: decides int32 exactly
    w = t[..., 2] if wh else t[..., 2] - t[..., 0]
    h = t[..., 3] if wh else t[..., 3] - t[..., 1]
    big = float((w.clamp(min=0) * h.clamp(min=0)).max())
    dt = "int64" if arrays.native_dtype(b.dtype) in (torch.int64, np.int64) else "int32"
    if big >= (2.0**63 if dt == "int64" else 2.0**31):
        raise ValueError(
            f"boxes has an area of {big:.4g}, beyond {dt}, the dtype of integer boxes' areas "
            "(torchvision's; its areas wrap around); pass int64 or float boxes"
        )


def _int_area(b, wh: bool):
    """Areas of integer boxes in torchvision's dtype (int32, or int64 for int64 boxes); inverted
    sides count as 0. An area beyond that dtype raises on the CPU."""
    _check_int_area(b, wh)
    if isinstance(b, Tensor):
        up = b if b.dtype in (torch.int32, torch.int64) else b.to(torch.int32)
        w = up[..., 2] if wh else up[..., 2] - up[..., 0]
        h = up[..., 3] if wh else up[..., 3] - up[..., 1]
        return w.clamp(min=0) * h.clamp(min=0)
    mod = np if isinstance(b, np.ndarray) else arrays._cupy()
    up = b if np.dtype(b.dtype) in (np.int32, np.int64) else b.astype(np.int32)
    w = up[..., 2] if wh else up[..., 2] - up[..., 0]
    h = up[..., 3] if wh else up[..., 3] - up[..., 1]
    return mod.maximum(w, 0) * mod.maximum(h, 0)


def _area(b):
    """Areas of [..., 4] xyxy boxes of any accepted dtype."""
    if arrays.is_int(b):
        return _int_area(b, wh=False)
    flat = arrays.prepare(b, arrays.compute_dtype(b))
    arrays.check_finite(flat, "boxes")
    n = arrays.numel(flat) // 4
    out = arrays.empty(flat, tuple(b.shape[:-1]))
    if n:
        arrays.launch(
            flat, "box_area", arrays.dtype_code(flat), arrays.ptr(flat), n, arrays.ptr(out)
        )
    return arrays.cast(out, b)


def _area_dtype(boxes):
    if boxes.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        return torch.int32
    return boxes.dtype


@torch.library.custom_op("fastdet::box_area", mutates_args=())
def _box_area_op(boxes: Tensor) -> Tensor:
    return _area(boxes)


@_box_area_op.register_fake
def _(boxes):
    return boxes.new_empty(boxes.shape[:-1], dtype=_area_dtype(boxes))


def _area_xyxy(boxes):
    if isinstance(boxes, Tensor) and not arrays.eager(boxes):
        return _box_area_op(boxes)
    return _area(boxes)  # numpy, cupy, or the eager fast path


def _area_wh(boxes):
    """w * h of "xywh" / "cxcywh" boxes, sides below 0 counting as 0."""
    if arrays.is_int(boxes):
        return _int_area(boxes, wh=True)
    if not arrays.is_cuda(boxes):
        arrays.check_finite(arrays.prepare(boxes, arrays.compute_dtype(boxes)), "boxes")

    def area(b):
        up = b.to(torch.float32) if b.dtype in _HALVES else b
        return (up[..., 2].clamp(min=0) * up[..., 3].clamp(min=0)).to(b.dtype)

    return arrays.via_torch(area, boxes)


# fmt -> box_area of boxes in that format. fastdet.ops.rotated may add the rotated formats.
AREA_BY_FORMAT = {"xyxy": _area_xyxy, "xywh": _area_wh, "cxcywh": _area_wh}


def box_area(boxes, fmt: str = "xyxy"):
    """Area of each [..., 4] box -> [...]; inverted boxes have area 0 (torchvision: negative).
    fmt: "xyxy" (default), "xywh" or "cxcywh"."""
    fn = AREA_BY_FORMAT.get(fmt) if isinstance(fmt, str) else None
    if fn is None:
        raise format_error(fmt, "box_area", AREA_BY_FORMAT)
    arrays.kind(boxes, "boxes")
    arrays.check_float_or_int(boxes, "boxes")
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise arrays.ShapeError(f"boxes must have shape [..., 4], got {tuple(boxes.shape)}")
    return fn(boxes)
