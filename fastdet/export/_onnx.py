"""fastdet's custom ops in ONNX: the box ops become plain tensor ops (a decomposition of the
ExportedProgram before the ONNX conversion), NMS and RoIAlign become ONNX's NonMaxSuppression and
RoiAlign (an onnxscript translation table for torch.onnx.export).

What differs from fastdet's kernels (and so from the PyTorch model):
- NonMaxSuppression normalises inverted boxes (x2 < x1 or y2 < y1: their corners swapped),
  where fastdet gives them area 0, so IoU 0 with every box. The model's boxes are never
  inverted (decoded with positive sizes, then clipped).
- ONNX leaves the order of equal scores to the runtime: onnxruntime (1.32) takes the lower index
  first, as fastdet does; another runtime may not.
- batched NMS runs as one NonMaxSuppression on boxes shifted apart per category (the categories'
  coordinate ranges made disjoint after subtracting the minimum, so negative coordinates are
  safe); the shift rounds coordinates, so an IoU within float rounding of the threshold may
  decide differently.
- paste_masks has no ONNX form here: an ONNX Mask R-CNN returns the unpasted [D, M, M] mask
  probabilities in each box (threshold and paste them with the boxes, e.g. with
  fastdet.ops.paste_masks).
"""

from __future__ import annotations

import torch

# ops that the ONNX graph cannot hold, with what to do instead
UNSUPPORTED = {
    "fastdet.paste_masks.default": "Mask R-CNN exports unpasted masks to ONNX (paste_masks=False)",
    "fastdet.masks_to_labels.default": "label images are made after the model, not inside it",
    "fastdet.roi_pool.default": "ONNX's MaxRoiPool rounds boxes differently; use roi_align",
    "fastdet.nms_rotated.default": "ONNX has no rotated-box NMS",
    "fastdet.box_iou_rotated.default": "ONNX has no rotated-box IoU",
    "fastdet.soft_nms.default": "ONNX has no soft-NMS",
    "fastdet.suppress_contained.default": "ONNX has no containment suppression: export the "
    "checkpoint as pt2, or choose its operating point with containment off (fastdet evaluate "
    "det --containment off shows the figures; fastdet tune det stores a point)",
}


# ---- plain-op forms of the element-wise box ops (same formulas as the kernels) -------------


def _decode_boxes(codes, boxes, weights, clip):
    wx, wy, ww, wh = weights
    w = boxes[:, 2:3] - boxes[:, 0:1]
    h = boxes[:, 3:4] - boxes[:, 1:2]
    cx = boxes[:, 0:1] + 0.5 * w
    cy = boxes[:, 1:2] + 0.5 * h
    c = codes.reshape(codes.shape[0], -1, 4)
    dx, dy = c[..., 0] / wx, c[..., 1] / wy
    dw = torch.clamp(c[..., 2] / ww, max=clip)
    dh = torch.clamp(c[..., 3] / wh, max=clip)
    pcx, pcy = dx * w + cx, dy * h + cy
    pw, ph = torch.exp(dw) * w, torch.exp(dh) * h
    out = torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph), dim=2)
    return out.reshape(codes.shape)


def _clip_boxes(boxes, height, width):
    x = boxes[..., 0::2].clamp(min=0.0, max=width)
    y = boxes[..., 1::2].clamp(min=0.0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def _remove_small(boxes, min_size):
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.nonzero((ws >= min_size) & (hs >= min_size))[:, 0]


def _box_area(boxes):
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _grid_anchors(base, grid_sizes, strides):
    out = []
    for b, gh, gw, sh, sw in zip(
        base, grid_sizes[0::2], grid_sizes[1::2], strides[0::2], strides[1::2]
    ):
        ys = torch.arange(gh, device=b.device).to(b.dtype) * sh
        xs = torch.arange(gw, device=b.device).to(b.dtype) * sw
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        shift = torch.stack((x, y, x, y), dim=-1).reshape(-1, 1, 4)
        out.append((shift + b[None]).reshape(-1, 4))
    return torch.cat(out)


def decompositions() -> dict:
    """fastdet op -> a plain torch function, for ExportedProgram.run_decompositions."""
    ops = torch.ops.fastdet
    return {
        ops.decode_boxes.default: _decode_boxes,
        ops.clip_boxes_to_image.default: _clip_boxes,
        ops.remove_small_boxes.default: _remove_small,
        ops.box_area.default: _box_area,
        ops.grid_anchors.default: _grid_anchors,
    }


# ---- onnxscript translations -------------------------------------------------------------


def translation_table() -> dict:
    """fastdet op -> onnxscript function, for torch.onnx.export(custom_translation_table=...)."""
    import onnx
    from onnxscript import opset18 as op

    i64 = onnx.TensorProto.INT64

    def ints(*v):
        return op.Constant(value_ints=list(v))

    def nms(boxes, scores, iou_threshold: float):
        b = op.Unsqueeze(boxes, ints(0))  # [1, N, 4]
        s = op.Unsqueeze(op.Unsqueeze(scores, ints(0)), ints(0))  # [1, 1, N]
        n = op.Slice(op.Shape(boxes), ints(0), ints(1))  # every box may be kept
        thr = op.Constant(value_floats=[float(iou_threshold)])
        sel = op.NonMaxSuppression(b, s, n, thr, center_point_box=0)
        return op.Reshape(op.Slice(sel, ints(2), ints(3), ints(1)), ints(-1))

    def batched_nms(boxes, scores, idxs, iou_threshold: float):
        # the categories' boxes moved apart: category c lands at c * (range + 1) past the min
        lo = op.ReduceMin(boxes, keepdims=0)
        span = op.Sub(op.ReduceMax(boxes, keepdims=0), lo)
        one = op.CastLike(op.Constant(value_float=1.0), boxes)
        step = op.Add(span, one)
        offset = op.Mul(op.CastLike(idxs, boxes), step)
        moved = op.Add(op.Sub(boxes, lo), op.Unsqueeze(offset, ints(1)))
        return nms(moved, scores, iou_threshold)

    def roi_align(
        input,
        rois,
        spatial_scale: float,
        pooled_height: int,
        pooled_width: int,
        sampling_ratio: int,
        aligned: bool,
    ):
        batch = op.Cast(op.Reshape(op.Slice(rois, ints(0), ints(1), ints(1)), ints(-1)), to=i64)
        boxes = op.Slice(rois, ints(1), ints(5), ints(1))
        return op.RoiAlign(
            input,
            boxes,
            batch,
            coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
            mode="avg",
            output_height=pooled_height,
            output_width=pooled_width,
            sampling_ratio=max(int(sampling_ratio), 0),  # ONNX: 0 is adaptive (fastdet: -1)
            spatial_scale=float(spatial_scale),
        )

    ops = torch.ops.fastdet
    return {
        ops.nms.default: nms,
        ops.batched_nms.default: batched_nms,
        ops.roi_align.default: roi_align,
    }


def check_translatable(program) -> None:
    """ValueError naming the first fastdet op of `program` (an ExportedProgram) that has
    neither a decomposition nor an ONNX translation."""
    known = {str(k) for k in translation_table()} | {str(k) for k in decompositions()}
    for node in program.graph.nodes:
        name = str(node.target)
        if node.op != "call_function" or not name.startswith("fastdet."):
            continue
        if name not in known:
            why = UNSUPPORTED.get(name, "it has no ONNX translation")
            raise ValueError(f"cannot export to ONNX: op {name.removesuffix('.default')}: {why}")


OPSET = 18
