"""fastdet.ops: a drop-in for torchvision.ops' box family (box ops, IoU variants and their
losses, NMS, RoIAlign, RoIPool, MultiScaleRoIAlign, masks_to_boxes, sigmoid_focal_loss), plus
soft_nms, weighted_boxes_fusion, AnchorGenerator, BoxCoder and Mask R-CNN's mask pasting
(paste_masks, masks_to_labels). Torch tensors (CPU/CUDA), numpy arrays and cupy arrays in; the
same kind out. Every kernel is also a torch custom op (torch.ops.fastdet.*) for torch.compile."""

from . import poolers
from ._arrays import RoIBoxesError, ShapeError
from .anchors import AnchorGenerator, cell_anchors
from .box_coder import BoxCoder
from .box_convert import box_convert
from .box_iou import (
    box_area,
    box_iou,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
)
from .boxes import clip_boxes_to_image, masks_to_boxes, remove_small_boxes
from .focal_loss import sigmoid_focal_loss
from .iou_loss import (
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
)
from .nms import batched_nms, nms, suppress_contained
from .paste_masks import masks_to_labels, paste_masks
from .poolers import MultiScaleRoIAlign
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool
from .rotated import batched_nms_rotated, box_iou_rotated, nms_rotated, rotated_to_cxcywhr
from .soft_nms import soft_nms
from .weighted_boxes_fusion import weighted_boxes_fusion

__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "MultiScaleRoIAlign",
    "RoIAlign",
    "RoIBoxesError",
    "RoIPool",
    "ShapeError",
    "batched_nms",
    "batched_nms_rotated",
    "box_area",
    "box_convert",
    "box_iou",
    "box_iou_rotated",
    "cell_anchors",
    "clip_boxes_to_image",
    "complete_box_iou",
    "complete_box_iou_loss",
    "distance_box_iou",
    "distance_box_iou_loss",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "masks_to_boxes",
    "masks_to_labels",
    "nms",
    "nms_rotated",
    "paste_masks",
    "poolers",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
    "rotated_to_cxcywhr",
    "sigmoid_focal_loss",
    "soft_nms",
    "suppress_contained",
    "weighted_boxes_fusion",
]
