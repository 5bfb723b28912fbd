"""The detection task: Faster R-CNN (ResNet-18/50 + FPN, or the original VGG16) with SGD or Adam
and step decay (the original work: lr 1e-3 divided by 10 every 20 epochs), optional warmup and
random flips. The trainer (engine.trainer) runs it; best.pt is the best validation mAP@0.5.
A process's validation predictions are gathered so every process scores the whole set."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ....metrics import coco_map, dsb_score, rsna_score
from ....models.detection import MODELS
from ....models.detection._utils import BOX_LOSSES, CLS_LOSSES
from ....models.detection.backbones import NORMS
from ....models.detection.faster_rcnn import CAFFE_BGR_MEAN, CAFFE_STD
from ....ops import AnchorGenerator, masks_to_labels, paste_masks
from ...checkpoint import load_checkpoint
from ...config import HELD_OUT_TEST, RunConfig, setting
from ...sampling import gather_shards
from ...trainer import Task
from .data import DetTensors, collate
from .inference import predict_detections
from .point import objective_of, store_point, tune_point

# the registry's names, and Faster R-CNN's short names (its backbones)
BACKBONES = tuple(n.removeprefix("fasterrcnn_") for n in MODELS if n.startswith("fasterrcnn_"))
DET_MODELS = BACKBONES + tuple(MODELS)
CHECKPOINT_FORMAT = "fastdet.det.v1"
LOSS_KEYS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")
MASK_METRICS = ("val_mask_map", "val_mask_map_50", "val_dsb")
MASK_PLOT = (("val_mask_map", "mask mAP"), ("val_mask_map_50", "mask AP50"), ("val_dsb", "DSB"))
DET_COLUMNS = (
    ("epoch",)
    + LOSS_KEYS
    + ("loss", "val_map", "val_map_50", "val_rsna", "lr", "seconds", "data_wait")
)


AUTO = "auto"


def _anchor_size(text: str):
    """--anchor-sizes words: a side in pixels, or auto."""
    return AUTO if text == AUTO else float(text)


def backbone_of(model: str) -> str:
    """ "maskrcnn_resnet18_fpn" -> "resnet18_fpn" (the short names are their own backbone)."""
    return model.removeprefix("fasterrcnn_").removeprefix("maskrcnn_")


def full_name(model: str) -> str:
    """The registry's name of a model: "resnet18_fpn" -> "fasterrcnn_resnet18_fpn"."""
    return model if model in MODELS else f"fasterrcnn_{model}"


def has_masks(model: str) -> bool:
    return model.startswith("maskrcnn_")


@dataclasses.dataclass
class DetConfig(RunConfig):
    """Settings of a detection run (the shared ones in RunConfig). weights: a detector
    state_dict file to start from; weights_backbone: a torchvision classification state_dict
    (vgg16: either names its torchvision vgg16 file)."""

    task = "det"

    model: str = setting("resnet18_fpn", "detector", choices=DET_MODELS)
    num_classes: int = setting(2, "classes, background included (RSNA: background + opacity)")
    epochs: int = setting(40, "training epochs")
    test_fraction: float = setting(0.2, HELD_OUT_TEST)
    batch_size: int = setting(2, "images per step (per process under torchrun)")
    lr: float = setting(1e-3, "learning rate")
    step_size: int = setting(20, "epochs between learning-rate decays (StepLR)")
    gamma: float = setting(0.1, "learning-rate factor every --step-size epochs")
    hflip: float = setting(0.0, "probability of a left-right flip of a training image", metavar="P")
    vflip: float = setting(0.0, "probability of a top-bottom flip of a training image", metavar="P")
    min_size: int = setting(600, "shorter image side in the model")
    max_size: int = setting(1000, "longest image side in the model")
    anchor_sizes: list | str | None = setting(
        None,
        "RPN anchor side per FPN level (5 values; vgg16: 1, scaling its 128/256/512), or auto: "
        "fitted to the training boxes when training starts (the fitted sizes are saved)",
        nargs="+",
        type=_anchor_size,
        metavar="PX",
    )
    rois_per_image: int | None = setting(
        None, "RoIs sampled per training image (default: the model's, 128 or 512)", metavar="N"
    )
    norm: str = setting(
        "auto",
        "normalization of the ResNet backbone and FPN: bn (trained BatchNorm), frozen_bn, gn "
        "(GroupNorm); auto: frozen_bn with pretrained weights, else gn for Faster R-CNN (bn for "
        "Mask R-CNN); vgg16 has none",
        choices=NORMS,
    )
    scale_jitter: float = setting(
        0.0,
        "scale augmentation: train on random crops whose sides are 1 - J .. 1 of the image's "
        "(boxes cut to the crop), so objects appear up to 1 / (1 - J) larger",
        metavar="J",
    )
    intensity: float = setting(
        0.0,
        "intensity augmentation of strength J: random gamma 2^(+-J), contrast 1 +- J, "
        "brightness +- J/4",
        metavar="J",
    )
    test_proposals: int | None = setting(
        None,
        "RPN proposals per image at inference (default: the model's, 1000 or 300; fewer is "
        "faster on small images: the box head runs on each)",
        metavar="N",
    )
    box_loss: str = setting("smooth_l1", "box regression loss of both heads", choices=BOX_LOSSES)
    cls_loss: str = setting(
        "ce", "classification loss of both heads (focal: gamma 2)", choices=CLS_LOSSES
    )
    hist_eq: bool = setting(False, "histogram equalization of the inputs")
    detections_per_img: int = setting(
        100, "detections kept per image (nuclei: several hundred)", metavar="N"
    )
    mask_threshold: float = setting(
        0.5, "Mask R-CNN: mask probability above which a pixel is in the instance"
    )
    instance_score: float = setting(
        0.5, "Mask R-CNN: detections at or above this score enter instance label images"
    )

    @classmethod
    def upgrade(cls, d: dict) -> dict:
        """Also: a config from before `norm` gets the BatchNorm rule it was built with."""
        d = super().upgrade(d)
        if "norm" not in d and backbone_of(d.get("model", "resnet18_fpn")) != "vgg16":
            d["norm"] = "frozen_bn" if d.get("weights") or d.get("weights_backbone") else "bn"
        return d

    def validate(self) -> None:
        super().validate()
        for name in ("min_size", "max_size"):
            self._check_at_least(name, 1)
        if self.num_classes < 2:
            raise ValueError(
                f"DetConfig.num_classes counts the background: >= 2, got {self.num_classes}"
            )
        if self.max_size < self.min_size:
            raise ValueError(f"DetConfig.max_size ({self.max_size}) < min_size ({self.min_size})")
        for name in ("scale_jitter", "intensity"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"DetConfig.{name} must be in [0, 1), got {v!r}")
        if self.test_proposals is not None and int(self.test_proposals) < 1:
            raise ValueError(f"DetConfig.test_proposals must be >= 1, got {self.test_proposals!r}")
        if self.rois_per_image is not None:
            self._check_at_least("rois_per_image", 1)
        self._check_at_least("detections_per_img", 1)
        for name in ("mask_threshold", "instance_score"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"DetConfig.{name} must be in [0, 1], got {v!r}")
        if self.anchor_sizes in (["auto"], ("auto",)):
            self.anchor_sizes = AUTO
        if self.anchor_sizes is not None and self.anchor_sizes != AUTO:
            levels = 1 if backbone_of(self.model) == "vgg16" else 5
            sizes = self.anchor_sizes
            if len(sizes) != levels or not all(not isinstance(a, str) and a > 0 for a in sizes):
                raise ValueError(
                    f"DetConfig.anchor_sizes: {levels} positive size(s) for "
                    f"{self.model} (one per feature level), got {self.anchor_sizes!r}"
                )


def fit_anchor_sizes(config: DetConfig, dataset) -> list:
    """Anchor sides fitted to the boxes of `dataset` as the model sees them (resized by
    min_size / max_size): 5 sizes spread geometrically from 0.8x the 5th to 1.25x the 95th
    percentile of sqrt(w * h), one per FPN level; vgg16's one size s puts its middle anchor
    (2s) at the median. None (the model's own sizes) when the dataset has no boxes."""
    sides = []
    for i in range(len(dataset)):
        s = dataset[i]
        boxes = np.asarray(s["boxes"], np.float64).reshape(-1, 4)
        h, w = np.asarray(s["image"]).shape[-2:]
        scale = min(config.min_size / min(h, w), config.max_size / max(h, w))
        sides += list(np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], 1).clip(0)) * scale)
    sides = np.asarray(sides)[np.asarray(sides) > 0]
    if sides.size == 0:
        return None
    if backbone_of(config.model) == "vgg16":
        return [round(float(np.median(sides)) / 2, 1)]
    lo, hi = 0.8 * np.percentile(sides, 5), 1.25 * np.percentile(sides, 95)
    return [round(float(v), 1) for v in np.geomspace(lo, max(hi, lo * 1.01), 5)]


def norm_of(config: DetConfig) -> str:
    """The ResNet detector's normalization: config.norm, or for "auto" frozen BatchNorm with
    pretrained weights, else GroupNorm for Faster R-CNN (from scratch on small batches,
    BatchNorm's statistics are noise: GroupNorm raised the held-out AP50 of both seeds of the
    synthetic RSNA ablation) and BatchNorm for Mask R-CNN."""
    if config.norm != "auto":
        return config.norm
    if config.weights or config.weights_backbone:
        return "frozen_bn"
    return "bn" if has_masks(config.model) else "gn"


def build_model(config: DetConfig, pretrained: bool = True):
    """The Faster R-CNN or Mask R-CNN named by config.model; pretrained=False ignores the
    weight files (the state comes from a checkpoint). Mask R-CNN returns its masks unpasted
    ([D, M, M] in each box): the engine pastes them with the fused ops."""
    w = config.weights if pretrained else None
    wb = config.weights_backbone if pretrained else None
    size = dict(
        min_size=config.min_size,
        max_size=config.max_size,
        box_loss=config.box_loss,
        cls_loss=config.cls_loss,
        box_detections_per_img=config.detections_per_img,
    )
    if config.rois_per_image is not None:
        size["box_batch_size_per_image"] = int(config.rois_per_image)
    if config.test_proposals is not None:
        size["rpn_post_nms_top_n_test"] = int(config.test_proposals)
    if backbone_of(config.model) != "vgg16":
        size["norm"] = norm_of(config)
    elif config.norm != "auto":
        raise ValueError(f"DetConfig.norm {config.norm!r}: vgg16 has no normalization")
    if config.anchor_sizes == AUTO:
        raise ValueError("anchor_sizes 'auto' is fitted to the training boxes by train det")
    if config.anchor_sizes is not None:  # vgg16's one level keeps the original's three sizes x
        size["rpn_anchor_generator"] = _anchors(config)  # three ratios, scaled
    build = MODELS[full_name(config.model)]
    if backbone_of(config.model) == "vgg16":
        # Caffe's normalization inside the model (an exported graph takes [0, 1] images);
        # checkpoints of the releases that normalized in prepare_image hold the same weights (the
        # normalization has none) and give the same detections
        caffe = dict(image_mean=CAFFE_BGR_MEAN, image_std=CAFFE_STD, image_bgr=True)
        return build(num_classes=config.num_classes, weights=w or wb, **size, **caffe)
    model = build(num_classes=config.num_classes, weights=w, weights_backbone=wb, **size)
    if has_masks(config.model):
        model.paste_masks = False
    return model


def _anchors(config: DetConfig):
    """The configured anchor sizes: one per FPN level (ratios 0.5, 1, 2), or for vgg16 the
    original's sizes (128, 256, 512) x anchor_sizes[0] / 128."""
    ratios = (0.5, 1.0, 2.0)
    if backbone_of(config.model) == "vgg16":
        f = float(config.anchor_sizes[0]) / 128
        return AnchorGenerator(((128 * f, 256 * f, 512 * f),), (ratios,))
    return AnchorGenerator(tuple((float(a),) for a in config.anchor_sizes), (ratios,) * 5)


def detection_scores(preds: list[dict], targets: list[dict], max_detections: int = 100) -> dict:
    """COCO mAP, mAP@0.5 and the RSNA score of predictions against targets."""
    coco = coco_map(preds, targets, max_detections=max_detections)
    return {
        "map": float(coco["map"]),
        "map_50": float(coco["map_50"]),
        "rsna": float(rsna_score(preds, targets)),
    }


def instance_outputs(pred: dict, size: tuple[int, int], config) -> tuple:
    """A Mask R-CNN prediction (masks [D, M, M] in its boxes) -> (bool masks [D, H, W] at
    config.mask_threshold, for mask AP; int32 instance label image [H, W] of the detections
    scoring >= config.instance_score, the highest score owning shared pixels)."""
    binary = paste_masks(pred["masks"], pred["boxes"], size, threshold=config.mask_threshold)
    keep = pred["scores"] >= config.instance_score
    labels = masks_to_labels(
        pred["masks"][keep],
        pred["boxes"][keep],
        pred["scores"][keep],
        size,
        threshold=config.mask_threshold,
    )
    return binary, labels


def labels_of(masks: torch.Tensor) -> torch.Tensor:
    """int32 [H, W] label image of disjoint instance masks [K, H, W] (mask i -> label i + 1)."""
    if masks.shape[0] == 0:
        return torch.zeros(masks.shape[-2:], dtype=torch.int32)
    ids = torch.arange(1, masks.shape[0] + 1, dtype=torch.int32)
    return (masks.to(torch.int32) * ids[:, None, None]).amax(0)


def mask_scores(preds: list[dict], targets: list[dict], config) -> dict:
    """COCO mask mAP / AP50 / AP75 and the DSB-2018 score of Mask R-CNN predictions against
    targets with "masks" [K, H, W]."""
    dets, truths, pred_labels, gt_labels = [], [], [], []
    for p, t in zip(preds, targets):
        size = tuple(t["masks"].shape[-2:])
        binary, labels = instance_outputs(p, size, config)
        dets.append({**p, "masks": binary})
        truths.append(t)
        pred_labels.append(labels.numpy())
        gt_labels.append(labels_of(t["masks"]).numpy())
    coco = coco_map(dets, truths, iou_type="segm", max_detections=config.detections_per_img)
    return {
        "map": float(coco["map"]),
        "map_50": float(coco["map_50"]),
        "map_75": float(coco["map_75"]),
        "dsb": float(dsb_score(pred_labels, gt_labels)),
    }


class DetTask(Task):
    """Detection on the trainer: the four Faster R-CNN losses summed per batch; validation
    mAP, mAP@0.5 and RSNA score."""

    name = "det"
    title = "detection"
    description = "train a Faster R-CNN or Mask R-CNN detector"
    config_class = DetConfig
    checkpoint_format = CHECKPOINT_FORMAT
    loss_names = LOSS_KEYS + ("loss",)
    loss_key = "loss"
    metric_names = ("val_map", "val_map_50", "val_rsna")
    best_metric = "val_map_50"
    collate = staticmethod(collate)
    plot = (
        ("Training loss", tuple((k, k) for k in LOSS_KEYS + ("loss",))),
        ("Validation", (("val_map", "mAP"), ("val_map_50", "mAP@0.5"), ("val_rsna", "RSNA"))),
    )

    def __init__(self, config):
        super().__init__(config)
        if has_masks(config.model):  # Mask R-CNN: the mask loss, mask AP and the DSB score
            self.loss_names = LOSS_KEYS + ("loss_mask", "loss")
            self.metric_names = DetTask.metric_names + MASK_METRICS
            self.best_metric = "val_mask_map_50"
            self.plot = (
                ("Training loss", tuple((k, k) for k in self.loss_names)),
                ("Validation", DetTask.plot[1][1] + MASK_PLOT),
            )

    def epoch_line(self, row: dict) -> str:
        line = (
            f"loss {row['loss']:.4f}, val mAP {row['val_map']:.3f}, "
            f"val AP50 {row['val_map_50']:.3f}, val RSNA {row['val_rsna']:.3f}"
        )
        if "val_dsb" in row:
            line += f", mask AP50 {row['val_mask_map_50']:.3f}, DSB {row['val_dsb']:.3f}"
        return line

    def build_model(self, config, pretrained):
        return build_model(config, pretrained)

    def prepare(self, config, train_set, ckpt):
        """anchor_sizes "auto": the sizes fitted to the training boxes (a resumed run's
        config holds them already)."""
        if config.anchor_sizes == AUTO:
            config = dataclasses.replace(config, anchor_sizes=fit_anchor_sizes(config, train_set))
            print(f"anchor sizes fitted to the training boxes: {config.anchor_sizes}")
        return config

    def dataset(self, data, augment):
        return DetTensors(data, self.config, augment)

    def train_step(self, trainer, batch, where) -> dict:
        # Every trainable parameter receives a gradient at every step, even from a batch
        # without boxes (the box losses are then sums over empty selections, still in the
        # graph), so DDP needs no find_unused_parameters. Frozen layers have requires_grad off.
        images, targets = batch
        dev = trainer.device
        images = [im.to(dev, non_blocking=True) for im in images]
        targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets]
        trainer.model.train()
        losses, failure = self._forward(trainer, images, targets)
        loss = (
            sum(v.float() for v in losses.values())
            if losses is not None
            else torch.full((), math.nan, device=dev)
        )
        value = trainer.check_loss(loss, where, failure=failure)
        trainer.update(loss)
        names = self.loss_names[:-1]
        return {**{k: float(losses[k].detach()) for k in names}, "loss": value}

    @staticmethod
    def _forward(trainer, images, targets):
        """(loss dict, None), or (None, the error) when diverged weights made the ops refuse a
        NaN/inf input (e.g. box deltas before the loss): reported like a NaN loss, on every
        process."""
        try:
            with trainer.autocast():
                return trainer.train_model(images, targets), None
        except ValueError as e:
            if "NaN or inf" not in str(e):
                raise
            return None, e

    def finish(self, trainer) -> None:
        """Faster R-CNN: the operating point chosen on the validation split with best.pt's
        weights, stored in best.pt (Mask R-CNN's instances are scored otherwise)."""
        best = trainer.out / "best.pt"
        val = trainer.val_set
        if has_masks(self.config.model) or val is None or not len(val) or not best.is_file():
            return
        model = build_model(self.config, pretrained=False)
        model.load_state_dict(load_checkpoint(best)["model"])
        model.to(trainer.device)
        layout = self.config.extra.get("layout") or getattr(val, "layout", None)
        point = tune_point(model, self.config, val, trainer.device, objective_of(layout), "val")
        store_point(best, point)

    def validate(self, trainer) -> dict:
        """mAP, mAP@0.5 and RSNA score; under DDP the shards' predictions are gathered in the
        dataset's order and every process scores them all."""
        preds, targets = [], []
        for images, tgts in trainer.val_loader:
            preds += predict_detections(
                trainer.model, images, trainer.device, trainer.amp, trainer.config.bf16
            )
            targets += tgts
        if trainer.dist.enabled:
            preds = gather_shards(preds, trainer.dist.world_size)
            targets = gather_shards(targets, trainer.dist.world_size)
        s = detection_scores(preds, targets, self.config.detections_per_img)
        out = {"val_map": s["map"], "val_map_50": s["map_50"], "val_rsna": s["rsna"]}
        if has_masks(self.config.model):
            m = mask_scores(preds, targets, self.config)
            out.update(val_mask_map=m["map"], val_mask_map_50=m["map_50"], val_dsb=m["dsb"])
        return out
