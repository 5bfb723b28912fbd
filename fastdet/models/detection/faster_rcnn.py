"""Faster R-CNN (Ren et al., 2015): backbone, RPN and RoI head trained jointly (approximate joint
training: the four losses summed, one backward pass), on batches of any number of images.

Presets (nothing downloads; weights come from local torchvision-format state_dict files):
- fasterrcnn_vgg16: the original work. VGG16 conv1_1..conv5_3 (stride 16, conv1_1..conv2_2
  frozen), one anchor level (128/256/512 x 1:2, 1:1, 2:1), RPN top 12000/6000 before NMS 0.7 and
  2000/300 after (training/testing), RoIAlign 7x7 then fc6/fc7 (4096, dropout 0.5), 128 RoIs per
  image, 25% positive; smooth L1 with sigma 3 (RPN) and 1 (head); per-class NMS at 0.3 (the
  original's test setting); min_size 600, max_size 1000.
- fasterrcnn_resnet50_fpn: torchvision's model, same keys and numerics: a torchvision checkpoint
  loads as it is and gives the same detections.
- fasterrcnn_resnet101_fpn: the same on ResNet-101 (torchvision's layout: no torchvision preset
  exists; backbone weights from a torchvision resnet101 file), the original's second backbone.
- fasterrcnn_resnet18_fpn: the same on ResNet-18 (C2..C5 of 64..512 channels), 128 RoIs per
  image: small enough to train on a CPU.

Images are lists of float [C, H, W] tensors (any sizes); targets, in training, a list of dicts
with "boxes" float [Ni, 4] (x1, y1, x2, y2, pixels of the image as given; Ni may be 0) and
"labels" int64 [Ni] in 1..num_classes - 1 (0 is background).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ...ops import AnchorGenerator, MultiScaleRoIAlign
from ..compile import compile_model
from .backbones import VGG16Backbone, resnet_fpn_backbone
from .roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from .rpn import RegionProposalNetwork, RPNHead
from .transform import DetectionTransform

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Caffe's input (the original VGG16 Faster R-CNN) from [0, 1] RGB: BGR order, 0..255, minus the
# Caffe BGR pixel means, no std: (x - mean / 255) / (1 / 255) with bgr=True
CAFFE_BGR_MEAN = [102.9801 / 255, 115.9465 / 255, 122.7717 / 255]
CAFFE_STD = [1 / 255] * 3


def _fpn_anchors() -> AnchorGenerator:
    return AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)


class FasterRCNN(nn.Module):
    """Faster R-CNN on `backbone` (a module returning an OrderedDict of feature maps, with an
    `out_channels` attribute). Arguments are torchvision's FasterRCNN's, defaults included, plus:
    image_mean / image_std None: no normalization (the data pipeline normalizes); image_bgr:
    reverse the channels before normalizing (Caffe models; see CAFFE_BGR_MEAN, CAFFE_STD);
    rpn_sigma / roi_sigma: smooth L1 sigma (3 and 3 = torchvision's beta 1/9; the original: 3, 1);
    box_loss "smooth_l1" | "l1"; cls_loss "ce" | "focal" (both heads) with focal_gamma;
    compile: True (or a dict of torch.compile's options) compiles the model in place: inference
    as one graph, training with its static parts compiled (fastdet.models.compile).

    forward(images, targets) in training returns {"loss_objectness", "loss_rpn_box_reg",
    "loss_classifier", "loss_box_reg"}; in evaluation, forward(images) returns one dict per image,
    {"boxes" [D, 4], "scores" [D], "labels" [D] int64}, boxes in the original image's pixels."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        min_size=800,
        max_size: int = 1333,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        rpn_anchor_generator=None,
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_score_thresh: float = 0.0,
        box_roi_pool=None,
        box_head=None,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights=None,
        representation_size: int = 1024,
        rpn_sigma: float = 3.0,
        roi_sigma: float = 3.0,
        box_loss: str = "smooth_l1",
        cls_loss: str = "ce",
        focal_gamma: float = 2.0,
        image_bgr: bool = False,
        compile: bool | dict = False,
    ):
        super().__init__()
        if not hasattr(backbone, "out_channels"):
            raise ValueError(
                "backbone must have an out_channels attribute (channels of every level)"
            )
        if num_classes < 2:
            raise ValueError(
                f"num_classes counts the background: it must be >= 2, got {num_classes}"
            )
        c = backbone.out_channels
        anchors = rpn_anchor_generator or _fpn_anchors()
        losses = {"box_loss": box_loss, "cls_loss": cls_loss, "focal_gamma": focal_gamma}
        self.transform = DetectionTransform(
            min_size, max_size, image_mean, image_std, bgr=image_bgr
        )
        self.backbone = backbone
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(c, anchors.num_anchors_per_location()[0]),
            rpn_fg_iou_thresh,
            rpn_bg_iou_thresh,
            rpn_batch_size_per_image,
            rpn_positive_fraction,
            {"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            {"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            rpn_nms_thresh,
            rpn_score_thresh,
            sigma=rpn_sigma,
            **losses,
        )
        pool = box_roi_pool or MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
        head = box_head or TwoMLPHead(
            c * pool.output_size[0] * pool.output_size[1], representation_size
        )
        self.roi_heads = RoIHeads(
            pool,
            head,
            FastRCNNPredictor(head.fc7.out_features, num_classes),
            box_fg_iou_thresh,
            box_bg_iou_thresh,
            box_batch_size_per_image,
            box_positive_fraction,
            bbox_reg_weights,
            box_score_thresh,
            box_nms_thresh,
            box_detections_per_img,
            sigma=roi_sigma,
            **losses,
        )
        if compile:  # lazily: the first call traces, after the weights are loaded and moved
            compile_model(self, **(compile if isinstance(compile, dict) else {}))

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training:
            _check_targets(targets, len(images))
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, targets = self.transform(images, targets if self.training else None)
        features = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        detections, roi_losses = self.roi_heads(
            features, proposals, image_list.image_sizes, targets
        )
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)


def _check_targets(targets, n: int, boxes_data: bool = True) -> None:
    if targets is None or len(targets) != n:
        raise ValueError(
            f"training needs one target dict per image ({n}), got "
            f"{None if targets is None else len(targets)}"
        )
    for i, t in enumerate(targets):
        boxes, labels = t.get("boxes"), t.get("labels")
        if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(
                f"targets[{i}]['boxes'] must be a tensor [N, 4], got "
                f"{getattr(boxes, 'shape', type(boxes).__name__)}"
            )
        if not boxes.is_floating_point():
            raise TypeError(f"targets[{i}]['boxes'] must be float, got {boxes.dtype}")
        if (
            not isinstance(labels, Tensor)
            or labels.dtype != torch.int64
            or labels.shape != boxes.shape[:1]
        ):
            raise ValueError(f"targets[{i}]['labels'] must be an int64 tensor [{boxes.shape[0]}]")
    if boxes_data:
        _check_target_boxes([t["boxes"] for t in targets])


def _check_target_boxes(boxes: list[Tensor]) -> None:
    """Every target box has positive width and height. One host sync per step for all images
    (the one data check a training step makes); none under torch.compile, which traces no data
    (the compiled step trusts its targets)."""
    if torch.compiler.is_compiling() or not boxes:
        return
    if not bool(torch.cat([_degenerate(b) for b in boxes]).any()):
        return
    for i, b in enumerate(boxes):  # (only on the way to the error)
        bad = _degenerate(b)
        if bad.any():
            raise ValueError(
                f"targets[{i}] has a box without positive width and height: {b[bad][0].tolist()}"
            )


def _degenerate(boxes: Tensor) -> Tensor:
    return (boxes[:, 2:] <= boxes[:, :2]).any(1)


def _read_state_dict(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist (fastdet never downloads weights)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return state


# the layers sized by the class count: left at their initialization when fine-tuning on others
_CLASS_LAYERS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def load_detector_weights(model: FasterRCNN, path) -> FasterRCNN:
    """Loads a full detector state_dict (torchvision's keys). BatchNorm's num_batches_tracked
    entries are ignored. A box (or mask) predictor of another class count is left at its
    initialization (fine-tuning a COCO model on other classes); any other mismatch is an
    error."""
    state = {
        k: v for k, v in _read_state_dict(path).items() if not k.endswith("num_batches_tracked")
    }
    own = model.state_dict()
    skipped = [
        k
        for k in state
        if k.startswith(_CLASS_LAYERS) and k in own and state[k].shape != own[k].shape
    ]
    for k in skipped:
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a state_dict for this model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model


def _resnet_fpn(
    name: str,
    num_classes: int,
    weights,
    weights_backbone,
    trainable_backbone_layers,
    defaults: dict,
    kwargs: dict,
    model_class=None,
) -> FasterRCNN:
    # torchvision's rule: pretrained weights -> frozen BatchNorm and 3 trainable stages;
    # from scratch -> ordinary BatchNorm and every stage trainable; kwargs["norm"]
    # (backbones.NORMS) overrides the norm
    trained = weights is not None or weights_backbone is not None
    layers = (
        trainable_backbone_layers
        if trainable_backbone_layers is not None
        else (3 if trained else 5)
    )
    kwargs = dict(kwargs)
    norm = kwargs.pop("norm", None)
    backbone = resnet_fpn_backbone(
        name, weights_backbone if weights is None else None, layers, frozen_bn=trained, norm=norm
    )
    model = (model_class or FasterRCNN)(backbone, num_classes, **{**defaults, **kwargs})
    return load_detector_weights(model, weights) if weights is not None else model


# the ResNet-18 presets (Faster and Mask R-CNN): fewer RoIs per image, for small models and CPUs
_RESNET18_DEFAULTS = {"box_batch_size_per_image": 128}


def fasterrcnn_resnet50_fpn(
    weights=None,
    num_classes: int = 91,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    **kwargs,
) -> FasterRCNN:
    """torchvision's fasterrcnn_resnet50_fpn. weights: a local detector state_dict file
    (torchvision's COCO checkpoint loads as it is); weights_backbone: a torchvision resnet50
    classification state_dict file. kwargs: FasterRCNN's arguments (min_size,
    box_score_thresh...)."""
    return _resnet_fpn(
        "resnet50", num_classes, weights, weights_backbone, trainable_backbone_layers, {}, kwargs
    )


def fasterrcnn_resnet101_fpn(
    num_classes: int,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    **kwargs,
) -> FasterRCNN:
    """ResNet-101 + FPN Faster R-CNN in torchvision's layout (fasterrcnn_resnet50_fpn's with
    layer3 of 23 blocks). weights: a detector state_dict file of this model; weights_backbone: a
    torchvision resnet101 classification state_dict file (fc dropped)."""
    return _resnet_fpn(
        "resnet101", num_classes, weights, weights_backbone, trainable_backbone_layers, {}, kwargs
    )


def fasterrcnn_resnet18_fpn(
    num_classes: int,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    **kwargs,
) -> FasterRCNN:
    """ResNet-18 + FPN Faster R-CNN, torchvision's layout, 128 RoIs per image by default.
    weights: a detector state_dict file of this model; weights_backbone: a torchvision resnet18
    state_dict file (backbone only)."""
    return _resnet_fpn(
        "resnet18",
        num_classes,
        weights,
        weights_backbone,
        trainable_backbone_layers,
        _RESNET18_DEFAULTS,
        kwargs,
    )


_VGG_DEFAULTS = dict(
    min_size=600,
    max_size=1000,
    image_mean=None,
    image_std=None,
    rpn_pre_nms_top_n_train=12000,
    rpn_pre_nms_top_n_test=6000,
    rpn_post_nms_top_n_train=2000,
    rpn_post_nms_top_n_test=300,
    box_batch_size_per_image=128,
    box_nms_thresh=0.3,
    rpn_sigma=3.0,
    roi_sigma=1.0,
)


def fasterrcnn_vgg16(
    num_classes: int, weights=None, frozen_convs: int = 4, dropout: float = 0.5, **kwargs
) -> FasterRCNN:
    """The original Faster R-CNN on VGG16. weights: a local torchvision vgg16 state_dict file
    (features.* -> the extractor, classifier.0 / classifier.3 -> fc6 / fc7), or a state_dict of
    this detector. The model does not normalize by default (image_mean=None): the data transforms
    do (torchvision's vgg16 weights expect RGB in [0, 1] normalized with ImageNet's mean and std;
    pass image_mean / image_std to have the model do it; the engine passes CAFFE_BGR_MEAN,
    CAFFE_STD and image_bgr=True, the original's input). kwargs: FasterRCNN's arguments."""
    backbone = VGG16Backbone(frozen_convs)
    pool = MultiScaleRoIAlign(["0"], 7, 2)
    head = TwoMLPHead(512 * 7 * 7, 4096, dropout)
    kwargs = {**_VGG_DEFAULTS, "rpn_anchor_generator": AnchorGenerator.faster_rcnn(), **kwargs}
    model = FasterRCNN(backbone, num_classes, box_roi_pool=pool, box_head=head, **kwargs)
    if weights is None:
        return model
    state = _read_state_dict(weights)
    if not any(k.startswith("features.") for k in state):
        return load_detector_weights(model, weights)
    _load_vgg_classifier(model, state, weights)
    return model


def _load_vgg_classifier(model: FasterRCNN, state: dict, path) -> None:
    """torchvision vgg16 keys -> the detector's: features.* (the last max pool has none),
    classifier.0 -> fc6, classifier.3 -> fc7; classifier.6 (ImageNet classes) is dropped."""
    mapped = {"backbone." + k: v for k, v in state.items() if k.startswith("features.")}
    for src, dst in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
        for p in ("weight", "bias"):
            if f"{src}.{p}" not in state:
                raise ValueError(f"{path}: not a torchvision vgg16 state_dict (no {src}.{p})")
            mapped[f"roi_heads.box_head.{dst}.{p}"] = state[f"{src}.{p}"]
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    expected_missing = ("rpn.", "roi_heads.box_predictor.")
    missing = [k for k in missing if not k.startswith(expected_missing)]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a torchvision vgg16 state_dict: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
