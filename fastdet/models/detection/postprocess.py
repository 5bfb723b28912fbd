"""The post-processing of an operating point on a detector's output, shared by the engine
(engine.tasks.det.point) and the exported graph (fastdet.export): one place for its order."""

from __future__ import annotations

from torch import Tensor

from ...ops import batched_nms, suppress_contained


def point_keep(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    nms_iou: float,
    containment: float | None = None,
    max_boxes: int | None = None,
    score_threshold: float | None = None,
) -> Tensor:
    """Indices (decreasing score) of one image's detections that an operating point keeps: NMS
    per label at nms_iou, then containment suppression (a fraction; None: off), the first
    max_boxes (None: all), then scores >= score_threshold (None: every score)."""
    keep = batched_nms(boxes, scores, labels, float(nms_iou))
    if containment is not None:
        keep = keep[suppress_contained(boxes[keep], scores[keep], labels[keep], float(containment))]
    if max_boxes is not None:
        keep = keep[: int(max_boxes)]
    if score_threshold is not None:
        keep = keep[scores[keep] >= float(score_threshold)]
    return keep
