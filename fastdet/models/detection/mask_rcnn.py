"""Mask R-CNN (He et al., 2017): Faster R-CNN plus a mask branch on the detected boxes,
torchvision's structure, arguments and state_dict keys, on fastdet's ops (RoIAlign for the
features and the training targets, paste_masks for the output).

Presets: maskrcnn_resnet50_fpn (torchvision's: a torchvision checkpoint loads as it is and gives
the same boxes, scores, labels and masks) and maskrcnn_resnet18_fpn (small enough to train on a
CPU). Nuclei need more than torchvision's 100 detections per image and smaller anchors: pass
box_detections_per_img and rpn_anchor_generator.

Training targets add "masks" uint8 [Ni, H, W] (0/1, the image's size) to "boxes" and "labels";
the losses add "loss_mask". In evaluation each detection dict adds "masks": float [D, 1, H, W]
probabilities pasted into the original image (torchvision's output), or, with
`paste_masks=False`, the [D, M, M] probabilities inside each box, for fastdet.ops.paste_masks or
masks_to_labels to threshold without materialising full-size float masks.
"""

from __future__ import annotations

from torch import Tensor

from ... import ops
from ...ops import MultiScaleRoIAlign
from .faster_rcnn import _RESNET18_DEFAULTS, FasterRCNN, _check_targets, _resnet_fpn
from .mask_head import MaskRCNNHeads, MaskRCNNPredictor


class MaskRCNN(FasterRCNN):
    """FasterRCNN's arguments plus torchvision's mask_roi_pool (default MultiScaleRoIAlign of the
    four FPN levels, 14 x 14, sampling 2), mask_head (default four 3x3 convolutions of 256
    channels) and mask_predictor (default 2x upsampling to 28 x 28, one map per class), and
    paste_masks (True: output masks pasted into the image, as torchvision)."""

    def __init__(
        self,
        backbone,
        num_classes: int,
        mask_roi_pool=None,
        mask_head=None,
        mask_predictor=None,
        paste_masks: bool = True,
        **kwargs,
    ):
        super().__init__(backbone, num_classes, **kwargs)
        c = backbone.out_channels
        heads = self.roi_heads
        heads.mask_roi_pool = mask_roi_pool or MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
        heads.mask_head = mask_head or MaskRCNNHeads(c, (256, 256, 256, 256), 1)
        heads.mask_predictor = mask_predictor or MaskRCNNPredictor(256, 256, num_classes)
        self.paste_masks = paste_masks

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training:
            _check_masks(targets, images)
        out = super().forward(images, targets)
        if self.training or not self.paste_masks:
            return out
        for det, image in zip(out, images):
            size = tuple(image.shape[-2:])
            det["masks"] = ops.paste_masks(det["masks"], det["boxes"], size)[:, None]
        return out


def _check_masks(targets, images) -> None:
    _check_targets(targets, len(images), boxes_data=False)  # the boxes' values: forward's check
    for i, (t, image) in enumerate(zip(targets, images)):
        masks = t.get("masks")
        want = (t["boxes"].shape[0], *image.shape[-2:])
        if not isinstance(masks, Tensor) or tuple(masks.shape) != want:
            raise ValueError(
                f"targets[{i}]['masks'] must be a tensor {list(want)} (one mask per box, the "
                f"image's size), got {getattr(masks, 'shape', type(masks).__name__)}"
            )


def maskrcnn_resnet50_fpn(
    weights=None,
    num_classes: int = 91,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    **kwargs,
) -> MaskRCNN:
    """torchvision's maskrcnn_resnet50_fpn. weights: a local detector state_dict file
    (torchvision's COCO checkpoint loads as it is); weights_backbone: a torchvision resnet50
    classification state_dict file. kwargs: MaskRCNN's and FasterRCNN's arguments."""
    return _resnet_fpn(
        "resnet50",
        num_classes,
        weights,
        weights_backbone,
        trainable_backbone_layers,
        {},
        kwargs,
        MaskRCNN,
    )


def maskrcnn_resnet18_fpn(
    num_classes: int,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    **kwargs,
) -> MaskRCNN:
    """ResNet-18 + FPN Mask R-CNN, torchvision's layout, 128 RoIs per image by default.
    weights: a state_dict file of this model; weights_backbone: a torchvision resnet18
    state_dict file (backbone only)."""
    return _resnet_fpn(
        "resnet18",
        num_classes,
        weights,
        weights_backbone,
        trainable_backbone_layers,
        _RESNET18_DEFAULTS,
        kwargs,
        MaskRCNN,
    )
