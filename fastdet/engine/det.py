"""The detection training loop: Faster R-CNN (ResNet-18/50 + FPN, or the original VGG16) with SGD
or Adam and step decay (the original work: lr 1e-3 divided by 10 every 20 epochs), mixed precision
on CUDA, per-epoch metrics, atomic checkpoints and exact resume. Single process (no DDP yet).

Run folder (`out_dir`): config.json, last.pt (after every epoch), best.pt (best validation
mAP@0.5; lowest training loss without a validation set), metrics.csv and metrics.png.

Input pipeline (`prepare_image`, shared by training, prediction and evaluation): optional
histogram equalization, then the image is brought to [0, 1] (divided by 255 when it fits in
0..255, else min-max scaled), grey repeated to 3 channels; the ResNet models normalize with
ImageNet's mean and std inside the model, vgg16 gets Caffe normalization here."""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.transforms import CaffeNormalize, HistogramEqualization
from .checkpoint import (atomic_save, atomic_write, atomic_write_text, check_resumable,
                         load_checkpoint, model_state, restore_training_state, run_checkpoint,
                         training_state)
from .data import EpochSampler
from .logging import progress, write_rows_csv
from .models import resolve_device
from .seg import NonFiniteLossError, _div, _optimizer

DET_MODELS = ("resnet18_fpn", "resnet50_fpn", "vgg16")
CHECKPOINT_FORMAT = "fastdet.det.v1"
LOSS_KEYS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")
DET_COLUMNS = ("epoch",) + LOSS_KEYS + ("loss", "val_map", "val_map_50", "val_rsna", "lr", "seconds")
RESUMABLE_CHANGES = {"epochs", "progress", "device", "extra", "weights", "weights_backbone"}


@dataclass
class DetConfig:
    """Settings of `train_detection`, saved in config.json and in every checkpoint."""

    model: str = "resnet18_fpn"
    num_classes: int = 2             # background included (RSNA: background + opacity)
    epochs: int = 40
    batch_size: int = 2
    lr: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    step_size: int = 20              # StepLR: lr *= gamma every step_size epochs
    gamma: float = 0.1
    min_size: int = 600              # the model's resize: shorter side, capped by max_size
    max_size: int = 1000
    hist_eq: bool = False            # histogram equalization before scaling to [0, 1]
    seed: int = 0
    device: str = "auto"
    amp: bool = True                 # mixed precision; only ever used on CUDA
    progress: bool = True
    val_fraction: float = 0.2        # used by the command line to split the data
    weights: str | None = None       # detector state_dict file to start from
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
            raise ValueError(f"DetConfig.num_classes counts the background: >= 2, got {self.num_classes}")
        if self.max_size < self.min_size:
            raise ValueError(f"DetConfig.max_size ({self.max_size}) < min_size ({self.min_size})")
        if not self.lr > 0:
            raise ValueError(f"DetConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"DetConfig.val_fraction must be in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DetConfig":
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
    from ..models.detection import fasterrcnn_resnet18_fpn, fasterrcnn_resnet50_fpn, fasterrcnn_vgg16

    w = config.weights if pretrained else None
    wb = config.weights_backbone if pretrained else None
    size = dict(min_size=config.min_size, max_size=config.max_size)
    if config.model == "resnet18_fpn":
        return fasterrcnn_resnet18_fpn(config.num_classes, weights=w, weights_backbone=wb, **size)
    if config.model == "resnet50_fpn":
        return fasterrcnn_resnet50_fpn(weights=w, num_classes=config.num_classes,
                                       weights_backbone=wb, **size)
    return fasterrcnn_vgg16(config.num_classes, weights=w or wb, **size)


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
    image without boxes gives an empty target (a negative)."""

    def __init__(self, dataset, config: DetConfig):
        self.dataset, self.config = dataset, config

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        s = self.dataset[i]
        boxes = torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1)
        return prepare_image(s["image"], self.config), {"boxes": boxes, "labels": labels}


def _collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


@torch.no_grad()
def predict_detections(model, images, device, amp: bool = False) -> list[dict]:
    """Eval-mode detections of prepared images, as CPU tensors {"boxes", "scores", "labels"}."""
    model.eval()
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
        out = model([im.to(device) for im in images])
    return [{k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in o.items()}
            for o in out]


def detection_scores(preds: list[dict], targets: list[dict]) -> dict:
    """COCO mAP, mAP@0.5 and the RSNA score of predictions against targets."""
    from ..metrics import coco_map, rsna_score

    coco = coco_map(preds, targets)
    return {"map": float(coco["map"]), "map_50": float(coco["map_50"]),
            "rsna": float(rsna_score(preds, targets))}


# ---------------------------------------------------------------------- training

def train_detection(config: DetConfig, train_set, val_set=None, out_dir=None,
                    resume: bool = False) -> list[dict]:
    """Trains a detector; returns the history (one dict per epoch, DET_COLUMNS).

    train_set, val_set: datasets of sample dicts ({"image" [C, H, W] file units, "boxes" [K, 4]
    x1y1x2y2, "labels" [K]}); val_set may be None. resume=True continues from out_dir/last.pt
    with every state restored (model, optimizer, scheduler, scaler, RNGs, history); only
    RESUMABLE_CHANGES may differ from the saved config. Without resume a folder holding last.pt
    is refused. Raises NonFiniteLossError when the summed loss is NaN or inf."""
    if out_dir is None:
        raise ValueError("train_detection: out_dir is required (the run folder)")
    return DetTrainer(config, train_set, val_set, Path(out_dir), resume).fit()


class DetTrainer:
    """State of one detection run; `fit` runs the remaining epochs."""

    def __init__(self, config: DetConfig, train_set, val_set, out_dir: Path, resume: bool):
        config.validate()
        if len(train_set) == 0:
            raise ValueError("train_detection: the training set is empty")
        self.out, self.config = out_dir, config
        self.device = resolve_device(config.device)
        ckpt = self._resume_checkpoint(resume)
        if ckpt:
            check_resumable(config, ckpt["config"], RESUMABLE_CHANGES)
        self.amp = bool(config.amp) and self.device.type == "cuda"
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        torch.manual_seed(config.seed)
        self.model = build_detector(config, pretrained=ckpt is None).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = _optimizer(config, params, config.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, config.step_size, config.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.sampler = EpochSampler(len(train_set), config.seed)
        self.train_loader = DataLoader(DetTensors(train_set, config), config.batch_size,
                                       sampler=self.sampler, collate_fn=_collate)
        self.val_loader = (DataLoader(DetTensors(val_set, config), config.batch_size,
                                      collate_fn=_collate) if val_set is not None and len(val_set) else None)
        self.epoch, self.global_step, self.history = 0, 0, []
        self.best, self.best_epoch = -math.inf, 0
        if ckpt:
            restore_training_state(self, ckpt)
        atomic_write_text(self.out / "config.json", config.to_json())

    def _resume_checkpoint(self, resume: bool):
        ckpt = run_checkpoint(self.out, resume)
        if ckpt is not None and ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.out / 'last.pt'}: not a {CHECKPOINT_FORMAT} checkpoint")
        return ckpt

    def fit(self) -> list[dict]:
        for epoch in range(self.epoch, self.config.epochs):
            start = time.perf_counter()
            lr = self.opt.param_groups[0]["lr"]
            self.sampler.set_epoch(epoch)
            row = {"epoch": epoch + 1, **self._train_epoch(epoch)}
            self.sched.step()
            val = self._validate()
            row.update(val_map=val["map"], val_map_50=val["map_50"], val_rsna=val["rsna"],
                       lr=lr, seconds=time.perf_counter() - start)
            self.history.append(row)
            self.epoch = epoch + 1
            self._save(row)
        return self.history

    def _train_epoch(self, epoch: int) -> dict:
        """Mean of each loss (and of their sum) over the epoch's batches."""
        self.model.train()
        sums = dict.fromkeys(LOSS_KEYS + ("loss",), 0.0)
        n = 0
        bar = progress(self.train_loader, len(self.train_loader),
                       f"epoch {epoch + 1}/{self.config.epochs}", self.config.progress)
        for step, (images, targets) in enumerate(bar, start=1):
            images = [im.to(self.device) for im in images]
            targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                losses = self.model(images, targets)
            loss = sum(v.float() for v in losses.values())
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(epoch + 1, step, self.global_step + 1, value)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            for k in LOSS_KEYS:
                sums[k] += float(losses[k].detach())
            sums["loss"] += value
            n += 1
            self.global_step += 1
            bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        return {k: _div(v, n) for k, v in sums.items()}

    def _validate(self) -> dict:
        """mAP, mAP@0.5 and RSNA score on the validation set (NaN without one)."""
        if self.val_loader is None:
            return {"map": math.nan, "map_50": math.nan, "rsna": math.nan}
        preds, targets = [], []
        for images, tgts in self.val_loader:
            preds += predict_detections(self.model, images, self.device, self.amp)
            targets += tgts
        return detection_scores(preds, targets)

    def _save(self, row: dict) -> None:
        """last.pt every epoch, best.pt when the score improves, the CSV and the plot."""
        score = row["val_map_50"] if self.val_loader is not None else -row["loss"]
        improved = not math.isnan(score) and score > self.best
        if improved:
            self.best, self.best_epoch = score, row["epoch"]
        ckpt = training_state(self, CHECKPOINT_FORMAT)
        atomic_save(ckpt, self.out / "last.pt")
        if improved:
            atomic_save(ckpt, self.out / "best.pt")
        write_det_metrics_csv(self.out / "metrics.csv", self.history)
        plot_det_history(self.out / "metrics.png", self.history)


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


def evaluate_detection(model, config: DetConfig, dataset, device, score_threshold: float = 0.5,
                       figures=None) -> dict:
    """RSNA score, COCO mAP / AP50 / AP75 over `dataset`, and per image the TP / FP / FN at IoU
    0.5 among detections scoring >= score_threshold. figures: a folder for pr_curve.png."""
    from ..metrics import coco_map, pr_curve, rsna_score, save_pr_curves

    preds, targets, rows = [], [], []
    all_scores, all_tp = [], []
    for i in range(len(dataset)):
        s = dataset[i]
        pred = predict_detections(model, [prepare_image(s["image"], config)], device)[0]
        target = {"boxes": torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1)}
        preds.append(pred)
        targets.append(target)
        tp = match_at(pred, target)
        all_scores.append(pred["scores"].numpy())
        all_tp.append(tp)
        kept = {k: v[pred["scores"] >= score_threshold] for k, v in pred.items()}
        tp_kept = match_at(kept, target)
        rows.append({"id": s.get("id", str(i)), "tp": int(tp_kept.sum()),
                     "fp": int((~tp_kept).sum()), "fn": int(len(target["boxes"]) - tp_kept.sum())})
    coco = coco_map(preds, targets)
    result = {"images": len(preds), "rsna": float(rsna_score(preds, targets)),
              "map": float(coco["map"]), "map_50": float(coco["map_50"]),
              "map_75": float(coco["map_75"]), "score_threshold": score_threshold,
              "tp": sum(r["tp"] for r in rows), "fp": sum(r["fp"] for r in rows),
              "fn": sum(r["fn"] for r in rows), "per_image": rows}
    if figures is not None:
        num_gt = sum(len(t["boxes"]) for t in targets)
        curve = pr_curve(np.concatenate(all_scores) if all_scores else np.zeros(0),
                         np.concatenate(all_tp) if all_tp else np.zeros(0, bool), num_gt)
        result["pr_curve"] = str(save_pr_curves(Path(figures) / "pr_curve.png",
                                                {"IoU 0.5": curve}, "Precision-recall (IoU 0.5)"))
    return result


def format_det_report(result: dict) -> str:
    """The figures of evaluate_detection as text lines."""
    lines = [f"images: {result['images']}", f"RSNA score: {result['rsna']:.4f}",
             f"COCO AP: {result['map']:.4f}", f"AP50: {result['map_50']:.4f}",
             f"AP75: {result['map_75']:.4f}",
             f"at IoU 0.5, score >= {result['score_threshold']:g}: TP {result['tp']}, "
             f"FP {result['fp']}, FN {result['fn']}", "id\tTP\tFP\tFN"]
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


def draw_boxes(path, image, pred: dict) -> Path:
    """A PNG of the image (grey, min-max scaled) with the detections drawn in red, scores beside."""
    from PIL import Image, ImageDraw

    x = torch.as_tensor(image, dtype=torch.float32)
    x = x.mean(0) if x.ndim == 3 else x
    lo, hi = float(x.min()), float(x.max())
    grey = ((x - lo) / (hi - lo) * 255 if hi > lo else torch.zeros_like(x)).to(torch.uint8).numpy()
    im = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(im)
    for box, score in zip(pred["boxes"].tolist(), pred["scores"].tolist()):
        draw.rectangle(box, outline=(255, 0, 0), width=2)
        draw.text((box[0] + 2, box[1] + 1), f"{score:.2f}", fill=(255, 255, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path
