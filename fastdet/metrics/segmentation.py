"""Binary-mask overlap metrics: iou, dice, sensitivity, specificity, precision, their mean ± std
and pooled aggregates, and a confusion matrix.

Inputs
------
`pred` and `target` are binary masks of one shape: bool arrays, or integer/float arrays holding
only 0 and 1 (threshold probabilities first), as numpy arrays or torch tensors (any device). No
channel axis: one mask per sample.

Samples: `sample_ndim` says how many trailing axes make one sample.
- None (default): the whole array is one sample (one image, or one volume) -> a float.
- k: the last k axes are one sample, the leading axes index samples -> an array of the leading
  shape. A [D, H, W] volume gives per-slice values with k=2 and one per-volume value with k=3
  (or None); a batch [N, D, H, W] gives N per-volume values with k=3.
- A list or tuple of arrays (which may differ in shape, e.g. images of different sizes) makes
  each element a sample (or, with k, contributes its own samples, concatenated).

Empty masks (MONAI's conventions)
---------------------------------
Every metric is a ratio of confusion counts (TP, FP, FN, TN over the sample's pixels/voxels).
- iou = TP / (TP + FP + FN) and dice = 2 TP / (2 TP + FP + FN) follow MONAI's `ignore_empty`
  (its default True): with `ignore_empty=True` a sample whose target is empty gets NaN, whatever
  the prediction. With `ignore_empty=False`, an empty target scores 1.0 when the prediction is
  empty too and 0.0 when it is not (MONAI's DiceMetric/MeanIoU with ignore_empty=False).
- sensitivity = TP / (TP + FN), specificity = TN / (TN + FP), precision = TP / (TP + FP) are NaN
  when their denominator is 0 (no positive target, no negative target, no positive prediction),
  as MONAI's ConfusionMatrixMetric gives.

Aggregates
----------
- reduction="none": per-sample values (NaN kept).
- reduction="mean": mean over the samples that are not NaN (MONAI's reduction); NaN if all are.
- reduction="pooled": TP/FP/FN/TN summed over all samples first, then one ratio (the
  "micro" or "global" score). With ignore_empty=True, a sample with an empty target still adds
  its false positives to the pool; the pooled value is NaN only when the pooled denominator (or,
  for iou/dice, the pooled target) is empty.
`summarize` gives mean, std, pooled and counts for several metrics at once.
"""

from __future__ import annotations

import numpy as np

from . import _inputs as inputs

METRICS = ("iou", "dice", "sensitivity", "specificity", "precision")
REDUCTIONS = ("none", "mean", "pooled")


# ---------------------------------------------------------------- confusion counts


def _counts_array(pred: np.ndarray, target: np.ndarray, sample_ndim):
    """(tp, fp, fn, tn) int64 arrays of the batch shape for one pair of bool arrays."""
    if sample_ndim is None:
        axes = tuple(range(pred.ndim))
    else:
        if not isinstance(sample_ndim, (int, np.integer)) or isinstance(sample_ndim, bool):
            raise TypeError(f"sample_ndim must be an int or None, got {type(sample_ndim).__name__}")
        if not 1 <= sample_ndim <= pred.ndim:
            raise ValueError(
                f"sample_ndim must be in [1, {pred.ndim}] for masks of shape "
                f"{tuple(pred.shape)}, got {sample_ndim}"
            )
        axes = tuple(range(pred.ndim - sample_ndim, pred.ndim))
    tp = np.count_nonzero(pred & target, axis=axes)
    p = np.count_nonzero(pred, axis=axes)
    t = np.count_nonzero(target, axis=axes)
    n = int(np.prod([pred.shape[a] for a in axes]))
    tp, p, t = (np.asarray(v, np.int64) for v in (tp, p, t))
    return tp, p - tp, t - tp, n - p - t + tp


def confusion_counts(pred, target, *, sample_ndim=None) -> dict:
    """TP, FP, FN, TN per sample: a dict of int64 arrays ("tp", "fp", "fn", "tn").

    Shapes follow `sample_ndim` (module docstring): 0-d for one sample, the leading shape
    otherwise, [N] (or the concatenated samples) for a list of N masks."""
    if inputs.both_lists(pred, target, "pred", "target"):
        parts = [
            _pair_counts(p, t, sample_ndim, f"pred[{i}]", f"target[{i}]")
            for i, (p, t) in enumerate(zip(pred, target))
        ]
        return {
            k: np.array([v for d in parts for v in np.ravel(d[k])], np.int64)
            for k in ("tp", "fp", "fn", "tn")
        }
    return _pair_counts(pred, target, sample_ndim, "pred", "target")


def _pair_counts(pred, target, sample_ndim, np_: str, nt: str) -> dict:
    p, t = inputs.binary(pred, np_), inputs.binary(target, nt)
    inputs.same_shape(p, t, np_, nt)
    tp, fp, fn, tn = _counts_array(p, t, sample_ndim)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


# ---------------------------------------------------------------- ratios


def _ratio(num, den) -> np.ndarray:
    """num / den, NaN where den == 0 (no warning)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _overlap(num, den, has_target, ignore_empty: bool) -> np.ndarray:
    """iou/dice from counts with MONAI's empty-target rule (module docstring)."""
    v = _ratio(num, den)
    if ignore_empty:
        return np.where(has_target, v, np.nan)
    return np.where(np.asarray(den) == 0, 1.0, v)  # den == 0: both masks empty


def metric_from_counts(name: str, c: dict, *, ignore_empty: bool = True) -> np.ndarray:
    """One metric from confusion counts (dict of tp, fp, fn, tn arrays) -> float64 array."""
    tp, fp, fn, tn = (np.asarray(c[k], np.int64) for k in ("tp", "fp", "fn", "tn"))
    if name == "iou":
        return _overlap(tp, tp + fp + fn, tp + fn > 0, ignore_empty)
    if name == "dice":
        return _overlap(2 * tp, 2 * tp + fp + fn, tp + fn > 0, ignore_empty)
    if name == "sensitivity":
        return _ratio(tp, tp + fn)
    if name == "specificity":
        return _ratio(tn, tn + fp)
    if name == "precision":
        return _ratio(tp, tp + fp)
    raise ValueError(f"metric must be one of {METRICS}, got {name!r}")


def nanmean(values) -> float:
    """Mean of the non-NaN values; NaN (no warning) when there are none."""
    v = np.asarray(values, np.float64).ravel()
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def nanstd(values, ddof: int = 0) -> float:
    """Standard deviation of the non-NaN values (numpy's `ddof`); NaN when too few."""
    v = np.asarray(values, np.float64).ravel()
    v = v[~np.isnan(v)]
    return float(v.std(ddof=ddof)) if v.size > ddof else float("nan")


def _reduce(name, c, reduction, ignore_empty, single):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "pooled":
        pooled = {k: np.sum(v) for k, v in c.items()}
        return float(metric_from_counts(name, pooled, ignore_empty=ignore_empty))
    v = metric_from_counts(name, c, ignore_empty=ignore_empty)
    if reduction == "mean":
        return nanmean(v)
    return float(v) if single else v


def _metric(name, pred, target, sample_ndim, reduction, ignore_empty=True):
    c = confusion_counts(pred, target, sample_ndim=sample_ndim)
    single = sample_ndim is None and not inputs.is_sequence(pred)
    return _reduce(name, c, reduction, ignore_empty, single)


# ---------------------------------------------------------------- public metrics


def iou(pred, target, *, sample_ndim=None, reduction="none", ignore_empty=True):
    """Intersection over union (Jaccard) TP / (TP + FP + FN) of binary masks.

    Returns a float for one sample (sample_ndim=None), else a float64 array of per-sample values
    ("none"), their NaN-ignoring mean ("mean") or the pooled ratio ("pooled"). Empty target:
    NaN with ignore_empty=True (MONAI's default); with False, 1.0 if the prediction is empty too,
    else 0.0. See the module docstring."""
    return _metric("iou", pred, target, sample_ndim, reduction, ignore_empty)


def dice(pred, target, *, sample_ndim=None, reduction="none", ignore_empty=True):
    """Dice (F1) 2 TP / (2 TP + FP + FN) of binary masks; returns and empty-target rule as `iou`."""
    return _metric("dice", pred, target, sample_ndim, reduction, ignore_empty)


def sensitivity(pred, target, *, sample_ndim=None, reduction="none"):
    """Sensitivity (recall, TPR) TP / (TP + FN); NaN when the target has no positive pixel."""
    return _metric("sensitivity", pred, target, sample_ndim, reduction)


def specificity(pred, target, *, sample_ndim=None, reduction="none"):
    """Specificity (TNR) TN / (TN + FP); NaN when the target has no negative pixel."""
    return _metric("specificity", pred, target, sample_ndim, reduction)


def precision(pred, target, *, sample_ndim=None, reduction="none"):
    """Precision (PPV) TP / (TP + FP); NaN when the prediction has no positive pixel."""
    return _metric("precision", pred, target, sample_ndim, reduction)


def summarize(pred, target, *, sample_ndim=None, metrics=METRICS, ignore_empty=True, ddof=0):
    """Mean ± std over samples and the pooled value of several metrics in one pass.

    Returns {metric: {"mean", "std", "pooled", "n", "n_nan"}}: mean and std (numpy's `ddof`,
    population std by default) over the samples whose value is not NaN, `n` the number of those
    samples and `n_nan` the number left out (e.g. empty targets with ignore_empty=True)."""
    c = confusion_counts(pred, target, sample_ndim=sample_ndim)
    out = {}
    for name in metrics:
        v = np.ravel(metric_from_counts(name, c, ignore_empty=ignore_empty))
        nan = int(np.isnan(v).sum())
        out[name] = {
            "mean": nanmean(v),
            "std": nanstd(v, ddof),
            "pooled": _reduce(name, c, "pooled", ignore_empty, True),
            "n": int(v.size - nan),
            "n_nan": nan,
        }
    return out


# ---------------------------------------------------------------- confusion matrix


def _class_map(x, name: str) -> np.ndarray:
    a = inputs.to_numpy(x, name)
    if a.dtype == bool:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not np.all(np.isfinite(a) & (a == np.round(a))):
            raise ValueError(f"{name} must hold integer class indices, found non-integer values")
    elif not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be a bool, integer or float array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must hold class indices >= 0, found {a.min()}")
    return a


def confusion_matrix(pred, target, *, num_classes=None) -> np.ndarray:
    """[K, K] int64 confusion matrix, rows = target class, columns = predicted class (sklearn's
    layout). For binary masks K = 2 and the matrix is [[TN, FP], [FN, TP]].

    pred, target: class-index maps of one shape (bool, or integer-valued), or lists of them
    (summed). num_classes: K; by default max(2, largest index + 1)."""
    if inputs.both_lists(pred, target, "pred", "target"):
        pairs = [(_class_map(p, "pred"), _class_map(t, "target")) for p, t in zip(pred, target)]
    else:
        pairs = [(_class_map(pred, "pred"), _class_map(target, "target"))]
    for p, t in pairs:
        inputs.same_shape(p, t, "pred", "target")
    top = max([0] + [int(a.max()) + 1 for pair in pairs for a in pair if a.size])
    k = max(2, top) if num_classes is None else int(num_classes)
    if k < 1:
        raise ValueError(f"num_classes must be >= 1, got {k}")
    if k < top:
        raise ValueError(f"num_classes is {k} but a class index {top - 1} was found")
    cm = np.zeros(k * k, np.int64)
    for p, t in pairs:
        cm += np.bincount((t * k + p).ravel(), minlength=k * k)
    return cm.reshape(k, k)
