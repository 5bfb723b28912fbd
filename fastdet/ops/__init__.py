"""fastdet.ops: a drop-in for torchvision.ops' box ops, NMS and RoIAlign, plus soft_nms,
AnchorGenerator and BoxCoder. Torch tensors (CPU/CUDA), numpy arrays and cupy arrays in; the
same kind out. Every op is also a torch custom op (torch.ops.fastdet.*) for torch.compile."""

from .anchors import AnchorGenerator, cell_anchors
from .box_coder import BoxCoder
from .box_iou import box_area, box_iou, generalized_box_iou
from .boxes import clip_boxes_to_image, remove_small_boxes
from .nms import batched_nms, nms
from .roi_align import RoIAlign, roi_align
from .rotated import batched_nms_rotated, box_iou_rotated, nms_rotated, rotated_to_cxcywhr
from .soft_nms import soft_nms

__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "RoIAlign",
    "batched_nms",
    "batched_nms_rotated",
    "box_area",
    "box_iou",
    "box_iou_rotated",
    "cell_anchors",
    "clip_boxes_to_image",
    "generalized_box_iou",
    "nms",
    "nms_rotated",
    "remove_small_boxes",
    "roi_align",
    "rotated_to_cxcywhr",
    "soft_nms",
]
