"""The classification task: ResNet-18/34/50/101 or DenseNet-121 with cross-entropy, weighted by
inverse class frequency (or class-balanced sampling, or neither), flips, SGD or Adam with step
decay. The trainer (engine.trainer) runs it; best.pt is the best validation macro ROC AUC.

On each validation the Youden's J threshold of the positive class (config.positive_class:
"Lung Opacity" on RSNA data, else the last class, unless named) is chosen on the validation
split and stored in the checkpoint ("threshold": the midpoint below the chosen score, see
threshold_below), so a gate (e.g. detection's) can read it with
`load_classifier` and call `predict_probabilities` / `positive_probability` on its images."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ....data.datasets import LUNG_OPACITY
from ....metrics import balanced_accuracy, roc_auc, youden_threshold
from ....models.classification import MODELS, classifier
from ...checkpoint import load_checkpoint, model_state
from ...config import HELD_OUT_TEST, OPTIMIZERS, RunConfig, setting
from ...loading import load_task_checkpoint
from ...sampling import gather_shards
from ...trainer import Task
from .data import ClsTensors, dataset_classes, inverse_frequency_weights, labels_for
from .data import prepare_image as prepare_cls_image
from .lungs import lung_cropper

CHECKPOINT_FORMAT = "fastdet.cls.v1"
BALANCE = ("weights", "sampling", "none")


@dataclasses.dataclass
class ClsConfig(RunConfig):
    """Settings of a classification run (the shared ones in RunConfig). weights_backbone: a
    torchvision-format state_dict file of the same architecture (ImageNet weights: the head is
    replaced when the class count differs, a grey stem sums the RGB filters); weights: a
    classification checkpoint or state_dict of this very network to start from."""

    task = "cls"

    model: str = setting("resnet18", "classifier network", choices=tuple(MODELS))
    classes: list | None = setting(
        None,
        "class names in label order; must be the data's (default: the data's: rsna's three "
        "classes, or the class folders' names, sorted)",
        nargs="+",
        type=str,
        metavar="NAME",
    )
    in_channels: int | None = setting(
        None, "image channels the network takes (default: the first training image's)"
    )
    size: int = setting(224, "side of the square the images are resized to (the original: 512)")
    epochs: int = setting(20, "training epochs")
    test_fraction: float = setting(0.2, HELD_OUT_TEST)
    batch_size: int = setting(16, "images per step (per process under torchrun)")
    optimizer: str = setting("adam", "optimizer (SGD with momentum, or Adam)", choices=OPTIMIZERS)
    lr: float = setting(1e-4, "learning rate")
    weight_decay: float = setting(1e-4, "L2 weight decay")
    gamma: float = setting(0.1, "learning-rate factor every --step-size epochs")
    vflip: float = setting(0.0, "probability of a top-bottom flip of a training image", metavar="P")
    balance: str = setting(
        "weights",
        "class imbalance: inverse-frequency loss weights, class-balanced sampling, or none",
        choices=BALANCE,
    )
    lungs: str | None = setting(
        None,
        "segmentation checkpoint of the lung fields: each image is cropped to the bounding box "
        "of its predicted lungs (widened by --lung-margin) before classification, in training, "
        "prediction, evaluation and a detection gate alike",
        metavar="SEG_CKPT",
    )
    lung_margin: float = setting(
        0.05, "with --lungs: margin on each side, as a fraction of the lung box's height / width"
    )
    positive_class: str | None = setting(
        None,
        "class whose Youden's J threshold is stored (default: 'Lung Opacity' when a class, "
        "else the last class)",
        metavar="NAME",
    )

    def validate(self) -> None:
        super().validate()
        self._check_at_least("size", 8)
        if not (math.isfinite(self.lung_margin) and self.lung_margin >= 0):
            raise ValueError(f"ClsConfig.lung_margin: a number >= 0, got {self.lung_margin!r}")
        if self.lungs is not None:  # absolute, so predict / evaluate / a gate find it anywhere
            self.lungs = str(Path(self.lungs).resolve())
        if self.in_channels is not None:
            self._check_at_least("in_channels", 1)
        if self.classes is not None:
            names = [str(c) for c in self.classes]
            if len(names) < 2 or len(set(names)) != len(names):
                raise ValueError(
                    f"ClsConfig.classes: at least 2 distinct names, got {self.classes!r}"
                )
            if self.positive_class is not None and self.positive_class not in names:
                raise ValueError(
                    f"ClsConfig.positive_class {self.positive_class!r} is not one of the "
                    f"classes {names}"
                )

    @property
    def positive(self) -> str:
        """The positive class's name (classes must be set)."""
        if self.positive_class is not None:
            return self.positive_class
        return LUNG_OPACITY if LUNG_OPACITY in self.classes else self.classes[-1]


def build_model(config: ClsConfig, pretrained: bool = True) -> torch.nn.Module:
    """The classifier of config.model with len(config.classes) outputs; pretrained: read
    config.weights_backbone and config.weights (a fresh run; a resumed or loaded one takes its
    weights from the checkpoint)."""
    if not config.classes:
        raise ValueError("ClsConfig.classes is not set (the trainer takes it from the data)")
    model = classifier(
        config.model,
        num_classes=len(config.classes),
        in_channels=config.in_channels or 1,
        weights=config.weights_backbone if pretrained else None,
    )
    if pretrained and config.weights:
        state = model_state(load_checkpoint(config.weights))
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(
                f"{config.weights}: does not fit this {config.model} (classes and in_channels "
                f"must match): {str(e).splitlines()[0]}"
            ) from e
    return model


class ClsTask(Task):
    """Classification on the trainer: cross-entropy per batch; validation loss, accuracy,
    balanced accuracy and macro ROC AUC, and the positive class's Youden's J threshold."""

    name = "cls"
    title = "classification"
    description = "train an image classifier (ResNet, DenseNet)"
    config_class = ClsConfig
    checkpoint_format = CHECKPOINT_FORMAT
    loss_names = ("train_loss",)
    loss_key = "train_loss"
    metric_names = ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_auc", "val_threshold")
    best_metric = "val_auc"
    drop_single = True  # BatchNorm on 1x1 maps (small images) needs two values per channel
    plot = (
        ("Loss", (("train_loss", "train"), ("val_loss", "validation"))),
        (
            "Validation",
            (
                ("val_auc", "macro ROC AUC"),
                ("val_accuracy", "accuracy"),
                ("val_balanced_accuracy", "balanced accuracy"),
            ),
        ),
    )

    def __init__(self, config: ClsConfig):
        super().__init__(config)
        self.threshold = self.youden_j = None
        self.class_weights, self.class_counts = None, []

    @staticmethod
    def epoch_line(row: dict) -> str:
        return (
            f"train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"val accuracy {row['val_accuracy']:.3f}, val balanced accuracy "
            f"{row['val_balanced_accuracy']:.3f}, val AUC {row['val_auc']:.3f}"
        )

    def prepare(self, config, train_set, ckpt):
        changes = {}
        found = dataset_classes(train_set)
        if ckpt:
            saved = ckpt["config"]
            changes = {
                k: saved[k] for k in ("classes", "in_channels") if getattr(config, k) is None
            }
        elif config.classes is None:
            changes["classes"] = found
        classes = changes.get("classes", config.classes)
        if list(classes) != list(found) and not set(found) <= set(classes):
            raise ValueError(f"--classes {list(classes)} differ from the data's classes {found}")
        if config.in_channels is None and "in_channels" not in changes:
            changes["in_channels"] = int(torch.as_tensor(train_set[0]["image"]).shape[0])
        config = dataclasses.replace(config, **changes)
        labels = labels_for(train_set, config.classes)
        self.class_counts = np.bincount(labels, minlength=len(config.classes)).tolist()
        self.class_weights = inverse_frequency_weights(labels, len(config.classes))
        return config

    def build_model(self, config, pretrained):
        return build_model(config, pretrained)

    def dataset(self, data, augment):
        return ClsTensors(data, self.config, augment)

    def setup(self, trainer) -> None:
        w = self.class_weights if self.config.balance == "weights" else None
        self.loss_weight = None if w is None else torch.as_tensor(w, dtype=torch.float32)
        if self.loss_weight is not None:
            self.loss_weight = self.loss_weight.to(trainer.device)

    def train_step(self, trainer, batch, where) -> dict:
        x, y = (t.to(trainer.device, non_blocking=True) for t in batch)
        trainer.model.train()
        with trainer.autocast():
            logits = trainer.train_model(x)
        loss = F.cross_entropy(logits.float(), y, weight=self.loss_weight)
        value = trainer.check_loss(loss, where)
        trainer.update(loss)
        return {"train_loss": value}

    @torch.no_grad()
    def validate(self, trainer) -> dict:
        """Unweighted mean cross-entropy, accuracy, balanced accuracy and macro ROC AUC (the
        mean over the classes with an AUC: present, and not every image); the positive class's
        Youden's J threshold on P(class) (NaN when the split lacks positives or negatives:
        nothing is stored then). Under DDP the shards' outputs are gathered in order."""
        model = trainer.model.eval()
        logits, labels = [], []
        for x, y in trainer.val_loader:
            with trainer.autocast():
                logits += list(model(x.to(trainer.device)).float().cpu())
            labels += y.tolist()
        if trainer.dist.enabled:
            logits = gather_shards(logits, trainer.dist.world_size)
            labels = gather_shards(labels, trainer.dist.world_size)
        logits, y_t = torch.stack(logits).double(), torch.tensor(labels, dtype=torch.int64)
        loss = float(F.cross_entropy(logits, y_t))
        p, y = class_probabilities(logits).numpy(), y_t.numpy()
        aucs = roc_auc(p, y)
        macro = float(np.nanmean(aucs)) if not np.isnan(aucs).all() else math.nan
        pos = self.config.classes.index(self.config.positive)
        threshold, j = youden_threshold(p[:, pos], y == pos)
        threshold = threshold_below(p[:, pos], threshold)
        if not math.isnan(threshold):
            self.threshold, self.youden_j = threshold, j
        return {
            "val_loss": loss,
            "val_accuracy": float((p.argmax(1) == y).mean()),
            "val_balanced_accuracy": balanced_accuracy(p.argmax(1), y, len(self.config.classes)),
            "val_auc": macro,
            "val_threshold": threshold,
        }

    def state_dict(self) -> dict:
        """The class names and training counts, and the positive class's Youden's J threshold
        of the latest validation whose split had positives and negatives (None before one):
        best.pt holds its own epoch's (the metrics CSV's val_threshold, NaN where none)."""
        return {
            "classes": list(self.config.classes),
            "class_counts": list(self.class_counts),
            "positive_class": self.config.positive,
            "threshold": self.threshold,
            "youden_j": self.youden_j,
        }

    def load_state_dict(self, ckpt: dict) -> None:
        self.threshold, self.youden_j = ckpt.get("threshold"), ckpt.get("youden_j")


# ---------------------------------------------------------------------- inference


def load_classifier(
    path, device="cpu", bf16: bool = False, channels_last: bool = False
) -> tuple[torch.nn.Module, ClsConfig, float | None]:
    """(eval-mode classifier on `device`, its config, the stored threshold of the positive class
    config.positive, or None when the run had no validation with both kinds of image) from a
    classification checkpoint; another kind of checkpoint is a ValueError naming it. bf16,
    channels_last: as load_model's, for the classifier (the lung crop's U-Net stays as trained)."""
    model, config, ckpt = load_task_checkpoint(ClsTask, path, device, bf16, channels_last)
    threshold = ckpt.get("threshold")
    return model, config, None if threshold is None else float(threshold)


def _batches(images, batch_size: int):
    if torch.is_tensor(images) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)):
        raise TypeError(
            "images must be a list of [C, H, W] images or a [B, C, H, W] tensor, got "
            f"{type(images).__name__}"
        )
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size]


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """P: the float64 softmax of logits [N, K]. The one computation of P behind validation's
    stored threshold, `evaluate cls`, `predict cls` and the gate, so they agree on the same
    logits to the last bit."""
    return torch.softmax(logits.double(), 1)


def threshold_below(scores, chosen: float) -> float:
    """The threshold stored for a score `chosen` among validation scores: the midpoint between
    it and the next lower score (half of it when none is lower), so an image scoring `chosen`
    stays at or above the threshold when its P is recomputed with other rounding (another
    batch, another image size). NaN stays NaN."""
    if math.isnan(chosen):
        return chosen
    scores = np.asarray(scores, np.float64)
    lower = scores[scores < chosen]
    return float((chosen + (lower.max() if lower.size else 0.0)) / 2)


@torch.no_grad()
def predict_probabilities(
    model, config, images, device=None, batch_size: int = 16, amp: bool = False
) -> torch.Tensor:
    """float64 [N, K] class probabilities (class_probabilities; columns in config.classes'
    order, on the CPU) of N images: a list of [C, H, W] or [H, W] tensors or arrays of any size
    and units (dataset images in file units, or detection's [3, H, W] inputs in [0, 1]: the same
    probabilities, see data), or a [B, C, H, W] tensor. device: the model's by default.
    A classifier with a lung stage (config.lungs) crops each image to its lungs first."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    crop = lung_cropper(config, device)
    out = []
    for chunk in _batches(images, batch_size):
        if crop is not None:
            chunk = [crop.crop(im) for im in chunk]
        x = torch.stack([prepare_cls_image(im, config) for im in chunk]).to(device)
        with torch.autocast(
            device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"
        ):
            logits = model(x).float()
        out.append(class_probabilities(logits).cpu())
    return torch.cat(out) if out else torch.zeros(0, len(config.classes), dtype=torch.float64)


def positive_probability(model, config, images, cls: str | None = None, **kw) -> torch.Tensor:
    """float64 [N]: P(cls) of each image (default config.positive: "Lung Opacity" for RSNA
    classifiers), from predict_probabilities (same keywords)."""
    name = config.positive if cls is None else cls
    if name not in config.classes:
        raise ValueError(f"cls {name!r} is not one of the classifier's classes {config.classes}")
    return predict_probabilities(model, config, images, **kw)[:, config.classes.index(name)]
