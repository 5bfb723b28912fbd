"""Evaluation of a classifier: accuracy, balanced accuracy, per-class sensitivity, specificity,
precision and one-vs-rest ROC AUC, macro AUC, the confusion matrix (CSV and figure), ROC curves
and, with the checkpoint's Youden's J threshold, the positive class's sensitivity and
specificity at it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from ....metrics import (
    balanced_accuracy,
    class_scores_from_matrix,
    confusion_matrix,
    confusion_rows,
    roc_auc,
    roc_curve,
    save_confusion_matrix,
    save_roc_curves,
    write_csv,
)
from .data import labels_for
from .task import predict_probabilities


def evaluate_classification(
    model, config, dataset, device="cpu", figures=None, threshold=None, batch_size: int = 16
) -> dict:
    """Scores `model` on every sample of `dataset` (labels by name in config.classes).

    Returns {"n_images", "classes", "accuracy", "balanced_accuracy", "macro_auc" (NaN-ignoring
    mean of the classes' AUCs), "auc" {class: AUC, NaN for a class absent from the data},
    "per_class" {class: {"sensitivity", "specificity", "precision", "support"}},
    "confusion_matrix" (rows = true class), "positive_class", "threshold" (the one given, e.g.
    the checkpoint's) and, with a threshold, "at_threshold" {"sensitivity", "specificity",
    "positives"} of "P(positive class) >= threshold"}. figures: a folder for
    confusion_matrix.csv/.png, roc.png and predictions.csv (id, true, predicted, P per class);
    their paths under "files"."""
    classes = list(config.classes)
    labels = labels_for(dataset, classes)
    images, ids = [], []
    probs = []
    for i in range(len(dataset)):
        s = dataset[i]
        images.append(s["image"])
        ids.append(str(s.get("id", i)))
        if len(images) == batch_size or i == len(dataset) - 1:
            probs.append(predict_probabilities(model, config, images, device, batch_size))
            images = []
    p = torch.cat(probs).double().numpy() if probs else np.zeros((0, len(classes)))
    pred = p.argmax(1) if len(p) else np.zeros(0, np.int64)
    cm = confusion_matrix(pred, labels, num_classes=len(classes))
    aucs = roc_auc(p, labels)
    pos = classes.index(config.positive)
    result = {
        "n_images": int(len(labels)),
        "classes": classes,
        "accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else math.nan,
        "balanced_accuracy": balanced_accuracy(pred, labels, len(classes)),
        "macro_auc": float(np.nanmean(aucs)) if not np.isnan(aucs).all() else math.nan,
        "auc": dict(zip(classes, map(float, aucs))),
        "per_class": class_scores_from_matrix(cm, classes),
        "confusion_matrix": cm.tolist(),
        "positive_class": classes[pos],
        "threshold": threshold,
    }
    if threshold is not None:
        called, truth = p[:, pos] >= threshold, labels == pos
        result["at_threshold"] = {
            "sensitivity": _share(called[truth]),
            "specificity": _share(~called[~truth]),
            "positives": int(called.sum()),
        }
    if figures is not None:
        result["files"] = _write_figures(Path(figures), classes, cm, p, labels, ids, pred)
    return result


def _share(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def _write_figures(folder: Path, classes, cm, p, labels, ids, pred) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "confusion_matrix_csv": write_csv(
            confusion_rows(cm, classes), folder / "confusion_matrix.csv"
        ),
        "confusion_matrix_png": save_confusion_matrix(folder / "confusion_matrix.png", cm, classes),
    }
    curves = {}
    for k, name in enumerate(classes):
        truth = labels == k
        if truth.any() and not truth.all():
            fpr, tpr, _ = roc_curve(p[:, k], truth)
            curves[f"{name} (AUC {roc_auc(p[:, k], truth):.3f})"] = (fpr, tpr)
    files["roc_png"] = save_roc_curves(folder / "roc.png", curves, "ROC (one vs rest)")
    path = folder / "predictions.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "true", "predicted", *(f"P({c})" for c in classes)])
        for i, row in enumerate(p):
            w.writerow([ids[i], classes[labels[i]], classes[pred[i]], *(f"{v:.6f}" for v in row)])
    files["predictions_csv"] = path
    return {k: str(v) for k, v in files.items()}


def format_cls_report(result: dict) -> str:
    """Per-class rows (support, sensitivity, specificity, precision, AUC), the overall figures
    and the confusion matrix."""
    classes = result["classes"]
    width = max(12, *(len(c) for c in classes)) + 1
    head = ["class".ljust(width)] + [h.rjust(8) for h in ("n", "sens", "spec", "prec", "AUC")]
    lines = [" ".join(head)]
    for c in classes:
        r = result["per_class"][c]
        cells = [str(r["support"]).rjust(8)] + [
            _num(v) for v in (r["sensitivity"], r["specificity"], r["precision"], result["auc"][c])
        ]
        lines.append(" ".join([c.ljust(width)] + cells))
    lines.append(
        f"accuracy {_num(result['accuracy']).strip()}, balanced accuracy "
        f"{_num(result['balanced_accuracy']).strip()}, macro AUC "
        f"{_num(result['macro_auc']).strip()} ({result['n_images']} images)"
    )
    if "at_threshold" in result:
        a = result["at_threshold"]
        lines.append(
            f"{result['positive_class']} at the stored threshold {result['threshold']:.4f}: "
            f"sensitivity {_num(a['sensitivity']).strip()}, specificity "
            f"{_num(a['specificity']).strip()}"
        )
    lines.append("confusion matrix (rows: true, columns: predicted, in the order above)")
    lines += ["  " + " ".join(str(v).rjust(6) for v in row) for row in result["confusion_matrix"]]
    return "\n".join(lines)


def _num(v) -> str:
    return ("nan" if v is None or math.isnan(v) else f"{v:.3f}").rjust(8)
