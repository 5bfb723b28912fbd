"""box_convert, as torchvision.ops.box_convert, and the box formats the ops' `fmt=` accepts.

Axis-aligned formats (K = 4): "xyxy" (x1, y1, x2, y2), "xywh" (x1, y1, width, height) and
"cxcywh" (centre x, centre y, width, height). Rotated formats ("xywhr", "cxcywhr", "xyxyxyxy")
belong to fastdet.ops.rotated, which registers its conversions in CONVERTERS when present.

Boxes are [..., K] torch tensors, numpy or cupy arrays; the arithmetic is torchvision's, in the
framework's type promotion (integer boxes converted to "cxcywh" come back floating, as there).
"""

from __future__ import annotations

import torch

from . import _arrays as arrays

AXIS_ALIGNED = ("xyxy", "xywh", "cxcywh")
ROTATED = ("xywhr", "cxcywhr", "xyxyxyxy")


def _stack(parts):
    return torch.stack(parts, dim=-1)


def _xywh_to_xyxy(b):
    x, y, w, h = b.unbind(-1)
    return _stack([x, y, x + w, y + h])


def _cxcywh_to_xyxy(b):
    cx, cy, w, h = b.unbind(-1)
    return _stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h])


def _xyxy_to_xywh(b):
    x1, y1, x2, y2 = b.unbind(-1)
    return _stack([x1, y1, x2 - x1, y2 - y1])


def _xyxy_to_cxcywh(b):
    x1, y1, x2, y2 = b.unbind(-1)
    return _stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


# (in_fmt, out_fmt) -> conversion of a [..., K] torch tensor. Pairs without an entry go
# through "xyxy" when both legs exist; fastdet.ops.rotated adds the rotated formats' pairs.
CONVERTERS = {
    ("xywh", "xyxy"): _xywh_to_xyxy,
    ("cxcywh", "xyxy"): _cxcywh_to_xyxy,
    ("xyxy", "xywh"): _xyxy_to_xywh,
    ("xyxy", "cxcywh"): _xyxy_to_cxcywh,
}


def format_error(fmt: str, what: str, known) -> ValueError:
    """The error for a format `what` does not handle; rotated formats name the op that does."""
    if fmt in ROTATED:
        return ValueError(
            f"{what}: fmt {fmt!r} is a rotated-box format; rotated boxes are box_iou_rotated's "
            "(fastdet.ops.rotated), which this fastdet does not have"
        )
    return ValueError(f"{what}: unsupported box format {fmt!r}; expected one of {tuple(known)}")


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
    arrays.kind(boxes, "boxes")
    known = sorted({f for pair in CONVERTERS for f in pair})
    for fmt in (in_fmt, out_fmt):
        if fmt not in known:
            raise format_error(fmt, "box_convert", known)
    if in_fmt == out_fmt:
        return boxes.clone() if hasattr(boxes, "clone") else boxes.copy()
    fn = _converter(in_fmt, out_fmt)
    if fn is None:
        raise ValueError(f"box_convert: no conversion from {in_fmt!r} to {out_fmt!r}")
    return arrays.via_torch(fn, boxes)


def to_xyxy(boxes, fmt: str):
    """boxes in "xyxy" (as they are when fmt is "xyxy")."""
    return boxes if fmt == "xyxy" else box_convert(boxes, fmt, "xyxy")
