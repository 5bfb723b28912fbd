"""Per-subject tables: IoU and Dice per patient and per method (deep and classical side by side),
as lists of dicts, written with the csv module.

Long rows are {"subject", "method", "iou", "dice", "n_images"}; `wide_table` turns them into one
row per subject with "<method> iou" / "<method> dice" columns; `method_summary` gives mean ± std
over subjects per method. Groups keep the order in which they first appear.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .segmentation import confusion_counts, metric_from_counts, nanmean, nanstd

TABLE_METRICS = ("iou", "dice")
_KINDS = ("pooled", "mean")


def _groups(items, key):
    out: dict = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def subject_table(samples, *, reduction: str = "pooled", ignore_empty: bool = True) -> list:
    """Rows (subject, method, iou, dice, n_images) from per-image mask pairs.

    samples: iterable of (subject_id, method, pred, target), binary masks (numpy or torch).
    reduction="pooled" (default) sums TP/FP/FN over the subject's images first, i.e. the
    per-volume score of a patient's slices; "mean" averages the per-image scores (NaN-ignoring).
    Empty-target images follow `ignore_empty` (see fastdet.metrics.segmentation)."""
    if reduction not in _KINDS:
        raise ValueError(f"reduction must be one of {_KINDS}, got {reduction!r}")
    rows = []
    for i, s in enumerate(samples):
        if len(s) != 4:
            raise ValueError(
                f"samples[{i}] must be (subject, method, pred, target), got {len(s)} items"
            )
        c = confusion_counts(s[2], s[3])
        rows.append((s[0], s[1], {k: int(v) for k, v in c.items()}))
    table = []
    for (subject, method), grp in _groups(rows, lambda r: (r[0], r[1])).items():
        counts = [r[2] for r in grp]
        row = {"subject": subject, "method": method}
        for name in TABLE_METRICS:
            if reduction == "pooled":
                pooled = {k: sum(c[k] for c in counts) for k in counts[0]}
                row[name] = float(metric_from_counts(name, pooled, ignore_empty=ignore_empty))
            else:
                row[name] = nanmean(
                    [metric_from_counts(name, c, ignore_empty=ignore_empty) for c in counts]
                )
        row["n_images"] = len(grp)
        table.append(row)
    return table


def subject_table_from_rows(rows, metrics=TABLE_METRICS) -> list:
    """Rows (subject, method, <metrics>, n_images) from per-image metric rows: dicts with
    "subject", "method" and each metric; the subject's value is the NaN-ignoring mean."""
    for i, r in enumerate(rows):
        missing = [k for k in ("subject", "method", *metrics) if k not in r]
        if missing:
            raise ValueError(f"rows[{i}] lacks {missing}")
    table = []
    for (subject, method), grp in _groups(rows, lambda r: (r["subject"], r["method"])).items():
        row = {"subject": subject, "method": method}
        row.update({m: nanmean([r[m] for r in grp]) for m in metrics})
        row["n_images"] = len(grp)
        table.append(row)
    return table


def wide_table(table, metrics=TABLE_METRICS) -> list:
    """One row per subject with a "<method> <metric>" column per method and metric (NaN where a
    method has no row for the subject)."""
    methods = list(dict.fromkeys(r["method"] for r in table))
    out = []
    for subject, grp in _groups(table, lambda r: r["subject"]).items():
        row = {"subject": subject}
        by_method = {r["method"]: r for r in grp}
        for meth in methods:
            for m in metrics:
                row[f"{meth} {m}"] = by_method[meth][m] if meth in by_method else float("nan")
        out.append(row)
    return out


def method_summary(table, metrics=TABLE_METRICS, ddof: int = 0) -> list:
    """Per method: {"method", "n_subjects", "<metric>_mean", "<metric>_std"} over subjects
    (NaN values left out; numpy's `ddof`)."""
    out = []
    for method, grp in _groups(table, lambda r: r["method"]).items():
        row = {"method": method, "n_subjects": len(grp)}
        for m in metrics:
            vals = [r[m] for r in grp]
            row[f"{m}_mean"], row[f"{m}_std"] = nanmean(vals), nanstd(vals, ddof)
        out.append(row)
    return out


def write_csv(rows, path) -> Path:
    """Write a list of dicts as CSV (columns: keys in first-seen order); returns the path."""
    rows = list(rows)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def read_csv(path) -> list:
    """Rows of a CSV written by `write_csv`: "subject" and "method" stay strings, other
    numeric-looking cells become floats (NaN included)."""

    def cell(k, v):
        if k in ("subject", "method"):
            return v
        try:
            return float(v)
        except ValueError:
            return v

    with Path(path).open(newline="") as f:
        return [{k: cell(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """ "0.812 ± 0.051" as tables in papers print it."""
    if np.isnan(mean):
        return "nan"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def confusion_rows(cm, names=None) -> list:
    """A [K, K] confusion matrix (rows = true class) as K dicts {"true": name, <predicted
    name>: count, ...}, for write_csv."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square [K, K] matrix, got shape {cm.shape}")
    names = [str(i) for i in range(len(cm))] if names is None else [str(n) for n in names]
    if len(names) != len(cm):
        raise ValueError(f"names must have one entry per class ({len(cm)}), got {len(names)}")
    if "true" in names:
        raise ValueError("a class may not be called 'true' (the first column's name)")
    return [{"true": t, **{p: int(v) for p, v in zip(names, row)}} for t, row in zip(names, cm)]
