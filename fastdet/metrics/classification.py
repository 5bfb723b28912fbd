"""Image-level classification metrics: accuracy, balanced accuracy, per-class sensitivity,
specificity and precision, ROC AUC (binary and one-vs-rest), ROC curves and the Youden's J
threshold. The confusion matrix is metrics.confusion_matrix (rows = true class).

Inputs: numpy arrays or torch tensors (any device). Labels are integer class indices >= 0
(bool, or integer-valued floats); predictions are class indices of the same shape [N], or
scores [N, K] whose argmax is the prediction. Scores must be finite.

Undefined ratios are NaN, never a silent 0: a class without true images has NaN sensitivity,
one no image was predicted as has NaN precision (scikit-learn's zero_division=np.nan), and an
AUC is NaN where the class is absent from the labels or is every label (scikit-learn raises)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from . import _inputs as inputs
from .segmentation import _class_map, confusion_matrix


def _labels(x, name: str) -> np.ndarray:
    a = _class_map(x, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a [N] vector of class indices, got shape {a.shape}")
    return a


def _predictions(pred) -> np.ndarray:
    """[N] class indices from [N] indices or the argmax of [N, K] scores."""
    a = inputs.to_numpy(pred, "pred")
    if a.ndim == 2:
        _finite(a, "pred")
        return a.argmax(1).astype(np.int64) if a.shape[0] else np.zeros(0, np.int64)
    return _labels(a, "pred")


def _finite(a: np.ndarray, name: str) -> None:
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must be a float or integer array, got dtype {a.dtype}")
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, found NaN or inf")


def _pair(pred, target, num_classes=None) -> np.ndarray:
    """The [K, K] confusion matrix of [N] predictions (or [N, K] scores) and [N] labels."""
    p, t = _predictions(pred), _labels(target, "target")
    inputs.same_length(p, t, "pred", "target")
    return confusion_matrix(p, t, num_classes=num_classes)


def accuracy(pred, target) -> float:
    """Share of images whose prediction is their label; NaN for no images."""
    cm = _pair(pred, target)
    n = cm.sum()
    return float(np.trace(cm) / n) if n else float("nan")


def balanced_accuracy(pred, target, num_classes=None) -> float:
    """Mean of the per-class sensitivities over the classes present in `target` (scikit-learn's
    balanced_accuracy_score, adjusted=False); NaN for no images."""
    cm = _pair(pred, target, num_classes)
    support = cm.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def class_scores_from_matrix(cm, names=None) -> dict:
    """{class name: {"sensitivity", "specificity", "precision", "support"}} of a [K, K]
    confusion matrix (rows = true class), each class against the rest: sensitivity (recall)
    TP / (TP + FN), specificity TN / (TN + FP), precision TP / (TP + FP), NaN where the
    denominator is 0; support = the class's true images. names: K names (default "0".."K-1")."""
    cm = np.asarray(inputs.to_numpy(cm, "cm"), dtype=np.int64)
    names = inputs.square_matrix_names(cm, names)
    n = cm.sum()
    out = {}
    for i, name in enumerate(names):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = n - tp - fn - fp
        out[name] = {
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "precision": _ratio(tp, tp + fp),
            "support": int(tp + fn),
        }
    return out


def class_scores(pred, target, num_classes=None, names=None) -> dict:
    """Per-class sensitivity, specificity, precision and support of predictions ([N] indices
    or [N, K] scores) against [N] labels, as class_scores_from_matrix. num_classes: K (default
    len(names), else max(2, largest index + 1))."""
    if num_classes is None and names is not None:
        num_classes = len(names)
    return class_scores_from_matrix(_pair(pred, target, num_classes), names)


def _ratio(a, b) -> float:
    return float(a / b) if b else float("nan")


# ---------------------------------------------------------------- ROC


def _binary_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(float64 [N] scores, bool [N] labels) for the binary ROC functions."""
    s = inputs.to_numpy(scores, "scores")
    _finite(s, "scores")
    if s.ndim != 1:
        raise ValueError(f"scores must be [N] here, got shape {s.shape}")
    y = inputs.binary(labels, "labels")
    if y.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {y.shape}")
    inputs.same_length(s, y, "scores", "labels")
    return s.astype(np.float64), y


def _auc(s: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney: P(score of a positive > score of a negative) + P(tie) / 2, with average
    ranks for ties; NaN without positives or without negatives."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks: a tie between a positive and a negative counts 1/2
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc(scores, labels):
    """Area under the ROC curve.

    - scores [N] with binary labels [N] (bool or 0/1): a float, equal to
      `sklearn.metrics.roc_auc_score(labels, scores)` (note scikit-learn's argument order).
    - scores [N, K] (e.g. probabilities) with integer labels [N] in 0..K-1: a float64 [K]
      array, class k's AUC of scores[:, k] for "label == k" against the rest (one-vs-rest),
      equal to `roc_auc_score(labels, scores, multi_class="ovr", average=None)`. Each column is
      ranked alone: rows need not sum to 1 (scikit-learn requires it).
    Ties count one half (the Mann-Whitney U statistic with average ranks, which is the
    trapezoidal area scikit-learn computes). A class absent from the labels, or the only label,
    gives NaN where scikit-learn raises. Macro AUC: np.nanmean of the [K] result."""
    s = inputs.to_numpy(scores, "scores")
    if s.ndim == 1:
        return _auc(*_binary_scores(s, labels))
    if s.ndim != 2:
        raise ValueError(f"scores must be [N] or [N, K], got shape {s.shape}")
    _finite(s, "scores")
    y = _labels(labels, "labels")
    inputs.same_length(s, y, "scores", "labels")
    k = s.shape[1]
    if y.size and y.max() >= k:
        raise ValueError(
            f"labels must be class indices < K = {k} (scores' columns), found {y.max()}"
        )
    s = s.astype(np.float64)
    return np.array([_auc(s[:, c], y == c) for c in range(k)])


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), float64 [M + 1] each, for binary labels: one point per distinct
    score t, in decreasing t, calling "score >= t" positive, after a first point (0, 0) at
    threshold +inf. As `sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)`.
    fpr (tpr) is NaN throughout when there are no negatives (positives)."""
    s, y = _binary_scores(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, np.int64)
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    pos, neg = tps[-1], fps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / pos if pos else np.full_like(tps, np.nan)
        fpr = fps / neg if neg else np.full_like(fps, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


def youden_threshold(scores, labels) -> tuple[float, float]:
    """(threshold t, J) maximizing Youden's J = sensitivity + specificity - 1 = tpr - fpr over
    the ROC points, calling "score >= t" positive; t is one of the scores. Among thresholds
    with the same J the lowest wins (the most sensitive: a classifier no better than chance
    gets the lowest score, which calls every image positive). (NaN, NaN) without positives or
    without negatives."""
    fpr, tpr, thresholds = roc_curve(scores, labels)
    if fpr.size < 2 or np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan"), float("nan")
    j = (tpr - fpr)[1:]  # the +inf point (nothing positive) is never the answer
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[-1])  # ties: the same J, rounded
    return float(thresholds[1:][best]), float(j[best])
