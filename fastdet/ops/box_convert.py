"""box_convert, as torchvision.ops.box_convert, and the box formats the ops' `fmt=` accepts.

Axis-aligned formats (K = 4): "xyxy" (x1, y1, x2, y2), "xywh" (x1, y1, width, height) and
"cxcywh" (centre x, centre y, width, height). Rotated formats ("xywhr", "cxcywhr", "xyxyxyxy")
belong to fastdet.ops.rotated, which registers its conversions in CONVERTERS when present.

Boxes are [..., K] torch tensors, numpy or cupy arrays; the arithmetic is torchvision's, in the
framework's type promotion (integer boxes converted to "cxcywh" come back floating, as there).

Differences from torchvision.ops: bool and complex boxes raise TypeError, boxes whose last
dimension does not fit in_fmt raise ValueError even when in_fmt == out_fmt (torchvision copies
them), and NaN or inf coordinates raise ValueError on the CPU (torchvision passes them on).
"""

from __future__ import annotations

import torch

from . import _arrays as arrays

AXIS_ALIGNED = ("xyxy", "xywh", "cxcywh")
ROTATED = ("xywhr", "cxcywhr", "xyxyxyxy")


# Each conversion works on coordinate pairs, (x1, y1) and (x2, y2) or their like: half the
# framework ops of per-coordinate arithmetic (a tiny call's cost is its op count), with each
# element's arithmetic, and so its rounding, torchvision's.
def _pairs(b):
    return b.split(2, dim=-1)


def _xywh_to_xyxy(b):
    xy, wh = _pairs(b)
    return torch.cat([xy, xy + wh], dim=-1)


def _cxcywh_to_xyxy(b):
    c, wh = _pairs(b)
    half = 0.5 * wh
    return torch.cat([c - half, c + half], dim=-1)


def _xyxy_to_xywh(b):
    p1, p2 = _pairs(b)
    return torch.cat([p1, p2 - p1], dim=-1)


def _xyxy_to_cxcywh(b):
    p1, p2 = _pairs(b)
    return torch.cat([(p1 + p2) / 2, p2 - p1], dim=-1)


# (in_fmt, out_fmt) -> conversion of a [..., K] torch tensor. Pairs without an entry go
# through "xyxy" when both legs exist; fastdet.ops.rotated adds the rotated formats' pairs.
CONVERTERS = {
    ("xywh", "xyxy"): _xywh_to_xyxy,
    ("cxcywh", "xyxy"): _cxcywh_to_xyxy,
    ("xyxy", "xywh"): _xyxy_to_xywh,
    ("xyxy", "cxcywh"): _xyxy_to_cxcywh,
}


def format_error(fmt, what: str, known, name: str = "fmt") -> ValueError:
    """The error for a format `what` does not handle, naming the argument `name`; rotated
    formats name the ops that take them."""
    if isinstance(fmt, str) and fmt in ROTATED:
        return ValueError(
            f"{what}: {name} {fmt!r} is a rotated-box format, which {what} does not take "
            f"(expected one of {tuple(known)}); rotated boxes are fastdet.ops.rotated's "
            "(box_iou_rotated, nms_rotated, rotated_to_cxcywhr)"
        )
    return ValueError(f"{what}: {name}: Unsupported format {fmt!r}; expected one of {tuple(known)}")


def _columns(fmt: str) -> int:
    return 8 if fmt == "xyxyxyxy" else 5 if fmt in ROTATED else 4


def _check_boxes(boxes, fmt: str, name: str) -> None:
    """boxes: [..., K] of a float or integer dtype, K as fmt has it, finite (on the CPU: on the
    GPU a check would cost a host sync)."""
    arrays.check_float_or_int(boxes, name)
    k = _columns(fmt)
    if boxes.ndim < 1 or boxes.shape[-1] != k:
        raise arrays.ShapeError(
            f"{name} in format {fmt!r} must have shape [..., {k}], got {tuple(boxes.shape)}"
        )
    arrays.check_finite_any(boxes, name)


def _converter(in_fmt: str, out_fmt: str):
    direct = CONVERTERS.get((in_fmt, out_fmt))
    if direct is not None:
        return direct
    first, second = CONVERTERS.get((in_fmt, "xyxy")), CONVERTERS.get(("xyxy", out_fmt))
    if first is not None and second is not None:
        return lambda b: second(first(b))
    return None


def box_convert(boxes, in_fmt: str, out_fmt: str):
    """Boxes [..., K] from in_fmt to out_fmt (see the module docstring); a copy when the
    formats are equal, as torchvision."""
    return _convert(boxes, in_fmt, out_fmt, "boxes")


_known = [0, ()]  # [len(CONVERTERS) it was read at, the formats]: registrations renew it


def _known_formats():
    if _known[0] != len(CONVERTERS):
        _known[:] = len(CONVERTERS), tuple(sorted({f for pair in CONVERTERS for f in pair}))
    return _known[1]


def _convert(boxes, in_fmt, out_fmt, name: str):
    arrays.kind(boxes, name)
    known = _known_formats()
    for fmt, arg in ((in_fmt, "in_fmt"), (out_fmt, "out_fmt")):
        if not isinstance(fmt, str) or fmt not in known:
            raise format_error(fmt, "box_convert", known, arg)
    _check_boxes(boxes, in_fmt, name)
    if in_fmt == out_fmt:
        if isinstance(boxes, torch.Tensor):
            return boxes.clone()
        return boxes.astype(arrays.native_dtype(boxes.dtype))  # a copy, in native byte order
    fn = _converter(in_fmt, out_fmt)
    if fn is None:
        raise ValueError(
            f"box_convert: no conversion from in_fmt {in_fmt!r} to out_fmt {out_fmt!r}: "
            "axis-aligned and rotated boxes do not convert into each other"
        )
    return arrays.via_torch(fn, boxes)


def to_xyxy(boxes, fmt: str, name: str = "boxes"):
    """boxes (the argument `name`) in "xyxy" (as they are when fmt is "xyxy")."""
    return boxes if fmt == "xyxy" else _convert(boxes, fmt, "xyxy", name)
