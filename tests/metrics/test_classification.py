"""Classification metrics against scikit-learn (a test peer only) on fresh random data with
ties, and on constructed cases: ROC AUC (binary and one-vs-rest), ROC curves, Youden's J,
accuracy, balanced accuracy, per-class sensitivity/specificity/precision; their figures and
the confusion-matrix CSV."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastdet import metrics as M

skm = pytest.importorskip("sklearn.metrics")


def tied_binary(rng, n):
    """Scores on a coarse grid (many ties, also between the classes) and 0/1 labels with both
    classes present."""
    labels = rng.integers(0, 2, n)
    labels[:2] = (0, 1)
    rng.shuffle(labels)
    scores = rng.integers(0, 6, n) / 5 + 0.3 * labels * rng.random(n).round(1)
    return scores, labels


def tied_probabilities(rng, n, k):
    """[n, k] rows summing to 1 from small integer counts (ties in every column) and labels
    0..k-1 with every class present (scikit-learn's one-vs-rest needs them all)."""
    counts = rng.integers(0, 4, (n, k)).astype(np.float64)
    counts[counts.sum(1) == 0, 0] = 1
    labels = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    rng.shuffle(labels)
    counts[np.arange(n), labels] += rng.integers(0, 3, n)  # some signal
    return counts / counts.sum(1, keepdims=True), labels


def test_binary_auc_and_curve_match_sklearn(rng):
    for _ in range(50):
        n = int(rng.integers(2, 60))
        scores, labels = tied_binary(rng, n)
        auc = M.roc_auc(scores, labels)
        assert isinstance(auc, float)
        assert auc == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
        fpr, tpr, thr = M.roc_curve(scores, labels)
        e_fpr, e_tpr, e_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
        np.testing.assert_allclose(fpr, e_fpr, atol=1e-12)
        np.testing.assert_allclose(tpr, e_tpr, atol=1e-12)
        np.testing.assert_array_equal(thr, e_thr)
    # torch in, bool labels, float32 scores
    t = torch.from_numpy(scores.astype(np.float32))
    assert M.roc_auc(t, torch.from_numpy(labels.astype(bool))) == pytest.approx(
        skm.roc_auc_score(labels, scores.astype(np.float32)), abs=1e-12
    )


def test_one_vs_rest_auc_matches_sklearn(rng):
    for _ in range(30):
        k = int(rng.integers(2, 6))
        n = int(rng.integers(k + 2, 80))
        probs, labels = tied_probabilities(rng, n, k)
        got = M.roc_auc(probs, labels)
        assert got.shape == (k,) and got.dtype == np.float64
        if k == 2:  # scikit-learn takes two classes as binary: each column against its class
            expected = [skm.roc_auc_score(labels == c, probs[:, c]) for c in range(2)]
            np.testing.assert_allclose(got, expected, atol=1e-12)
            continue
        expected = skm.roc_auc_score(labels, probs, multi_class="ovr", average=None)
        np.testing.assert_allclose(got, expected, atol=1e-12)
        assert np.nanmean(got) == pytest.approx(
            skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12
        )
    got = M.roc_auc(torch.from_numpy(probs), torch.from_numpy(labels))
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_auc_constructed_cases():
    # scikit-learn's documented example
    assert M.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert M.roc_auc(np.array([1.0, 2, 3, 4]), np.array([0, 0, 1, 1])) == 1.0
    assert M.roc_auc(np.array([4.0, 3, 2, 1]), np.array([0, 0, 1, 1])) == 0.0
    assert M.roc_auc(np.full(5, 0.3), np.array([0, 1, 0, 1, 1])) == 0.5  # all tied: one half
    # a tie between one positive and one negative counts one half: (1 + 1 + 0.5 + 1) / 4
    assert M.roc_auc(np.array([0.1, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1])) == 0.875


def test_auc_absent_or_universal_class_is_nan():
    assert np.isnan(M.roc_auc(np.array([0.2, 0.7]), np.array([1, 1])))
    assert np.isnan(M.roc_auc(np.array([0.2, 0.7]), np.array([0, 0])))
    assert np.isnan(M.roc_auc(np.zeros(0), np.zeros(0, np.int64)))
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1]])
    labels = np.array([0, 1, 0, 1])  # class 2 absent
    got = M.roc_auc(probs, labels)
    assert np.isnan(got[2]) and not np.isnan(got[:2]).any()
    for c in (0, 1):
        assert got[c] == skm.roc_auc_score(labels == c, probs[:, c])
    assert np.isnan(M.roc_auc(probs[:, :1], np.zeros(4, np.int64))[0])  # class 0 is every label


def test_auc_bad_input():
    with pytest.raises(ValueError, match="scores must be finite"):
        M.roc_auc(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels must be binary"):
        M.roc_auc(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="class indices < K = 2"):
        M.roc_auc(np.ones((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="same length"):
        M.roc_auc(np.ones(3), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[N\] or \[N, K\]"):
        M.roc_auc(np.ones((2, 2, 2)), np.array([0, 1]))
    with pytest.raises(TypeError, match="numpy.ndarray or torch.Tensor"):
        M.roc_auc([0.1, 0.2], [0, 1])


def _j_of(threshold, scores, labels):
    pred = scores >= threshold
    return pred[labels == 1].mean() - pred[labels == 0].mean()


def test_youden_threshold(rng):
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert M.youden_threshold(scores, np.array([0, 0, 0, 1, 1, 1])) == (0.4, 1.0)
    # no better than chance: the lowest score (every image positive), J = 0
    assert M.youden_threshold(np.full(4, 0.7), np.array([0, 1, 0, 1])) == (0.7, 0.0)
    assert M.youden_threshold(scores[::-1].copy(), np.array([0, 0, 0, 1, 1, 1])) == (0.1, 0.0)
    # two thresholds with J = 0.5: the lower wins
    t, j = M.youden_threshold(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
    assert (t, j) == (0.2, 0.5)
    assert all(np.isnan(M.youden_threshold(scores, np.ones(6, np.int64))))
    for _ in range(30):
        s, y = tied_binary(rng, int(rng.integers(2, 60)))
        t, j = M.youden_threshold(s, y)
        fpr, tpr, _ = skm.roc_curve(y, s)
        assert j == pytest.approx(np.max(tpr - fpr), abs=1e-12)
        assert t in s and _j_of(t, s, y) == pytest.approx(j, abs=1e-12)
        assert all(_j_of(u, s, y) < j - 1e-12 for u in s[s < t])  # nothing lower is as good


def test_accuracy_balanced_and_per_class_match_sklearn(rng):
    for _ in range(30):
        k = int(rng.integers(2, 5))
        n = int(rng.integers(1, 40))
        target = rng.integers(0, k, n)
        pred = np.where(rng.random(n) < 0.5, target, rng.integers(0, k, n))
        assert M.accuracy(pred, target) == pytest.approx(skm.accuracy_score(target, pred))
        present = np.unique(target)
        cm = M.confusion_matrix(pred, target, num_classes=k)
        expected_bal = np.mean([cm[c, c] / cm[c].sum() for c in present])
        assert M.balanced_accuracy(pred, target, k) == pytest.approx(expected_bal)
        if len(present) > 1 and set(np.unique(pred)) <= set(present):  # else sklearn warns
            assert M.balanced_accuracy(pred, target) == pytest.approx(
                skm.balanced_accuracy_score(target, pred)
            )
        names = [f"class {c}" for c in range(k)]
        got = M.class_scores(pred, target, names=names)
        assert list(got) == names
        kw = dict(labels=range(k), average=None, zero_division=np.nan)
        rec, prec = skm.recall_score(target, pred, **kw), skm.precision_score(target, pred, **kw)
        mcm = skm.multilabel_confusion_matrix(target, pred, labels=range(k))  # [[tn, fp], ...]
        for c, name in enumerate(names):
            tn, fp = mcm[c, 0]
            spec = tn / (tn + fp) if tn + fp else np.nan
            row = got[name]
            np.testing.assert_allclose(
                [row["sensitivity"], row["precision"], row["specificity"]],
                [rec[c], prec[c], spec],
                equal_nan=True,
            )
            assert row["support"] == int((target == c).sum())


def test_scores_as_predictions_and_edge_cases():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert M.accuracy(scores, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert np.isnan(M.accuracy(np.zeros(0, np.int64), np.zeros(0, np.int64)))
    assert np.isnan(M.balanced_accuracy(np.zeros(0, np.int64), np.zeros(0, np.int64)))
    # class 2 never true and never predicted: its sensitivity and precision are undefined
    got = M.class_scores(np.array([0, 1, 1]), np.array([0, 1, 0]), num_classes=3)
    assert np.isnan(got["2"]["sensitivity"]) and np.isnan(got["2"]["precision"])
    assert got["2"]["specificity"] == 1.0 and got["0"]["sensitivity"] == 0.5
    assert M.balanced_accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]), 3) == 0.75
    with pytest.raises(ValueError, match="same length"):
        M.accuracy(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="one entry per class"):
        M.class_scores(np.array([0]), np.array([0]), names=["a"], num_classes=2)
    with pytest.raises(ValueError, match="pred must be finite"):
        M.accuracy(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match=r"\[N\] vector"):
        M.accuracy(np.zeros((2, 2, 2)), np.zeros((2, 2), np.int64))


def test_roc_and_confusion_figures_and_csv(tmp_path):
    curves = {
        "a (AUC 0.75)": M.roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))[:2]
    }
    curves["absent"] = M.roc_curve(np.array([0.1, 0.2]), np.array([1, 1]))[:2]  # NaN: skipped
    p = M.save_roc_curves(tmp_path / "f" / "roc.png", curves)
    assert Image.open(p).size == (500, 450)
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 0]])
    names = ["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"]
    im = Image.open(M.save_confusion_matrix(tmp_path / "cm.png", cm, names))
    assert im.size[0] > 200 and im.size[1] > 200
    rows = M.confusion_rows(cm, names)
    assert rows[1] == {"true": names[1], names[0]: 2, names[1]: 3, names[2]: 1}
    back = M.read_csv(M.write_csv(rows, tmp_path / "cm.csv"))
    assert [r["true"] for r in back] == names and back[0]["Normal"] == 5.0
    with pytest.raises(ValueError, match="square"):
        M.save_confusion_matrix(tmp_path / "x.png", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one entry per class"):
        M.confusion_rows(cm, names[:2])
