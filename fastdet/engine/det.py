"""The detection training loop: Faster R-CNN (ResNet-18/50 + FPN, or the original VGG16) with SGD
or Adam and step decay (the original work: lr 1e-3 divided by 10 every 20 epochs), optional linear
warmup, random flips, mixed precision on CUDA, DDP under torchrun, per-epoch metrics, atomic
checkpoints and exact resume.

Run folder (`out_dir`): config.json, last.pt (after every epoch), best.pt (best validation
mAP@0.5; lowest training loss without a validation set), metrics.csv and metrics.png.

Under torchrun (WORLD_SIZE > 1) every process runs the same call: each trains on its shard of the
training set (DistributedSampler, `batch_size` images per process and step) with gradients
averaged by DistributedDataParallel; the logged losses are means over all processes' batches.
Validation is sharded too (process r predicts images r, r + world, ...), the predictions are
gathered and every process scores the whole set, so all agree on best.pt. Only rank 0 writes
files; a NaN/inf loss on any process stops all of them.

Randomness: flips are drawn per image from a generator seeded by (seed, epoch, index), the
shuffle from (seed, epoch), and the learning rate of a step is a function of the step count and
epoch alone, so a resumed run computes what an uninterrupted one would have.

Input pipeline (`prepare_image`, shared by training, prediction and evaluation): optional
histogram equalization, then the image is brought to [0, 1] (divided by 255 when it fits in
0..255, else min-max scaled), grey repeated to 3 channels; the ResNet models normalize with
ImageNet's mean and std inside the model, vgg16 gets Caffe normalization here."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..data.transforms import (
    CaffeNormalize,
    Compose,
    HistogramEqualization,
    RandomHorizontalFlip,
    RandomVerticalFlip,
)
from . import distributed
from .checkpoint import (
    atomic_save,
    atomic_write,
    atomic_write_text,
    check_resumable,
    gather_rng_states,
    load_checkpoint,
    model_state,
    restore_training_state,
    run_checkpoint,
    training_state,
)
from .data import EpochSampler, item_seed
from .logging import progress, write_rows_csv
from .loop import check_loss, make_optimizer, mean, run_to_end
from .models import resolve_device

DET_MODELS = ("resnet18_fpn", "resnet50_fpn", "vgg16")
CHECKPOINT_FORMAT = "fastdet.det.v1"
LOSS_KEYS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")
DET_COLUMNS = (
    ("epoch",) + LOSS_KEYS + ("loss", "val_map", "val_map_50", "val_rsna", "lr", "seconds")
)
RESUMABLE_CHANGES = {"epochs", "progress", "device", "extra", "weights", "weights_backbone"}
WARMUP_FACTOR = 1e-3  # the warmup's first step runs at lr * WARMUP_FACTOR (torchvision's reference)


@dataclass
class DetConfig:
    """Settings of `train_detection`, saved in config.json and in every checkpoint."""

    model: str = "resnet18_fpn"
    num_classes: int = 2  # background included (RSNA: background + opacity)
    epochs: int = 40
    batch_size: int = 2
    lr: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    step_size: int = 20  # StepLR: lr *= gamma every step_size epochs
    gamma: float = 0.1
    warmup_steps: int = 0  # lr ramps linearly from lr * 0.001 over the first steps
    hflip: float = 0.0  # probability of a left-right flip of a training image
    vflip: float = 0.0  # probability of a top-bottom flip of a training image
    min_size: int = 600  # the model's resize: shorter side, capped by max_size
    max_size: int = 1000
    anchor_sizes: list | None = None  # RPN anchor side per feature level (None: the model's)
    rois_per_image: int | None = None  # RoIs sampled per training image (None: the model's)
    box_loss: str = "smooth_l1"  # both heads: "smooth_l1" (the model's sigmas) or "l1"
    cls_loss: str = "ce"  # both heads: "ce" or "focal" (gamma 2)
    hist_eq: bool = False  # histogram equalization before scaling to [0, 1]
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision; only ever used on CUDA
    progress: bool = True
    val_fraction: float = 0.2  # used by the command line to split the data
    weights: str | None = None  # detector state_dict file to start from
    weights_backbone: str | None = None  # torchvision classification state_dict (backbone)
    extra: dict = field(default_factory=dict)  # free-form notes (layout, data folder, ...)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        if self.model not in DET_MODELS:
            raise ValueError(f"DetConfig.model must be one of {DET_MODELS}, got {self.model!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"DetConfig.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "step_size", "min_size", "max_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DetConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.num_classes < 2:
            raise ValueError(
                f"DetConfig.num_classes counts the background: >= 2, got {self.num_classes}"
            )
        if self.max_size < self.min_size:
            raise ValueError(f"DetConfig.max_size ({self.max_size}) < min_size ({self.min_size})")
        if not self.lr > 0:
            raise ValueError(f"DetConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"DetConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("hflip", "vflip"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"DetConfig.{name} is a probability: in [0, 1], got {getattr(self, name)!r}"
                )
        if int(self.warmup_steps) != self.warmup_steps or self.warmup_steps < 0:
            raise ValueError(
                f"DetConfig.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}"
            )
        from ..models.detection._utils import check_loss_options

        check_loss_options(self.box_loss, self.cls_loss)
        if self.rois_per_image is not None and int(self.rois_per_image) < 1:
            raise ValueError(f"DetConfig.rois_per_image must be >= 1, got {self.rois_per_image!r}")
        if self.anchor_sizes is not None:
            levels = 1 if self.model == "vgg16" else 5
            if len(self.anchor_sizes) != levels or not all(a > 0 for a in self.anchor_sizes):
                raise ValueError(
                    f"DetConfig.anchor_sizes: {levels} positive size(s) for "
                    f"{self.model} (one per feature level), got {self.anchor_sizes!r}"
                )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DetConfig:
        """Inverse of to_dict; unknown keys raise."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"DetConfig: unknown setting(s) {unknown}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"


# ---------------------------------------------------------------------- model and inputs


def build_detector(config: DetConfig, pretrained: bool = True):
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


def prepare_image(image, config: DetConfig) -> torch.Tensor:
    """A dataset image [C, H, W] (file units) -> the model's float32 [3, H, W] input: histogram
    equalized (config.hist_eq) or scaled to [0, 1] (/ 255 when within 0..255, else min-max),
    grey repeated to 3 channels, Caffe-normalized for vgg16."""
    x = torch.as_tensor(image, dtype=torch.float32)
    if x.ndim == 2:
        x = x[None]
    if config.hist_eq:
        x = HistogramEqualization()({"image": x})["image"]
    elif not bool(torch.isfinite(x).all()) or (float(x.min()) >= 0 and float(x.max()) <= 255):
        x = x / 255.0  # NaN/inf pass through, to be reported by the loss check
    else:
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    elif x.shape[0] != 3:
        raise ValueError(f"detection needs 1 or 3 image channels, got {x.shape[0]}")
    if config.model == "vgg16":
        x = CaffeNormalize(input_max=1.0)({"image": x})["image"]
    return x.contiguous()


class DetTensors(torch.utils.data.Dataset):
    """(image [3, H, W], target {"boxes", "labels"}) pairs of a dataset of sample dicts; an
    image without boxes gives an empty target (a negative).

    augment=True applies config.hflip / config.vflip (image and boxes flipped together); call
    set_epoch(e) before each epoch: image i of epoch e draws from a generator seeded by
    (seed, e, i), whatever the process, worker or order that asks for it."""

    def __init__(self, dataset, config: DetConfig, augment: bool = False):
        self.dataset, self.config = dataset, config
        self.seed, self.epoch = int(config.seed), 0
        self.generator = torch.Generator()
        flips = []
        if augment and config.hflip > 0:
            flips.append(RandomHorizontalFlip(config.hflip, self.generator))
        if augment and config.vflip > 0:
            flips.append(RandomVerticalFlip(config.vflip, self.generator))
        self.flips = Compose(flips) if flips else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        s = self.dataset[i]
        image = s["image"]
        boxes = torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1)
        if self.flips is not None:
            image = torch.as_tensor(image, dtype=torch.float32)
            image = image[None] if image.ndim == 2 else image
            self.generator.manual_seed(item_seed(self.seed, self.epoch, i))
            out = self.flips({"image": image, "boxes": boxes, "labels": labels})
            image, boxes = out["image"], out["boxes"]
        return prepare_image(image, self.config), {"boxes": boxes, "labels": labels}


def _collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The multiplier of the step-decay learning rate at optimizer step `step` (0-based, counted
    over the whole run): WARMUP_FACTOR at step 0 rising linearly to 1 at step warmup_steps, 1 from
    there on (torchvision's detection reference: factor * (1 - a) + a, a = step / warmup_steps)."""
    if step >= warmup_steps:
        return 1.0
    a = step / warmup_steps
    return WARMUP_FACTOR * (1 - a) + a


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


# ---------------------------------------------------------------------- training


def train_detection(
    config: DetConfig, train_set, val_set=None, out_dir=None, resume: bool = False
) -> list[dict]:
    """Trains a detector; returns the history (one dict per epoch, DET_COLUMNS).

    train_set, val_set: datasets of sample dicts ({"image" [C, H, W] file units, "boxes" [K, 4]
    x1y1x2y2, "labels" [K]}); val_set may be None. resume=True continues from out_dir/last.pt
    with every state restored (model, optimizer, scheduler, scaler, RNGs, history); only
    RESUMABLE_CHANGES may differ from the saved config. Without resume a folder holding last.pt
    is refused. Under torchrun (WORLD_SIZE > 1) each process calls this with the same arguments;
    rank 0 writes the files. Raises NonFiniteLossError when the summed loss is NaN or inf."""
    if out_dir is None:
        raise ValueError("train_detection: out_dir is required (the run folder)")
    return run_to_end(DetTrainer(config, train_set, val_set, Path(out_dir), resume))


class DetTrainer:
    """State of one detection run; `fit` runs the remaining epochs, `close` leaves the process
    group it joined (under torchrun)."""

    def __init__(self, config: DetConfig, train_set, val_set, out_dir: Path, resume: bool):
        config.validate()
        if len(train_set) == 0:
            raise ValueError("train_detection: the training set is empty")
        self.out, self.config = out_dir, config
        device = resolve_device(config.device)
        self.dist = distributed.setup(device)
        try:
            self.device = distributed.device_for(device, self.dist)
            self._init(config, train_set, val_set, resume)
        except BaseException:
            self.close()
            raise

    def _init(self, config: DetConfig, train_set, val_set, resume: bool) -> None:
        ckpt = self._resume_checkpoint(resume)
        if ckpt:  # settings added since the checkpoint was written count as their defaults
            check_resumable(
                config, DetConfig.from_dict(ckpt["config"]).to_dict(), RESUMABLE_CHANGES
            )
        self.amp = bool(config.amp) and self.device.type == "cuda"
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        torch.manual_seed(config.seed)
        self.model = build_detector(config, pretrained=ckpt is None).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = make_optimizer(config, params, config.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, config.step_size, config.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self._data(config, train_set, val_set)
        self.epoch, self.global_step, self.history = 0, 0, []
        self.best, self.best_epoch = -math.inf, 0
        if ckpt:  # under DDP each process resumes its own sampling stream (anchors, RoIs)
            restore_training_state(self, ckpt)
        # Every trainable parameter receives a gradient at every step, even from a batch
        # without boxes (the box losses are then sums over empty selections, still in the
        # graph), so DDP needs no find_unused_parameters. Frozen layers have requires_grad off.
        self.train_model = self.model
        if self.dist.enabled:  # rank 0's weights broadcast here, gradients averaged per step
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DDP(self.model, device_ids=ids)
        if self.dist.is_main:
            atomic_write_text(self.out / "config.json", config.to_json())

    def _data(self, config: DetConfig, train_set, val_set) -> None:
        pin = self.device.type == "cuda"
        self.train_data = DetTensors(train_set, config, augment=True)
        if self.dist.enabled:
            self.sampler = DistributedSampler(
                self.train_data,
                self.dist.world_size,
                self.dist.rank,
                shuffle=True,
                seed=config.seed,
            )
        else:
            self.sampler = EpochSampler(len(train_set), config.seed)
        self.train_loader = DataLoader(
            self.train_data,
            config.batch_size,
            sampler=self.sampler,
            collate_fn=_collate,
            pin_memory=pin,
        )
        self.val_loader = None
        if val_set is not None and len(val_set):
            val = DetTensors(val_set, config)
            if self.dist.enabled:  # process r: images r, r + world, ... (none counted twice)
                val = Subset(val, range(self.dist.rank, len(val), self.dist.world_size))
            self.val_loader = DataLoader(
                val, config.batch_size, collate_fn=_collate, pin_memory=pin
            )

    def _resume_checkpoint(self, resume: bool):
        ckpt = run_checkpoint(self.out, resume)
        if ckpt is not None and ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.out / 'last.pt'}: not a {CHECKPOINT_FORMAT} checkpoint")
        return ckpt

    def close(self) -> None:
        distributed.teardown(self.dist)

    def fit(self) -> list[dict]:
        for epoch in range(self.epoch, self.config.epochs):
            start = time.perf_counter()
            lr = self.opt.param_groups[0]["lr"]  # the step decay's; warmup scales early steps
            self.sampler.set_epoch(epoch)
            self.train_data.set_epoch(epoch)
            row = {"epoch": epoch + 1, **self._train_epoch(epoch)}
            self.sched.step()
            val = self._validate()
            row.update(
                val_map=val["map"],
                val_map_50=val["map_50"],
                val_rsna=val["rsna"],
                lr=lr,
                seconds=time.perf_counter() - start,
            )
            self.history.append(row)
            self.epoch = epoch + 1
            self._save(row)
        distributed.barrier()
        return self.history

    def _train_epoch(self, epoch: int) -> dict:
        """Mean of each loss (and of their sum) over the epoch's batches (of all processes)."""
        self.model.train()
        sums = [0.0] * (len(LOSS_KEYS) + 2)  # the losses, their sum, the batch count
        bar = progress(
            self.train_loader,
            len(self.train_loader),
            f"epoch {epoch + 1}/{self.config.epochs}",
            self.config.progress and self.dist.is_main,
        )
        for step, (images, targets) in enumerate(bar, start=1):
            images = [im.to(self.device, non_blocking=True) for im in images]
            targets = [
                {k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets
            ]
            losses, failure = self._forward(images, targets)
            loss = (
                sum(v.float() for v in losses.values())
                if losses is not None
                else torch.full((), math.nan, device=self.device)
            )
            value = self._check(loss, (epoch + 1, step, self.global_step + 1), failure)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self._optimizer_step()
            for i, k in enumerate(LOSS_KEYS):
                sums[i] += float(losses[k].detach())
            sums[-2] += value
            sums[-1] += 1
            self.global_step += 1
            bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        total = distributed.all_reduce_sum(sums, self.device)
        return {k: mean(v, total[-1]) for k, v in zip(LOSS_KEYS + ("loss",), total)}

    def _forward(self, images, targets):
        """(loss dict, None), or (None, the error) when diverged weights made the ops refuse a
        NaN/inf input (e.g. box deltas before the loss): reported like a NaN loss, on every
        process."""
        try:
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                return self.train_model(images, targets), None
        except ValueError as e:
            if "NaN or inf" not in str(e):
                raise
            return None, e

    def _check(self, loss: torch.Tensor, where, failure=None) -> float:
        """The loss as a float; raises on every process when any process has NaN/inf (before
        the backward pass, so no process waits for the others' gradients)."""
        what = f"loss (the forward pass failed: {failure})" if failure else "loss"
        return check_loss(loss, where, what, self.dist, self.device, failure)

    def _optimizer_step(self) -> None:
        """One update at the step decay's rate times warmup_factor(global_step); the optimizer
        keeps the step decay's rate between steps (so the scheduler and checkpoints hold no
        warmup state: it is recomputed from global_step)."""
        factor = warmup_factor(self.global_step, self.config.warmup_steps)
        base = [g["lr"] for g in self.opt.param_groups]
        if factor != 1.0:
            for g, lr in zip(self.opt.param_groups, base):
                g["lr"] = lr * factor
        try:
            self.scaler.step(self.opt)
        finally:
            for g, lr in zip(self.opt.param_groups, base):
                g["lr"] = lr
        self.scaler.update()

    def _validate(self) -> dict:
        """mAP, mAP@0.5 and RSNA score on the validation set (NaN without one). Under DDP each
        process predicts its shard with rank 0's BatchNorm statistics; the predictions are
        gathered in the dataset's order and every process scores them all."""
        if self.val_loader is None:
            return {"map": math.nan, "map_50": math.nan, "rsna": math.nan}
        if self.dist.enabled:  # BatchNorm running statistics drift apart between processes
            distributed.broadcast_buffers(self.model)
        preds, targets = [], []
        for images, tgts in self.val_loader:
            preds += predict_detections(self.model, images, self.device, self.amp)
            targets += tgts
        if self.dist.enabled:
            preds = _gather_shards(preds, self.dist.world_size)
            targets = _gather_shards(targets, self.dist.world_size)
        return detection_scores(preds, targets)

    def _save(self, row: dict) -> None:
        """last.pt every epoch, best.pt when the score improves, the CSV and the plot; rank 0
        only. The checkpoint holds every process's RNG states (each samples its own anchors
        and RoIs). The other processes wait so none runs ahead."""
        score = row["val_map_50"] if self.val_loader is not None else -row["loss"]
        improved = not math.isnan(score) and score > self.best
        if improved:
            self.best, self.best_epoch = score, row["epoch"]
        ranks = gather_rng_states(self.dist)
        if self.dist.is_main:
            ckpt = training_state(self, CHECKPOINT_FORMAT, ranks)
            atomic_save(ckpt, self.out / "last.pt")
            if improved:
                atomic_save(ckpt, self.out / "best.pt")
            write_det_metrics_csv(self.out / "metrics.csv", self.history)
            plot_det_history(self.out / "metrics.png", self.history)
        distributed.barrier()


def _gather_shards(items: list, world: int) -> list:
    """The lists of all processes, process r holding items r, r + world, ..., merged back into
    one list in the original order."""
    parts = distributed.all_gather_object(items)
    n = sum(len(p) for p in parts)
    return [parts[i % world][i // world] for i in range(n)]


# ---------------------------------------------------------------------- files


def write_det_metrics_csv(path, history: list) -> Path:
    """The per-epoch CSV (DET_COLUMNS), rewritten whole and atomically."""
    return write_rows_csv(path, history, DET_COLUMNS)


def plot_det_history(path, history: list) -> Path | None:
    """Losses and validation mAP / mAP@0.5 / RSNA score per epoch as a PNG; None when empty."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    try:
        for k in LOSS_KEYS + ("loss",):
            ax1.plot(ep, [r[k] for r in history], "o-", label=k)
        ax1.set(xlabel="epoch", ylabel="loss", title="Training loss")
        ax1.legend(fontsize=7)
        for k, name in (("val_map", "mAP"), ("val_map_50", "mAP@0.5"), ("val_rsna", "RSNA")):
            ax2.plot(ep, [r[k] for r in history], "o-", label=name)
        ax2.set(xlabel="epoch", ylabel="score", ylim=(0, 1), title="Validation")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return Path(path)


def load_detector(checkpoint, device="cpu"):
    """(model in eval mode on `device`, DetConfig) from a detection checkpoint."""
    ckpt = load_checkpoint(checkpoint)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{checkpoint}: not a detection checkpoint ({CHECKPOINT_FORMAT})")
    config = DetConfig.from_dict(ckpt["config"])
    model = build_detector(config, pretrained=False)
    model.load_state_dict(model_state(ckpt))
    return model.to(device).eval(), config


# ---------------------------------------------------------------------- evaluation


def match_at(pred: dict, target: dict, iou: float = 0.5) -> np.ndarray:
    """is_tp [D] of one image's detections taken by decreasing score, each matched greedily to
    the free ground-truth box of highest IoU >= `iou`."""
    from ..ops import box_iou

    scores = np.asarray(pred["scores"], np.float64)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(scores), bool)
    gt = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    if len(gt) == 0 or len(scores) == 0:
        return tp
    ious = box_iou(torch.as_tensor(pred["boxes"], dtype=torch.float32).reshape(-1, 4), gt).numpy()
    free = np.ones(len(gt), bool)
    for d in order:
        cand = np.where(free, ious[d], -1.0)
        g = int(cand.argmax())
        if cand[g] >= iou:
            tp[d], free[g] = True, False
    return tp


def evaluate_detection(
    model,
    config: DetConfig,
    dataset,
    device,
    score_threshold: float = 0.5,
    figures=None,
    max_figures: int = 20,
) -> dict:
    """RSNA score (of all detections, and of those scoring >= score_threshold, as a thresholded
    submission would be scored), COCO mAP / AP50 / AP75 over `dataset`, and per image the TP / FP
    / FN at IoU 0.5 among detections scoring >= score_threshold. figures: a folder for
    pr_curve.png and, for the first max_figures images, boxes/<id>.png (detections >=
    score_threshold red, ground truth green; the row's "figure")."""
    from ..metrics import coco_map, rsna_score

    preds, kept, targets, rows = [], [], [], []
    for i in range(len(dataset)):
        s = dataset[i]
        pred = predict_detections(model, [prepare_image(s["image"], config)], device)[0]
        target = {
            "boxes": torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1),
        }
        preds.append(pred)
        kept.append({k: v[pred["scores"] >= score_threshold] for k, v in pred.items()})
        targets.append(target)
        rows.append(_image_row(s.get("id", str(i)), kept[-1], target))
        if figures is not None and i < max_figures:
            rows[-1]["figure"] = str(_box_figure(Path(figures), s, kept[-1]))
    coco = coco_map(preds, targets)
    result = {
        "images": len(preds),
        "rsna": float(rsna_score(preds, targets)),
        "rsna_thresholded": float(rsna_score(kept, targets)),
        "map": float(coco["map"]),
        "map_50": float(coco["map_50"]),
        "map_75": float(coco["map_75"]),
        "score_threshold": score_threshold,
        "tp": sum(r["tp"] for r in rows),
        "fp": sum(r["fp"] for r in rows),
        "fn": sum(r["fn"] for r in rows),
        "per_image": rows,
    }
    if figures is not None:
        result["pr_curve"] = str(_pr_figure(Path(figures), preds, targets))
    return result


def _image_row(image_id: str, kept: dict, target: dict) -> dict:
    tp = match_at(kept, target)
    return {
        "id": image_id,
        "tp": int(tp.sum()),
        "fp": int((~tp).sum()),
        "fn": int(len(target["boxes"]) - tp.sum()),
    }


def _box_figure(folder: Path, sample: dict, kept: dict) -> Path:
    """boxes/<id>.png, enlarged to about 512 px when the image is smaller."""
    name = re.sub(r"[^\w.-]", "_", str(sample.get("id", "image")))
    side = max(torch.as_tensor(sample["image"]).shape[-2:])
    return draw_boxes(
        folder / "boxes" / f"{name}.png",
        sample["image"],
        kept,
        truth=sample["boxes"],
        scale=max(1, 512 // int(side)),
    )


def _pr_figure(folder: Path, preds: list, targets: list) -> Path:
    """pr_curve.png of all detections matched at IoU 0.5."""
    from ..metrics import pr_curve, save_pr_curves

    scores = [p["scores"].numpy() for p in preds]
    tps = [match_at(p, t) for p, t in zip(preds, targets)]
    curve = pr_curve(
        np.concatenate(scores) if scores else np.zeros(0),
        np.concatenate(tps) if tps else np.zeros(0, bool),
        sum(len(t["boxes"]) for t in targets),
    )
    return save_pr_curves(folder / "pr_curve.png", {"IoU 0.5": curve}, "Precision-recall (IoU 0.5)")


def format_det_report(result: dict) -> str:
    """The figures of evaluate_detection as text lines."""
    lines = [
        f"images: {result['images']}",
        f"RSNA score: {result['rsna']:.4f} (all detections), "
        f"{result['rsna_thresholded']:.4f} (score >= {result['score_threshold']:g})",
        f"COCO AP: {result['map']:.4f}",
        f"AP50: {result['map_50']:.4f}",
        f"AP75: {result['map_75']:.4f}",
        f"at IoU 0.5, score >= {result['score_threshold']:g}: TP {result['tp']}, "
        f"FP {result['fp']}, FN {result['fn']}",
        "id\tTP\tFP\tFN",
    ]
    lines += [f"{r['id']}\t{r['tp']}\t{r['fp']}\t{r['fn']}" for r in result["per_image"]]
    return "\n".join(lines)


DET_LAYOUTS = ("rsna", "dsb2018")


def open_det_dataset(layout: str, root, split=None, seed: int = 0, val_fraction: float = 0.2):
    """RSNADataset ("rsna") or DSB2018Dataset ("dsb2018", boxes of the nuclei), split None /
    "train" / "val" with split_seed=seed."""
    from ..data import DSB2018Dataset, RSNADataset

    if layout not in DET_LAYOUTS:
        raise ValueError(f"layout must be one of {DET_LAYOUTS}, got {layout!r}")
    cls = RSNADataset if layout == "rsna" else DSB2018Dataset
    return cls(root, split=split, split_seed=seed, val_fraction=val_fraction)


def draw_boxes(path, image, pred: dict, truth=None, scale: int = 1) -> Path:
    """A PNG of the image (grey, min-max scaled, enlarged `scale` times) with the detections in
    red, their scores beside, and the ground-truth boxes `truth` [K, 4] (if given) in green."""
    from PIL import Image, ImageDraw

    x = torch.as_tensor(image, dtype=torch.float32)
    x = x.mean(0) if x.ndim == 3 else x
    lo, hi = float(x.min()), float(x.max())
    grey = ((x - lo) / (hi - lo) * 255 if hi > lo else torch.zeros_like(x)).to(torch.uint8).numpy()
    im = Image.fromarray(grey).convert("RGB")
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for box in [] if truth is None else torch.as_tensor(truth).reshape(-1, 4).tolist():
        draw.rectangle([v * scale for v in box], outline=(0, 255, 0), width=2)
    for box, score in zip(pred["boxes"].tolist(), pred["scores"].tolist()):
        draw.rectangle([v * scale for v in box], outline=(255, 0, 0), width=2)
        draw.text((box[0] * scale + 2, box[1] * scale + 1), f"{score:.2f}", fill=(255, 255, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path
