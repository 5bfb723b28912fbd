"""Faster R-CNN (fastdet.models.detection): torchvision's structure and state_dict keys, on
fastdet's ops. Presets fasterrcnn_vgg16 (the original), fasterrcnn_resnet50_fpn (torchvision's,
checkpoint-compatible), fasterrcnn_resnet101_fpn (its layout on ResNet-101) and
fasterrcnn_resnet18_fpn (CPU-sized); Mask R-CNN's
maskrcnn_resnet50_fpn (torchvision's) and maskrcnn_resnet18_fpn. See faster_rcnn.py and
mask_rcnn.py. MODELS maps each preset's name to its builder."""

from ...ops import MultiScaleRoIAlign
from .backbones import (
    BackboneWithFPN,
    FeaturePyramidNetwork,
    FrozenBatchNorm2d,
    VGG16Backbone,
    resnet_fpn_backbone,
)
from .faster_rcnn import (
    FasterRCNN,
    fasterrcnn_resnet18_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet101_fpn,
    fasterrcnn_vgg16,
    load_detector_weights,
)
from .mask_head import MaskRCNNHeads, MaskRCNNPredictor
from .mask_rcnn import MaskRCNN, maskrcnn_resnet18_fpn, maskrcnn_resnet50_fpn
from .roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from .rpn import RegionProposalNetwork, RPNHead
from .transform import DetectionTransform, ImageList

MODELS = {
    "fasterrcnn_resnet18_fpn": fasterrcnn_resnet18_fpn,
    "fasterrcnn_resnet50_fpn": fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet101_fpn": fasterrcnn_resnet101_fpn,
    "fasterrcnn_vgg16": fasterrcnn_vgg16,
    "maskrcnn_resnet18_fpn": maskrcnn_resnet18_fpn,
    "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn,
}

__all__ = [
    "MODELS",
    "BackboneWithFPN",
    "DetectionTransform",
    "FastRCNNPredictor",
    "FasterRCNN",
    "FeaturePyramidNetwork",
    "FrozenBatchNorm2d",
    "ImageList",
    "MaskRCNN",
    "MaskRCNNHeads",
    "MaskRCNNPredictor",
    "MultiScaleRoIAlign",
    "RPNHead",
    "RegionProposalNetwork",
    "RoIHeads",
    "TwoMLPHead",
    "VGG16Backbone",
    "fasterrcnn_resnet18_fpn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet101_fpn",
    "fasterrcnn_vgg16",
    "load_detector_weights",
    "maskrcnn_resnet18_fpn",
    "maskrcnn_resnet50_fpn",
    "resnet_fpn_backbone",
]
