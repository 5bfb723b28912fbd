"""The detection task: Faster R-CNN (ResNet-18/50 + FPN, or the original VGG16) with SGD or Adam
and step decay (the original work: lr 1e-3 divided by 10 every 20 epochs), optional warmup and
random flips. The trainer (engine.trainer) runs it; best.pt is the best validation mAP@0.5.
A process's validation predictions are gathered so every process scores the whole set."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..models.detection._utils import BOX_LOSSES, CLS_LOSSES
from .config import RunConfig, setting
from .det_data import DetTensors, collate
from .sampling import gather_shards
from .trainer import Task

DET_MODELS = ("resnet18_fpn", "resnet50_fpn", "vgg16")
CHECKPOINT_FORMAT = "fastdet.det.v1"
LOSS_KEYS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")
DET_COLUMNS = (
    ("epoch",) + LOSS_KEYS + ("loss", "val_map", "val_map_50", "val_rsna", "lr", "seconds")
)


@dataclasses.dataclass
class DetConfig(RunConfig):
    """Settings of a detection run (the shared ones in RunConfig). weights: a detector
    state_dict file to start from; weights_backbone: a torchvision classification state_dict
    (vgg16: either names its torchvision vgg16 file)."""

    task = "det"

    model: str = setting("resnet18_fpn", "detector", choices=DET_MODELS)
    num_classes: int = setting(2, "classes, background included (RSNA: background + opacity)")
    epochs: int = setting(40, "training epochs")
    batch_size: int = setting(2, "images per step (per process under torchrun)")
    lr: float = setting(1e-3, "learning rate")
    step_size: int = setting(20, "epochs between learning-rate decays (StepLR)")
    gamma: float = setting(0.1, "learning-rate factor every --step-size epochs")
    hflip: float = setting(0.0, "probability of a left-right flip of a training image", metavar="P")
    vflip: float = setting(0.0, "probability of a top-bottom flip of a training image", metavar="P")
    min_size: int = setting(600, "shorter image side in the model")
    max_size: int = setting(1000, "longest image side in the model")
    anchor_sizes: list | None = setting(
        None,
        "RPN anchor side per FPN level (5 values; vgg16: 1, scaling its 128/256/512)",
        nargs="+",
        type=float,
        metavar="PX",
    )
    rois_per_image: int | None = setting(
        None, "RoIs sampled per training image (default: the model's, 128 or 512)", metavar="N"
    )
    box_loss: str = setting("smooth_l1", "box regression loss of both heads", choices=BOX_LOSSES)
    cls_loss: str = setting(
        "ce", "classification loss of both heads (focal: gamma 2)", choices=CLS_LOSSES
    )
    hist_eq: bool = setting(False, "histogram equalization of the inputs")

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
        if self.rois_per_image is not None:
            self._check_at_least("rois_per_image", 1)
        if self.anchor_sizes is not None:
            levels = 1 if self.model == "vgg16" else 5
            if len(self.anchor_sizes) != levels or not all(a > 0 for a in self.anchor_sizes):
                raise ValueError(
                    f"DetConfig.anchor_sizes: {levels} positive size(s) for "
                    f"{self.model} (one per feature level), got {self.anchor_sizes!r}"
                )


def build_model(config: DetConfig, pretrained: bool = True):
    """The Faster R-CNN named by config.model; pretrained=False ignores the weight files (the
    state comes from a checkpoint)."""
    from ..models.detection import (
        fasterrcnn_resnet18_fpn,
        fasterrcnn_resnet50_fpn,
        fasterrcnn_vgg16,
    )

    w = config.weights if pretrained else None
    wb = config.weights_backbone if pretrained else None
    size = dict(
        min_size=config.min_size,
        max_size=config.max_size,
        box_loss=config.box_loss,
        cls_loss=config.cls_loss,
    )
    if config.rois_per_image is not None:
        size["box_batch_size_per_image"] = int(config.rois_per_image)
    if config.anchor_sizes is not None:  # vgg16's one level keeps the original's three sizes x
        size["rpn_anchor_generator"] = _anchors(config)  # three ratios, scaled
    if config.model == "resnet18_fpn":
        return fasterrcnn_resnet18_fpn(config.num_classes, weights=w, weights_backbone=wb, **size)
    if config.model == "resnet50_fpn":
        return fasterrcnn_resnet50_fpn(
            weights=w, num_classes=config.num_classes, weights_backbone=wb, **size
        )
    return fasterrcnn_vgg16(config.num_classes, weights=w or wb, **size)


def _anchors(config: DetConfig):
    """The configured anchor sizes: one per FPN level (ratios 0.5, 1, 2), or for vgg16 the
    original's sizes (128, 256, 512) x anchor_sizes[0] / 128."""
    from ..ops import AnchorGenerator

    ratios = (0.5, 1.0, 2.0)
    if config.model == "vgg16":
        f = float(config.anchor_sizes[0]) / 128
        return AnchorGenerator(((128 * f, 256 * f, 512 * f),), (ratios,))
    return AnchorGenerator(tuple((float(a),) for a in config.anchor_sizes), (ratios,) * 5)


@torch.no_grad()
def predict_detections(model, images, device, amp: bool = False) -> list[dict]:
    """Eval-mode detections of prepared images, as CPU tensors {"boxes", "scores", "labels"}."""
    device = torch.device(device)
    model.eval()
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
        out = model([im.to(device) for im in images])
    return [
        {k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in o.items()}
        for o in out
    ]


def detection_scores(preds: list[dict], targets: list[dict]) -> dict:
    """COCO mAP, mAP@0.5 and the RSNA score of predictions against targets."""
    from ..metrics import coco_map, rsna_score

    coco = coco_map(preds, targets)
    return {
        "map": float(coco["map"]),
        "map_50": float(coco["map_50"]),
        "rsna": float(rsna_score(preds, targets)),
    }


class DetTask(Task):
    """Detection on the trainer: the four Faster R-CNN losses summed per batch; validation
    mAP, mAP@0.5 and RSNA score."""

    name = "det"
    description = "train a Faster R-CNN detector"
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

    @staticmethod
    def epoch_line(row: dict) -> str:
        return (
            f"loss {row['loss']:.4f}, val mAP {row['val_map']:.3f}, "
            f"val AP50 {row['val_map_50']:.3f}, val RSNA {row['val_rsna']:.3f}"
        )

    def build_model(self, config, pretrained):
        return build_model(config, pretrained)

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
        return {**{k: float(losses[k].detach()) for k in LOSS_KEYS}, "loss": value}

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

    def validate(self, trainer) -> dict:
        """mAP, mAP@0.5 and RSNA score; under DDP the shards' predictions are gathered in the
        dataset's order and every process scores them all."""
        preds, targets = [], []
        for images, tgts in trainer.val_loader:
            preds += predict_detections(trainer.model, images, trainer.device, trainer.amp)
            targets += tgts
        if trainer.dist.enabled:
            preds = gather_shards(preds, trainer.dist.world_size)
            targets = gather_shards(targets, trainer.dist.world_size)
        s = detection_scores(preds, targets)
        return {"val_map": s["map"], "val_map_50": s["map_50"], "val_rsna": s["rsna"]}
