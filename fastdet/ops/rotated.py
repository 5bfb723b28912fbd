"""Rotated boxes: box_iou_rotated, nms_rotated, batched_nms_rotated, rotated_to_cxcywhr.

Boxes are [N, 5] (cx, cy, w, h, angle): centre, width and height along the box's own axes, the
angle in DEGREES, positive counter-clockwise as seen on an image whose y axis points down. The
box point at local offset (u, v) is (cx + u cos a + v sin a, cy - u sin a + v cos a): at 90
degrees the box's width runs up the image. This is torchvision 0.29's ``fmt="cxcywhr"`` (its
box_iou and box_convert) and detectron2's RotatedBoxes / pairwise_iou_rotated / nms_rotated, so
their boxes pass unchanged. mmcv's box_iou_rotated takes radians and, by default
(clockwise=True), the opposite sign: an mmcv angle t is -t * 180 / pi here. Where this fastdet's
box_iou and box_convert take fmt=, the rotated formats are registered there (end of module).

The intersection of two boxes is exact polygon clipping (one box clipped against the other's
four sides, in that box's frame), written once in csrc/include/fastdet/rotated.h for the CPU
and the GPU, which give the same bits. float16/bfloat16 are computed in float32.

Differences from torchvision and detectron2: a box with w <= 0 or h <= 0 has area 0 and IoU 0
with every box (theirs use w * h, so two negative sides make a positive area). Their vertex
tests carry a 1e-5 tolerance and their hull a 1e-6 one, which now and then drops a vertex (seen:
0.0036 where the exact IoU is 0.0161); otherwise values agree to the last float32 digits
(identical boxes and multiples of 90 degrees are exact here). NaN or inf raise ValueError on the
CPU and in the GPU NMS; the GPU box_iou_rotated does not check (a sync), and gives some value in
[0, 1] for such boxes. NMS ties in score keep the lower index first.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import torch
from torch import Tensor

from . import _arrays as arrays
from .nms import _custom_ops, _kept, _prepare_idxs

FORMATS = ("cxcywhr", "xywhr", "xyxyxyxy")


def _check_rboxes(x, name: str, k: int = 5) -> None:
    arrays.check_float(x, name)
    arrays.check_shape(x, name, k, what=f"[N, {k}]")


# --- format conversion --------------------------------------------------------------------


def _math(x):
    """(cos, sin, atan2, hypot, stack) for x's kind."""
    if isinstance(x, Tensor):
        return torch.cos, torch.sin, torch.atan2, torch.hypot, lambda xs: torch.stack(xs, -1)
    mod = np if isinstance(x, np.ndarray) else arrays._cupy()
    return mod.cos, mod.sin, mod.arctan2, mod.hypot, lambda xs: mod.stack(xs, -1)


def rotated_to_cxcywhr(boxes, fmt: str):
    """Rotated boxes of format `fmt` as (cx, cy, w, h, angle in degrees), with torchvision
    0.29's box_convert conventions:

    - ``"cxcywhr"`` [N, 5]: returned as is (a numpy array in non-native byte order: a native
      copy).
    - ``"xywhr"`` [N, 5]: (x1, y1) is the box's own top-left corner, the one at local offset
      (-w/2, -h/2): cx = x1 + w/2 cos a + h/2 sin a, cy = y1 - w/2 sin a + h/2 cos a.
    - ``"xyxyxyxy"`` [N, 8]: the corners top-left, top-right, bottom-right, bottom-left in the
      box's frame; w = |p2 - p1|, h = |p3 - p2|, a = atan2(y1 - y2, x2 - x1) in degrees, and
      the centre from p1 as for "xywhr" (p4 is not read: exact for rectangles).

    Computed in float64 and returned in the input's dtype (float16/bfloat16 stay as given).
    NaN or inf raise ValueError on the CPU, and so do boxes whose centre or sides overflow the
    dtype (torchvision's box_convert gives inf)."""
    return _convert(boxes, fmt, "boxes")


def _convert(boxes, fmt: str, name: str):
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    arrays.kind(boxes, name)
    _check_rboxes(boxes, name, 8 if fmt == "xyxyxyxy" else 5)
    arrays.check_finite_any(boxes, name)  # NaN or inf raise on the CPU, as box_iou_rotated
    if fmt == "cxcywhr":
        if isinstance(boxes, np.ndarray) and not boxes.dtype.isnative:
            return boxes.astype(arrays.native_dtype(boxes.dtype))  # outputs are native-order
        return boxes
    cos, sin, atan2, hypot, stack = _math(boxes)
    b = boxes.to(torch.float64) if isinstance(boxes, Tensor) else boxes.astype(np.float64)
    if fmt == "xywhr":
        x1, y1, w, h, a = (b[:, i] for i in range(5))
    else:
        x1, y1, x2, y2, x3, y3 = (b[:, i] for i in range(6))
        a = atan2(y1 - y2, x2 - x1) * (180 / math.pi)
        w = hypot(x2 - x1, y2 - y1)  # no overflow of the squares where w fits
        h = hypot(x3 - x2, y3 - y2)
    r = a * (math.pi / 180)
    c, s = cos(r), sin(r)
    out = stack([x1 + w / 2 * c + h / 2 * s, y1 - w / 2 * s + h / 2 * c, w, h, a])
    with np.errstate(over="ignore"):  # an overflow to inf raises just below
        out = arrays.cast(out, boxes)
    try:
        arrays.check_finite_any(out, name)
    except ValueError:  # finite boxes whose centre or sides overflow the dtype
        raise ValueError(
            f"{name} in format {fmt!r} give centres or sides beyond {boxes.dtype} as cxcywhr"
        ) from None
    return out


# --- box_iou_rotated ----------------------------------------------------------------------


def _iou(a, b):
    n, m = a.shape[0], b.shape[0]
    arrays.check_finite(a, "boxes1")
    arrays.check_finite(b, "boxes2")
    out = arrays.empty(a, (n, m))
    if n and m:
        arrays.launch(
            a,
            "box_iou_rotated",
            arrays.dtype_code(a),
            arrays.ptr(a),
            n,
            arrays.ptr(b),
            m,
            arrays.ptr(out),
        )
    return out


@torch.library.custom_op("fastdet::box_iou_rotated", mutates_args=())
def _iou_op(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return _iou(boxes1.contiguous(), boxes2.contiguous())


@_iou_op.register_fake
def _(boxes1, boxes2):
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


def box_iou_rotated(boxes1, boxes2, fmt: str = "cxcywhr"):
    """IoU of every pair of rotated boxes: [N, 5] and [M, 5] -> [N, M] (float dtype of the
    inputs; float64 if either is). fmt: "cxcywhr" (cx, cy, w, h, angle in degrees,
    counter-clockwise on an image with y down; torchvision's and detectron2's convention),
    "xywhr" or "xyxyxyxy" ([N, 8]), read as rotated_to_cxcywhr does.

    torchvision: ``box_iou(boxes1, boxes2, fmt="cxcywhr")``; detectron2:
    ``pairwise_iou_rotated``. Boxes with w <= 0 or h <= 0 give IoU 0. NaN or inf raise
    ValueError on the CPU; on the GPU they are not checked (as box_iou)."""
    arrays.same_kind(boxes1=boxes1, boxes2=boxes2)
    if fmt != "cxcywhr":
        boxes1, boxes2 = _convert(boxes1, fmt, "boxes1"), _convert(boxes2, fmt, "boxes2")
    _check_rboxes(boxes1, "boxes1")
    _check_rboxes(boxes2, "boxes2")
    dt = arrays.compute_dtype(boxes1, boxes2)
    a, b = arrays.prepare(boxes1, dt), arrays.prepare(boxes2, dt)
    out = _iou_op(a, b) if isinstance(a, Tensor) and not arrays.eager(a, b) else _iou(a, b)
    return arrays.cast(out, boxes1) if arrays.same_dtype(boxes1, boxes2) else out


# --- nms_rotated, batched_nms_rotated -----------------------------------------------------


def _nms(boxes, scores, idxs, iou_threshold: float):
    what = "nms_rotated" if idxs is None else "batched_nms_rotated"
    idx_args = (0 if idxs is None else arrays.ptr(idxs),)  # one kernel: 0 for no categories
    return _kept("nms_rotated", what, boxes, scores, idx_args, iou_threshold, arrays.check_finite)


_nms_op, _batched_op = _custom_ops(
    "nms_rotated", lambda boxes, scores, t: _nms(boxes, scores, None, t), _nms
)


def _prepare(boxes, scores, **more):
    arrays.same_kind(boxes=boxes, scores=scores, **more)
    _check_rboxes(boxes, "boxes")
    arrays.check_scores(boxes, scores)
    dt = arrays.compute_dtype(boxes, scores)
    return arrays.prepare(boxes, dt), arrays.prepare(scores, dt)


def nms_rotated(boxes, scores, iou_threshold: float):
    """Greedy NMS of rotated boxes: boxes [N, 5] (cx, cy, w, h, angle in degrees, as
    box_iou_rotated), scores [N] -> int64 indices [K] of the kept boxes in decreasing score
    (ties: lower index first). A box is dropped when its rotated IoU with a kept, higher-scoring
    box is > iou_threshold. detectron2: ``nms_rotated`` (torchvision 0.29 has none)."""
    t = arrays.check_threshold(iou_threshold)
    b, s = _prepare(boxes, scores)
    if isinstance(b, Tensor) and not arrays.eager(b, s):
        return _nms_op(b, s, t)
    return _nms(b, s, None, t)  # numpy, cupy, or the eager fast path


def batched_nms_rotated(boxes, scores, idxs, iou_threshold: float):
    """nms_rotated within each category: boxes [N, 5], scores [N], idxs [N] integer categories
    -> int64 indices [K] of the kept boxes in decreasing score. Boxes of different categories
    never suppress each other. detectron2: ``batched_nms_rotated``."""
    t = arrays.check_threshold(iou_threshold)
    b, s = _prepare(boxes, scores, idxs=idxs)
    i = _prepare_idxs(idxs, b.shape[0])
    if isinstance(b, Tensor) and not arrays.eager(b, s, i):
        return _batched_op(b, s, i, t)
    return _nms(b, s, i, t)  # numpy, cupy, or the eager fast path


# --- fmt= of box_iou and box_convert --------------------------------------------------------
# Where this fastdet's box_iou and box_convert take fmt= (tables fastdet.ops.box_iou.IOU_BY_FORMAT
# and fastdet.ops.box_convert.CONVERTERS), the rotated formats are registered there:
# box_iou(a, b, fmt="cxcywhr") is box_iou_rotated, and box_convert converts among the three
# rotated formats with torchvision's arithmetic (in the input's dtype; integer boxes rounded back).


def _rad(r):
    return r * torch.pi / 180.0


def _cxcywhr_to_xywhr(b):
    cx, cy, w, h, r = b.unbind(-1)
    c, s = torch.cos(_rad(r)), torch.sin(_rad(r))
    return torch.stack([cx - w / 2 * c - h / 2 * s, cy - h / 2 * c + w / 2 * s, w, h, r], -1)


def _xywhr_to_cxcywhr(b):
    x1, y1, w, h, r = b.unbind(-1)
    c, s = torch.cos(_rad(r)), torch.sin(_rad(r))
    return torch.stack([x1 + w / 2 * c + h / 2 * s, y1 - w / 2 * s + h / 2 * c, w, h, r], -1)


def _xywhr_to_xyxyxyxy(b):
    x1, y1, w, h, r = b.unbind(-1)
    c, s = torch.cos(_rad(r)), torch.sin(_rad(r))
    x2, y2 = x1 + w * c, y1 - w * s
    return torch.stack([x1, y1, x2, y2, x2 + h * s, y2 + h * c, x1 + h * s, y1 + h * c], -1)


def _xyxyxyxy_to_xywhr(b):
    x1, y1, x2, y2, x3, y3, _, _ = b.unbind(-1)
    r = torch.atan2(y1 - y2, x2 - x1) * 180 / torch.pi
    w = ((x2 - x1) ** 2 + (y1 - y2) ** 2).sqrt()
    h = ((x3 - x2) ** 2 + (y3 - y2) ** 2).sqrt()
    return torch.stack([x1, y1, w, h, r], -1)


def _as_given(fn):
    """fn with torchvision's integer handling: computed in floating point, rounded back."""

    def convert(b):
        out = fn(b)
        return out if b.is_floating_point() else out.round_().to(b.dtype)

    return convert


def _then(first, second):
    return lambda b: second(first(b).to(b.dtype))


_ROTATED_CONVERTERS = {
    ("cxcywhr", "xywhr"): _as_given(_cxcywhr_to_xywhr),
    ("xywhr", "cxcywhr"): _as_given(_xywhr_to_cxcywhr),
    ("xywhr", "xyxyxyxy"): _as_given(_xywhr_to_xyxyxyxy),
    ("xyxyxyxy", "xywhr"): _as_given(_xyxyxyxy_to_xywhr),
}
_ROTATED_CONVERTERS[("cxcywhr", "xyxyxyxy")] = _then(
    _ROTATED_CONVERTERS[("cxcywhr", "xywhr")], _ROTATED_CONVERTERS[("xywhr", "xyxyxyxy")]
)
_ROTATED_CONVERTERS[("xyxyxyxy", "cxcywhr")] = _then(
    _ROTATED_CONVERTERS[("xyxyxyxy", "xywhr")], _ROTATED_CONVERTERS[("xywhr", "cxcywhr")]
)


def _iou_float32(boxes1, boxes2, fmt):
    """box_iou(fmt=<rotated>): torchvision's box_iou returns float32 IoUs of rotated boxes
    whatever their dtype (box_iou_rotated keeps float64 for float64 boxes, as fastdet's does)."""
    out = box_iou_rotated(boxes1, boxes2, fmt)
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype == torch.float64 else out
    return out.astype("float32") if str(out.dtype) == "float64" else out


def _register_formats():
    # by module name: the package attributes box_iou and box_convert are the functions
    iou_table = getattr(importlib.import_module(f"{__package__}.box_iou"), "IOU_BY_FORMAT", None)
    if iou_table is not None:
        for fmt in FORMATS:
            iou_table[fmt] = lambda boxes1, boxes2, fmt=fmt: _iou_float32(boxes1, boxes2, fmt)
    try:
        convert = importlib.import_module(f"{__package__}.box_convert")
    except ImportError:  # a fastdet without box_convert
        return
    convert.CONVERTERS.update(_ROTATED_CONVERTERS)


_register_formats()
