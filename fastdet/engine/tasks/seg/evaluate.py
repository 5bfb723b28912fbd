"""Evaluation of a segmentation model beside the classical baseline: IoU, Dice, sensitivity and
specificity per image, per subject and overall, and the DSB-2018 score where the data has
instance labels (model instances: watershed split of the predicted mask)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ....metrics import (
    classical_segment,
    dice,
    dsb_image_score,
    iou,
    save_overlay,
    sensitivity,
    specificity,
    split_instances,
    subject_table,
    summarize,
)
from .predict import predict_mask

METHODS = ("model", "classical")
SCORES = ("iou", "dice", "sensitivity", "specificity")


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Per-image scores; an image whose target and prediction are both empty scores IoU and
    Dice 1 (ignore_empty=False), so such images count rather than vanish from the means."""
    return {
        "iou": iou(pred, truth, ignore_empty=False),
        "dice": dice(pred, truth, ignore_empty=False),
        "sensitivity": sensitivity(pred, truth),
        "specificity": specificity(pred, truth),
    }


def _methods(model, config, sample, device, tile, overlap, post_process, classical):
    """{method: (mask bool, instance labels or None)} for one sample."""
    image = torch.as_tensor(sample["image"]).float()
    mask = predict_mask(model, image, config, tile, overlap, device, post_process)
    want_instances = "instances" in sample
    out = {
        "model": (
            mask,
            split_instances(mask)
            if want_instances and mask.any()
            else np.zeros(mask.shape, np.int32),
        )
    }
    if classical:
        c_mask, c_labels = classical_segment(image.numpy(), channel_axis=0)
        out["classical"] = (c_mask, c_labels)
    return out


def evaluate_segmentation(
    model,
    config,
    dataset,
    device="cpu",
    tile=None,
    overlap=0,
    post_process=False,
    classical=True,
    figures=None,
) -> dict:
    """Scores `model` (and the classical baseline) on every sample of `dataset`.

    Returns {"images": rows {"id", "subject", "method", iou, dice, sensitivity, specificity[,
    "dsb"]}, "subjects": per-subject rows (pooled over the subject's images), "overall":
    {method: {score: {"mean", "std", "pooled"}, "dsb": mean or absent}}}. figures: a folder for
    contour overlays (ground truth green, model red) named <id>.png."""
    rows, per_subject = [], []
    preds = {m: [] for m in METHODS}
    truths = []
    for i in range(len(dataset)):
        sample = dataset[i]
        truth = torch.as_tensor(sample["mask"]).numpy() > 0
        sid = str(sample.get("id", i))
        subject = str(sample.get("meta", {}).get("subject", sid))
        truths.append(truth)
        gt_inst = sample.get("instances")
        for method, (mask, labels) in _methods(
            model, config, sample, device, tile, overlap, post_process, classical
        ).items():
            row = {"id": sid, "subject": subject, "method": method, **_scores(mask, truth)}
            if gt_inst is not None:
                row["dsb"] = dsb_image_score(labels, torch.as_tensor(gt_inst).numpy())
            rows.append(row)
            preds[method].append(mask)
            per_subject.append((subject, method, mask, truth))
            if figures is not None and method == "model":
                safe = sid.replace("/", "_")
                save_overlay(f"{figures}/{safe}.png", _display(sample["image"]), truth, mask)
    return {
        "images": rows,
        "subjects": subject_table(per_subject),
        "overall": _overall(rows, preds, truths),
    }


def _display(image) -> np.ndarray:
    """[H, W] grey or [H, W, 3] for the overlay."""
    a = torch.as_tensor(image).float().numpy()
    return a[0] if a.shape[0] != 3 else a.transpose(1, 2, 0)


def _overall(rows, preds, truths) -> dict:
    out = {}
    for method, masks in preds.items():
        if not masks:
            continue
        s = summarize(masks, truths, metrics=SCORES, ignore_empty=False)
        out[method] = {
            k: {"mean": v["mean"], "std": v["std"], "pooled": v["pooled"]} for k, v in s.items()
        }
        dsb = [r["dsb"] for r in rows if r["method"] == method and "dsb" in r]
        if dsb:
            out[method]["dsb"] = float(np.mean(dsb))
    return out


def format_report(result: dict) -> str:
    """The per-image table (model and classical side by side), per-subject and overall rows."""
    methods = [m for m in METHODS if m in result["overall"]]
    has_dsb = any("dsb" in r for r in result["images"])
    cols = SCORES + (("dsb",) if has_dsb else ())
    short = {
        "iou": "IoU",
        "dice": "Dice",
        "sensitivity": "Sens",
        "specificity": "Spec",
        "dsb": "DSB",
    }
    head = ["image".ljust(24)] + [f"{m[:5]} {short[c]}".rjust(11) for m in methods for c in cols]
    lines = [" ".join(head)]
    by_id: dict = {}
    for r in result["images"]:
        by_id.setdefault(r["id"], {})[r["method"]] = r
    for sid, per in by_id.items():
        cells = [_num(per.get(m, {}).get(c)) for m in methods for c in cols]
        lines.append(" ".join([_name(sid)] + cells))
    lines.append("")
    if any(r["n_images"] > 1 for r in result["subjects"]):  # else it repeats the image rows
        lines += _subject_lines(result["subjects"], methods) + [""]
    for m in methods:
        o = result["overall"][m]
        parts = [
            f"{short[c]} {o[c]['mean']:.3f} ± {o[c]['std']:.3f} (pooled {o[c]['pooled']:.3f})"
            for c in SCORES
        ]
        if "dsb" in o:
            parts.append(f"DSB {o['dsb']:.3f}")
        lines.append(f"overall {m}: " + ", ".join(parts))
    return "\n".join(lines)


def _subject_lines(subjects, methods) -> list[str]:
    """Per subject: IoU and Dice pooled over its images, per method."""
    head = ["subject".ljust(24), "images".rjust(6)] + [
        f"{m[:5]} {c}".rjust(11) for m in methods for c in ("IoU", "Dice")
    ]
    lines = [" ".join(head)]
    by_subject: dict = {}
    for r in subjects:
        by_subject.setdefault(r["subject"], {})[r["method"]] = r
    for subject, per in by_subject.items():
        n = max(r["n_images"] for r in per.values())
        cells = [_num(per.get(m, {}).get(c)) for m in methods for c in ("iou", "dice")]
        lines.append(" ".join([_name(subject), str(n).rjust(6)] + cells))
    return lines


def _name(s: str) -> str:
    return (s if len(s) <= 24 else s[:10] + "…" + s[-13:]).ljust(24)


def _num(v) -> str:
    return ("nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}").rjust(
        11
    )
