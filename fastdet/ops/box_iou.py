"""box_area, box_iou, generalized_box_iou: fused C++/CUDA kernels.

Boxes are [N, 4] (x1, y1, x2, y2), float16/bfloat16 (computed in float32), float32 or float64;
torch tensors, numpy arrays or cupy arrays, with the output of the same kind and device.

Differences from torchvision.ops: a zero-area or inverted box (x2 < x1 or y2 < y1) has area 0
and IoU 0 with every box (torchvision gives NaN for two empty boxes, and treats an inverted box's
signed area as real); GIoU of two empty boxes is 0 (or -1 when their hull has area). NaN or inf
coordinates raise ValueError on the CPU; on the GPU they propagate (a check would cost a sync).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _arrays as arrays


def _pairwise(name: str, a, b):
    n, m = a.shape[0], b.shape[0]
    arrays.check_coordinates(a, "boxes1")
    arrays.check_coordinates(b, "boxes2")
    arrays.check_output_size(name, (n, m), a)
    out = arrays.empty(a, (n, m))
    if n and m:
        arrays.launch(
            a, name, arrays.dtype_code(a), arrays.ptr(a), n, arrays.ptr(b), m, arrays.ptr(out)
        )
    return out


@torch.library.custom_op("fastdet::box_iou", mutates_args=())
def _box_iou_op(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return _pairwise("box_iou", boxes1.contiguous(), boxes2.contiguous())


@torch.library.custom_op("fastdet::generalized_box_iou", mutates_args=())
def _giou_op(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return _pairwise("generalized_box_iou", boxes1.contiguous(), boxes2.contiguous())


@_box_iou_op.register_fake
@_giou_op.register_fake
def _(boxes1, boxes2):
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


@torch.library.custom_op("fastdet::box_area", mutates_args=())
def _box_area_op(boxes: Tensor) -> Tensor:
    return _area(boxes.contiguous())


@_box_area_op.register_fake
def _(boxes):
    return boxes.new_empty((boxes.shape[0],))


def _area(b):
    arrays.check_finite(b, "boxes")
    out = arrays.empty(b, (b.shape[0],))
    if b.shape[0]:
        arrays.launch(
            b, "box_area", arrays.dtype_code(b), arrays.ptr(b), b.shape[0], arrays.ptr(out)
        )
    return out


def _two(op, name, boxes1, boxes2):
    arrays.same_kind(boxes1=boxes1, boxes2=boxes2)
    arrays.check_boxes(boxes1, "boxes1")
    arrays.check_boxes(boxes2, "boxes2")
    dt = arrays.compute_dtype(boxes1, boxes2)
    a, b = arrays.prepare(boxes1, dt), arrays.prepare(boxes2, dt)
    out = op(a, b) if isinstance(a, Tensor) else _pairwise(name, a, b)
    return arrays.cast(out, boxes1) if arrays.same_dtype(boxes1, boxes2) else out


def box_iou(boxes1, boxes2):
    """IoU of every pair: [N, 4] and [M, 4] boxes -> [N, M]. Empty boxes give 0, not NaN."""
    return _two(_box_iou_op, "box_iou", boxes1, boxes2)


def generalized_box_iou(boxes1, boxes2):
    """Generalized IoU (Rezatofighi et al., 2019) of every pair: [N, 4], [M, 4] -> [N, M]."""
    return _two(_giou_op, "generalized_box_iou", boxes1, boxes2)


def box_area(boxes):
    """Area of each [N, 4] box -> [N]; inverted boxes have area 0 (torchvision: negative)."""
    arrays.kind(boxes, "boxes")
    arrays.check_boxes(boxes, "boxes")
    b = arrays.prepare(boxes, arrays.compute_dtype(boxes))
    out = _box_area_op(b) if isinstance(b, Tensor) else _area(b)
    return arrays.cast(out, boxes)
