"""iou, dice, sensitivity, specificity, precision, summarize and confusion_matrix against a slow
pixel-by-pixel reference, on random masks and constructed edge cases."""

import math

import numpy as np
import pytest
import torch

from fastdet.metrics import (
    METRICS,
    confusion_counts,
    confusion_matrix,
    dice,
    iou,
    precision,
    sensitivity,
    specificity,
    summarize,
)

FUNCS = {
    "iou": iou,
    "dice": dice,
    "sensitivity": sensitivity,
    "specificity": specificity,
    "precision": precision,
}
NAN = float("nan")


def ref_counts(pred, target):
    tp = fp = fn = tn = 0
    for p, t in zip(np.ravel(pred).tolist(), np.ravel(target).tolist()):
        if p and t:
            tp += 1
        elif p:
            fp += 1
        elif t:
            fn += 1
        else:
            tn += 1
    return tp, fp, fn, tn


def ref_metric(name, tp, fp, fn, tn, ignore_empty=True):
    """The documented rules, written out case by case."""

    def div(a, b):
        return a / b if b else NAN

    if name in ("iou", "dice"):
        if tp + fn == 0:  # empty target
            if ignore_empty:
                return NAN
            return 1.0 if fp == 0 else 0.0
        return div(tp, tp + fp + fn) if name == "iou" else div(2 * tp, 2 * tp + fp + fn)
    return {
        "sensitivity": div(tp, tp + fn),
        "specificity": div(tn, tn + fp),
        "precision": div(tp, tp + fp),
    }[name]


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12


def random_batch(rng, shape):
    """Random masks of varied density, with empty, full and single-pixel samples mixed in."""
    n = shape[0]
    dens = rng.uniform(0, 1, (n,) + (1,) * (len(shape) - 1))
    pred = rng.random(shape) < dens
    target = rng.random(shape) < rng.permutation(dens)
    target[0] = False  # empty target
    if n > 1:
        pred[1] = False  # empty prediction
    if n > 2:
        pred[2] = target[2] = False  # both empty
    if n > 3:
        pred[3] = target[3] = True  # all ones
    if n > 4:
        pred[4] = target[4] = False
        pred[4].flat[7] = target[4].flat[7] = True  # one pixel, matched
    return pred, target


@pytest.mark.parametrize("ignore_empty", [True, False])
@pytest.mark.parametrize("name", METRICS)
def test_per_sample_matches_reference(rng, name, ignore_empty):
    pred, target = random_batch(rng, (6, 9, 7))
    kw = {"ignore_empty": ignore_empty} if name in ("iou", "dice") else {}
    got = FUNCS[name](pred, target, sample_ndim=2, **kw)
    assert got.shape == (6,) and got.dtype == np.float64
    want = [ref_metric(name, *ref_counts(p, t), ignore_empty) for p, t in zip(pred, target)]
    for g, w in zip(got, want):
        assert same(g, w), (got, want)
    # mean ignores NaN; pooled sums the counts first
    kept = [w for w in want if not math.isnan(w)]
    assert same(
        FUNCS[name](pred, target, sample_ndim=2, reduction="mean", **kw),
        sum(kept) / len(kept) if kept else NAN,
    )
    pooled = [sum(c) for c in zip(*(ref_counts(p, t) for p, t in zip(pred, target)))]
    assert same(
        FUNCS[name](pred, target, sample_ndim=2, reduction="pooled", **kw),
        ref_metric(name, *pooled, ignore_empty),
    )


def test_per_volume_and_per_slice(rng):
    pred, target = random_batch(rng, (3, 4, 6, 5))  # [N, D, H, W]
    vol = dice(pred, target, sample_ndim=3)
    assert vol.shape == (3,)
    for i in range(3):
        assert same(vol[i], ref_metric("dice", *ref_counts(pred[i], target[i])))
        assert same(vol[i], dice(pred[i], target[i]))  # sample_ndim=None: one volume -> float
    per_slice = dice(pred, target, sample_ndim=2)
    assert per_slice.shape == (3, 4)
    assert same(per_slice[1, 2], ref_metric("dice", *ref_counts(pred[1, 2], target[1, 2])))
    assert isinstance(dice(pred, target), float)
    assert same(dice(pred, target), dice(pred, target, sample_ndim=3, reduction="pooled"))


def test_constructed_edge_cases():
    z, o = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    px = z.copy()
    px[1, 2] = True
    # both empty: NaN by default (MONAI), 1.0 with ignore_empty=False
    assert math.isnan(iou(z, z)) and math.isnan(dice(z, z))
    assert iou(z, z, ignore_empty=False) == dice(z, z, ignore_empty=False) == 1.0
    # empty target, non-empty prediction: NaN, or 0.0
    assert math.isnan(dice(px, z)) and dice(px, z, ignore_empty=False) == 0.0
    assert math.isnan(sensitivity(px, z)) and specificity(px, z) == 15 / 16
    # empty prediction, non-empty target
    assert iou(z, px) == dice(z, px) == sensitivity(z, px) == 0.0
    assert math.isnan(precision(z, px)) and specificity(z, px) == 1.0
    # all ones: no negative in the target -> specificity NaN
    assert iou(o, o) == dice(o, o) == sensitivity(o, o) == precision(o, o) == 1.0
    assert math.isnan(specificity(o, o))
    # single pixel
    assert iou(px, px) == dice(px, px) == 1.0
    assert iou(px, o) == 1 / 16 and dice(px, o) == pytest.approx(2 / 17)
    # all samples NaN -> mean NaN without a warning
    with np.errstate(all="raise"):
        assert math.isnan(dice(np.stack([z, z]), np.stack([z, z]), sample_ndim=2, reduction="mean"))


def test_pooled_differs_from_mean():
    # a small perfect object and a large half-found one: mean 0.75, pooled 7 / 13
    a_t = np.zeros((4, 4), bool)
    a_t[0, 0] = True
    b_t = np.ones((4, 4), bool)
    b_p = b_t.copy()
    b_p[2:] = False
    pred, target = np.stack([a_t, b_p]), np.stack([a_t, b_t])
    assert iou(pred, target, sample_ndim=2, reduction="mean") == pytest.approx(0.75)
    assert iou(pred, target, sample_ndim=2, reduction="pooled") == pytest.approx(9 / 17)


def test_input_kinds_agree(rng):
    pred, target = random_batch(rng, (5, 8, 8))
    want = iou(pred, target, sample_ndim=2)
    for p, t in [
        (torch.from_numpy(pred), torch.from_numpy(target)),
        (torch.from_numpy(pred).bfloat16(), torch.from_numpy(target).half()),
        (pred.astype(np.uint8), target.astype(np.float32)),
        (torch.from_numpy(pred).float().requires_grad_(), torch.from_numpy(target).long()),
    ]:
        np.testing.assert_array_equal(iou(p, t, sample_ndim=2), want)
    # a list of differently sized images: one value per image
    lst_p = [pred[0], pred[1, :5], pred[2, :3, :4]]
    lst_t = [target[0], target[1, :5], target[2, :3, :4]]
    got = iou(lst_p, lst_t)
    for g, p, t in zip(got, lst_p, lst_t):
        assert same(g, ref_metric("iou", *ref_counts(p, t)))
    assert got.shape == (3,)
    c = confusion_counts(lst_p, lst_t)
    assert [int(v) for v in (c["tp"][1], c["fp"][1], c["fn"][1], c["tn"][1])] == list(
        ref_counts(lst_p[1], lst_t[1])
    )


def test_summarize(rng):
    pred, target = random_batch(rng, (7, 6, 6))
    s = summarize(pred, target, sample_ndim=2, ddof=1)
    for name in METRICS:
        v = FUNCS[name](pred, target, sample_ndim=2)
        kept = v[~np.isnan(v)]
        assert s[name]["n"] == kept.size and s[name]["n_nan"] == 7 - kept.size
        assert same(s[name]["mean"], float(np.mean(kept)))
        assert same(s[name]["std"], float(np.std(kept, ddof=1)))
        assert same(s[name]["pooled"], FUNCS[name](pred, target, sample_ndim=2, reduction="pooled"))
    assert math.isnan(summarize(pred[:1], target[:1], sample_ndim=2, ddof=1)["specificity"]["std"])


def test_confusion_matrix(rng):
    pred, target = random_batch(rng, (4, 5, 5))
    tp, fp, fn, tn = ref_counts(pred, target)
    np.testing.assert_array_equal(confusion_matrix(pred, target), [[tn, fp], [fn, tp]])
    p = rng.integers(0, 4, (6, 7))
    t = rng.integers(0, 4, (6, 7))
    want = np.zeros((5, 5), int)
    for a, b in zip(t.ravel(), p.ravel()):
        want[a, b] += 1
    np.testing.assert_array_equal(confusion_matrix(p, t, num_classes=5), want)
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(p), torch.from_numpy(t)), want[:4, :4]
    )
    np.testing.assert_array_equal(confusion_matrix([p, p], [t, t], num_classes=5), 2 * want)
    np.testing.assert_array_equal(confusion_matrix(np.zeros(3), np.zeros(3)), [[3, 0], [0, 0]])
    with pytest.raises(ValueError, match="num_classes is 3 but a class index 3 was found"):
        confusion_matrix(p, t, num_classes=3)
    with pytest.raises(ValueError, match="integer class indices"):
        confusion_matrix(p + 0.5, t)
    with pytest.raises(ValueError, match="class indices >= 0, found -1"):
        confusion_matrix(p, t - 1)
    with pytest.raises(ValueError, match=r"same shape, got pred \(6, 7\) and target \(7, 6\)"):
        confusion_matrix(p, t.T)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        confusion_matrix(p, t, num_classes=0)
    with pytest.raises(
        TypeError, match="pred must be a bool, integer or float array, got dtype complex128"
    ):
        confusion_matrix(p + 0j, t)
    with pytest.raises(TypeError, match="both be arrays or both be lists"):
        confusion_matrix([p], t)


def test_errors():
    a = np.zeros((2, 3), bool)
    with pytest.raises(
        ValueError,
        match=r"pred and target must have the same shape, got pred \(2, 3\) and target \(3, 2\)",
    ):
        dice(a, a.T)
    with pytest.raises(
        ValueError, match=r"pred must be binary \(bool or values 0 and 1\), found value 2"
    ):
        iou(a.astype(int) + 2, a)
    with pytest.raises(ValueError, match="target must be binary .* found value nan"):
        iou(a, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="target must be binary .* found value 0.5"):
        sensitivity(a, np.full((2, 3), 0.5))
    with pytest.raises(
        TypeError, match=r"pred\[0\] must be a numpy.ndarray or torch.Tensor, got list"
    ):
        dice([[0, 1]], [[0, 1]])
    with pytest.raises(
        ValueError, match=r"same shape, got pred\[1\] \(2, 3\) and target\[1\] \(2, 2\)"
    ):
        dice([a, a], [a, a[:, :2]])
    with pytest.raises(TypeError, match="target must be a numpy.ndarray or torch.Tensor, got int"):
        dice(a, 3)
    with pytest.raises(
        TypeError, match="pred must be a bool, integer or float array, got dtype <U1"
    ):
        dice(np.array(["a"]), np.array([True]))
    with pytest.raises(TypeError, match="both be arrays or both be lists"):
        dice([a], a)
    with pytest.raises(ValueError, match="same length, got 1 and 2"):
        dice([a], [a, a])
    with pytest.raises(
        ValueError, match=r"sample_ndim must be in \[1, 2\] for masks of shape \(2, 3\), got 3"
    ):
        specificity(a, a, sample_ndim=3)
    with pytest.raises(TypeError, match="sample_ndim must be an int or None, got float"):
        precision(a, a, sample_ndim=1.0)
    with pytest.raises(
        ValueError, match=r"reduction must be one of \('none', 'mean', 'pooled'\), got 'sum'"
    ):
        iou(a, a, reduction="sum")
    with pytest.raises(ValueError, match="metric must be one of"):
        summarize(a, a, metrics=("f2",))
