"""The detector's operating point: the post-processing a user's boxes get (score threshold, NMS
IoU, containment suppression, boxes per image), chosen on the validation split and stored in
the checkpoint under "operating_point", as the strong RSNA-2018 entries tuned theirs.

The detector runs with a permissive NMS (PERMISSIVE_NMS) and cap (PERMISSIVE_CAP); the point's
NMS, containment suppression and cap follow, then its score threshold. The choice maximises
the task's own score on validation (the RSNA mean precision for the rsna layout, F1 at IoU 0.5
otherwise) over a grid walked from the simplest setting, so a tie keeps the simpler one."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ....metrics import RSNA_THRESHOLDS, greedy_match, match_detections, rsna_score
from ....models.detection.postprocess import point_keep
from ....ops import box_iou
from ...checkpoint import atomic_save, load_checkpoint
from .data import prepare_image
from .inference import predict_detections

PERMISSIVE_NMS = 0.7  # the model's own box NMS while a point is applied after it
PERMISSIVE_CAP = 100  # and its detections per image
# Grids, simplest first (a later setting must score strictly higher to be chosen).
NMS_GRID = (0.5, 0.6, 0.4, 0.3, 0.2, 0.1)
CONTAINMENT_GRID = (None, 0.9, 0.8, 0.7, 0.6, 0.5)
CAP_GRID = (PERMISSIVE_CAP, 10, 6, 4, 3, 2, 1)
OBJECTIVES = ("rsna", "f1")


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """score_threshold: boxes scoring below it are dropped; nms_iou: class-wise NMS IoU;
    containment: drop a box with more than this fraction of its area inside a higher-scoring
    box of its label (None: off); max_boxes: the highest-scoring boxes kept per image. split,
    objective, value: where it was chosen and the score it reached there."""

    score_threshold: float = 0.5
    nms_iou: float = 0.5
    containment: float | None = None
    max_boxes: int = PERMISSIVE_CAP
    split: str = ""
    objective: str = ""
    value: float = math.nan

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> OperatingPoint:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"operating_point: unknown key(s) {sorted(unknown)}")
        point = cls(**d)
        point.check()
        return point

    def check(self) -> None:
        """ValueError naming the flag of a part out of range."""
        for name, flag, v in (
            ("score_threshold", "--score-threshold", self.score_threshold),
            ("nms_iou", "--nms-iou", self.nms_iou),
            ("containment", "--containment", self.containment),
        ):
            if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{flag} ({name}) must be in [0, 1], got {v!r}")
        if int(self.max_boxes) < 1:
            raise ValueError(f"--max-boxes must be >= 1, got {self.max_boxes!r}")

    def replace(self, **parts) -> OperatingPoint:
        """The point with the given parts replaced (checked)."""
        point = dataclasses.replace(self, **parts)
        point.check()
        return point


def suppress(pred: dict, point: OperatingPoint) -> dict:
    """One image's detections (boxes [D, 4], scores [D], labels [D][, masks]) after the point's
    NMS, containment suppression and cap, in decreasing score, before its score threshold."""
    keep = point_keep(pred["boxes"], pred["scores"], pred["labels"], *_parts(point)[:3])
    return {k: v[keep] for k, v in pred.items()}


def apply_point(pred: dict, point: OperatingPoint) -> dict:
    """suppress(pred, point), then the boxes scoring >= point.score_threshold."""
    keep = point_keep(pred["boxes"], pred["scores"], pred["labels"], *_parts(point))
    return {k: v[keep] for k, v in pred.items()}


def _parts(point: OperatingPoint) -> tuple:
    """point_keep's (nms_iou, containment, max_boxes, score_threshold) of a point."""
    return point.nms_iou, point.containment, point.max_boxes, point.score_threshold


def objective_of(layout: str | None) -> str:
    """The score a point is chosen by: the RSNA mean precision for the rsna layout, else F1."""
    return "rsna" if layout == "rsna" else "f1"


class _Image:
    """One image's suppressed detections and their matches: prefix k of the score order is
    what a cap or score threshold keeps, and a greedy match of a prefix is the prefix of the
    full match, so every (cap, threshold) is read from cumulative sums."""

    def __init__(self, pred: dict, target: dict):
        self.scores = pred["scores"].double().numpy()
        gt = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        self.n_gt = len(gt)
        boxes = pred["boxes"].float().reshape(-1, 4)
        iou = box_iou(boxes, gt).double().numpy() if len(boxes) and len(gt) else None
        n = len(self.scores)
        t = np.asarray(RSNA_THRESHOLDS, np.float64)
        zeros = np.zeros((t.size, n), bool)
        rsna = zeros if iou is None else greedy_match(iou, t, strict=True)
        f1 = zeros[:1] if iou is None else greedy_match(iou, 0.5)
        pad = np.zeros((t.size, 1))
        self.rsna_tp = np.concatenate([pad, np.cumsum(rsna, 1)], 1)  # [T, n + 1]
        self.f1_tp = np.concatenate([pad[:1], np.cumsum(f1, 1)], 1)[0]  # [n + 1]

    def kept(self, cap: int, threshold: float) -> int:
        return min(cap, int(np.count_nonzero(self.scores >= threshold)))


def _value(images: list, objective: str, cap: int, threshold: float) -> float:
    ks = [im.kept(cap, threshold) for im in images]
    if objective == "f1":
        tp = sum(im.f1_tp[k] for im, k in zip(images, ks))
        found = sum(ks)
        truth = sum(im.n_gt for im in images)
        return 2 * tp / (found + truth) if found + truth else math.nan
    per = []
    for im, k in zip(images, ks):
        if im.n_gt == 0:
            if k:
                per.append(0.0)
            continue
        tp = im.rsna_tp[:, k]
        per.append(float(np.mean(tp / (k + im.n_gt - tp))))
    return float(np.mean(per)) if per else math.nan


def score_thresholds() -> list:
    """The score thresholds tried: 0.5 first, then 0.05 .. 0.95 by 0.05 nearest 0.5 first."""
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    return sorted(grid, key=lambda s: (abs(s - 0.5), s))


def choose_point(preds: list, targets: list, objective: str, split: str = "val") -> OperatingPoint:
    """The grid's best point for detections `preds` (the permissive model's, one dict per image)
    against `targets` ({"boxes"}); a tie keeps the simpler (earlier) setting."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    best, best_value = OperatingPoint(split=split, objective=objective), -math.inf
    thresholds = score_thresholds()
    for containment in CONTAINMENT_GRID:
        for nms_iou in NMS_GRID:
            point = OperatingPoint(nms_iou=nms_iou, containment=containment)
            images = [_Image(suppress(p, point), t) for p, t in zip(preds, targets)]
            for cap in CAP_GRID:
                for threshold in thresholds:
                    v = _value(images, objective, cap, threshold)
                    if v > best_value + 1e-12:
                        best_value = v
                        best = dataclasses.replace(point, max_boxes=cap, score_threshold=threshold)
    return dataclasses.replace(
        best, split=split, objective=objective, value=_check_value(best, preds, targets, objective)
    )


def _check_value(point, preds, targets, objective) -> float:
    """The chosen point's score, recomputed by the metric itself on the applied detections."""
    kept = [apply_point(p, point) for p in preds]
    if objective == "rsna":
        return float(rsna_score(kept, targets))
    tp = sum(int(match_detections(k, t).sum()) for k, t in zip(kept, targets))
    found = sum(len(k["boxes"]) for k in kept)
    truth = sum(len(torch.as_tensor(t["boxes"]).reshape(-1, 4)) for t in targets)
    return 2 * tp / (found + truth) if found + truth else math.nan


def permissive(model) -> tuple:
    """Sets the model's box NMS and cap to the permissive ones; returns the old pair."""
    heads = model.roi_heads
    old = (heads.nms_thresh, heads.detections_per_img)
    heads.nms_thresh = max(PERMISSIVE_NMS, old[0])
    heads.detections_per_img = max(PERMISSIVE_CAP, old[1])
    return old


def detections_and_targets(model, config, dataset, device) -> tuple[list, list]:
    """The permissive model's detections and the targets of every image of `dataset`."""
    old = permissive(model)
    preds, targets = [], []
    try:
        for i in range(len(dataset)):
            s = dataset[i]
            image = prepare_image(s["image"], config)
            preds.append(predict_detections(model, [image], device)[0])
            targets.append({"boxes": torch.as_tensor(s["boxes"], dtype=torch.float32)})
    finally:
        model.roi_heads.nms_thresh, model.roi_heads.detections_per_img = old
    return preds, targets


def tune_point(model, config, dataset, device, objective: str, split: str) -> OperatingPoint:
    """The operating point chosen on `dataset` (the `split` split)."""
    preds, targets = detections_and_targets(model, config, dataset, device)
    return choose_point(preds, targets, objective, split)


def stored_point(ckpt: dict) -> OperatingPoint | None:
    """The checkpoint's operating point, or None (a checkpoint from before points were
    stored, a Mask R-CNN one, or a run without validation)."""
    d = ckpt.get("operating_point")
    return None if d is None else OperatingPoint.from_dict(d)


def store_point(path, point: OperatingPoint) -> None:
    """Rewrites the checkpoint at `path` atomically with `point` under "operating_point", every
    other key unchanged."""
    ckpt = load_checkpoint(path)
    ckpt["operating_point"] = point.as_dict()
    atomic_save(ckpt, path)


def describe(point: OperatingPoint) -> str:
    contain = "off" if point.containment is None else f"> {point.containment:g} of a box's area"
    where = ""
    if point.split:
        where = f"; chosen on {point.split} ({point.objective} {point.value:.4f})"
    return (
        f"operating point: score >= {point.score_threshold:g}, NMS IoU {point.nms_iou:g}, "
        f"containment {contain}, at most {point.max_boxes} boxes per image{where}"
    )
