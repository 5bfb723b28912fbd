"""dsb_score, rsna_score and coco_map against slow references, pycocotools and constructed cases."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from fastdet.metrics import (
    COCO_IOU_THRESHOLDS,
    DSB_THRESHOLDS,
    RSNA_THRESHOLDS,
    bootstrap_intervals,
    coco_map,
    dsb_image_score,
    dsb_score,
    froc,
    label_iou,
    rsna_image_score,
    rsna_score,
)

# ---------------------------------------------------------------- slow references


def ref_label_iou(pred, gt):
    pids = [int(v) for v in np.unique(pred) if v]
    gids = [int(v) for v in np.unique(gt) if v]
    out = np.zeros((len(pids), len(gids)))
    for i, p in enumerate(pids):
        for j, g in enumerate(gids):
            a, b = pred == p, gt == g
            out[i, j] = (a & b).sum() / (a | b).sum()
    return out, pids, gids


def ref_dsb(pred, gt, thresholds=DSB_THRESHOLDS):
    iou, pids, gids = ref_label_iou(pred, gt)
    if not pids and not gids:
        return 1.0
    scores = []
    for t in thresholds:
        pairs = [(i, j) for i in range(len(pids)) for j in range(len(gids)) if iou[i, j] > t]
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        tp = len(pairs)
        fp, fn = len(pids) - tp, len(gids) - tp
        scores.append(tp / (tp + fp + fn))
    return sum(scores) / len(scores)


def py_iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def ref_rsna_image(boxes, scores, gts, match):
    if len(gts) == 0:
        return None if len(boxes) == 0 else 0.0
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    boxes = [list(map(float, boxes[i])) for i in order]
    gts = [list(map(float, g)) for g in gts]
    total = 0.0
    for t in RSNA_THRESHOLDS:
        tp = 0
        if match == "confidence":
            used = set()
            for b in boxes:
                best, best_iou = None, t
                for j, g in enumerate(gts):
                    v = py_iou(b, g)
                    if j not in used and v > best_iou:
                        best, best_iou = j, v
                if best is not None:
                    used.add(best)
                    tp += 1
        else:  # the Kaggle kernel's loop, verbatim in spirit
            matched = set()
            for g in gts:
                hit = False
                for j, b in enumerate(boxes):
                    if py_iou(g, b) >= t and not hit and j not in matched:
                        hit = True
                        tp += 1
                        matched.add(j)
        total += tp / (len(boxes) + len(gts) - tp)
    return total / len(RSNA_THRESHOLDS)


def pycoco_stats(preds, targets):
    """COCOeval bbox stats for the same detections (image ids 1..N in list order)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        x1, y1, x2, y2 = (float(v) for v in b)
        return [x1, y1, x2 - x1, y2 - y1]

    anns, cats = [], set()
    for i, t in enumerate(targets):
        for b, lab in zip(t["boxes"], t["labels"]):
            bb = xywh(b)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(lab) + 1,
                    "bbox": bb,
                    "area": bb[2] * bb[3],
                    "iscrowd": 0,
                }
            )
            cats.add(int(lab) + 1)
    res = [
        {"image_id": i + 1, "category_id": int(lab) + 1, "bbox": xywh(b), "score": float(s)}
        for i, p in enumerate(preds)
        for b, s, lab in zip(p["boxes"], p["scores"], p["labels"])
    ]
    cats |= {r["category_id"] for r in res}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1} for i in range(len(targets))],
            "annotations": anns,
            "categories": [{"id": c} for c in sorted(cats)],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


# ---------------------------------------------------------------- random inputs


def random_labels(rng, shape=(48, 48), n=6, offset=0):
    """A label image of up to n random discs/rectangles (later ones overwrite earlier ones)."""
    out = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ids = rng.choice(np.arange(1, 1000), n, replace=False) + offset
    for k in ids:
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(2, 9)
        if rng.random() < 0.5:
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            blob = (abs(yy - cy) <= r) & (abs(xx - cx) <= rng.integers(2, 9))
        out[blob] = k
    return out


def perturbed(rng, gt):
    """A prediction: GT instances shifted a little, some dropped, some spurious ones added."""
    out = np.zeros_like(gt)
    for k in np.unique(gt)[1:]:
        if rng.random() < 0.2:
            continue
        dy, dx = rng.integers(-2, 3, 2)
        out[np.roll(gt == k, (dy, dx), (0, 1))] = k + 5000
    extra = random_labels(rng, gt.shape, int(rng.integers(0, 3)), offset=9000)
    out[(extra > 0) & (out == 0)] = extra[(extra > 0) & (out == 0)]
    return out


def random_boxes(rng, n, integer=False):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    b = np.concatenate([xy, xy + wh], 1)
    return np.round(b) if integer else b


def random_detections(rng, n_images=6, n_classes=3, integer=False, crowd=False):
    preds, targets = [], []
    for _ in range(n_images):
        g = random_boxes(rng, int(rng.integers(0, 8)), integer)
        gl = rng.integers(0, n_classes, len(g))
        # near-duplicates of the ground truth (jittered, some exact), plus random boxes
        pick = rng.integers(0, max(len(g), 1), int(rng.integers(0, 12))) if len(g) else []
        near = g[pick] + rng.normal(0, 3, (len(pick), 4)) * (rng.random((len(pick), 1)) < 0.8)
        near = np.round(near) if integer else near
        near[:, 2:] = np.maximum(near[:, 2:], near[:, :2])
        n_rand = int(rng.integers(0, 6)) + (110 if crowd else 0)
        p = np.concatenate([near, random_boxes(rng, n_rand, integer)])
        pl = np.concatenate(
            [gl[pick] if len(g) else np.zeros(0, int), rng.integers(0, n_classes, n_rand)]
        )
        flip = rng.random(len(pl)) < 0.1  # some wrong-class predictions
        pl = np.where(flip, rng.integers(0, n_classes, len(pl)), pl)
        # scores with ties (one decimal) so the stable tie order is exercised
        s = np.round(rng.random(len(p)), 1)
        preds.append({"boxes": p, "scores": s, "labels": pl.astype(np.int64)})
        targets.append({"boxes": g, "labels": gl.astype(np.int64)})
    if sum(len(p["boxes"]) for p in preds) == 0:  # pycocotools cannot load an empty result
        preds[0] = {
            "boxes": random_boxes(rng, 1),
            "scores": np.ones(1),
            "labels": np.zeros(1, np.int64),
        }
    return preds, targets


# ---------------------------------------------------------------- label_iou / DSB


def test_label_iou_matches_pairwise_loop(rng):
    gt = random_labels(rng)
    pred = perturbed(rng, gt)
    iou, pids, gids = label_iou(pred, gt)
    want, wp, wg = ref_label_iou(pred, gt)
    assert list(pids) == wp and list(gids) == wg
    np.testing.assert_allclose(iou, want, rtol=0, atol=1e-15)


def test_dsb_matches_reference_on_random_images(rng):
    gts = [random_labels(rng, n=int(rng.integers(0, 9))) for _ in range(6)]
    preds = [perturbed(rng, g) for g in gts]
    mean, per = dsb_score(preds, gts, return_per_image=True)
    want = [ref_dsb(p, g) for p, g in zip(preds, gts)]
    np.testing.assert_allclose(per, want, rtol=0, atol=1e-12)
    assert mean == pytest.approx(np.mean(want), abs=1e-12)


def test_dsb_constructed_cases():
    z = np.zeros((8, 8), np.int32)
    one = z.copy()
    one[2:4, 2:4] = 7
    assert dsb_image_score(z, z) == 1.0  # both empty: documented as 1.0
    assert dsb_image_score(one, z) == 0.0  # spurious prediction
    assert dsb_image_score(z, one) == 0.0  # missed object
    assert dsb_image_score(one * 3, one) == 1.0  # ids need not agree
    shifted = np.roll(one, 1, 1)  # IoU 2/6 = 1/3 < 0.5: no match anywhere
    assert dsb_image_score(shifted, one) == 0.0
    # IoU exactly 0.75 (3 of 4 columns): a hit for t < 0.75 only, since the match is IoU > t
    gt = z.copy()
    gt[0:4, 0:4] = 1
    pred = z.copy()
    pred[0:4, 0:3] = 1
    hits = sum(0.75 > t for t in DSB_THRESHOLDS)
    assert dsb_image_score(pred, gt) == pytest.approx(hits / len(DSB_THRESHOLDS))
    assert hits == 5
    # 3-D volumes and torch tensors
    vol = np.stack([one, one])
    assert dsb_score(torch.from_numpy(vol), torch.from_numpy(vol * 2)) == 1.0
    assert dsb_score(one.astype(bool), one) == 1.0


def test_dsb_errors():
    a = np.zeros((4, 4), np.int32)
    with pytest.raises(
        ValueError, match=r"same shape, got pred_labels \(4, 4\) and gt_labels \(4, 5\)"
    ):
        dsb_score(a, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="labels >= 0"):
        dsb_score(a - 1, a)
    with pytest.raises(TypeError, match="integer .* label image, got dtype float64"):
        dsb_score(a.astype(float), a)
    with pytest.raises(TypeError, match="numpy.ndarray or torch.Tensor, got list"):
        dsb_score([[0, 1]], [a])
    with pytest.raises(TypeError, match="both be arrays or both be lists"):
        dsb_score([a], a)
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        dsb_score([a, a], [a])
    with pytest.raises(ValueError, match=r"thresholds must be .* in \[0.5, 1\)"):
        dsb_score(a, a, thresholds=[0.3])


# ---------------------------------------------------------------- RSNA


@pytest.mark.parametrize("match", ["confidence", "kernel"])
@pytest.mark.parametrize("integer", [False, True])
def test_rsna_matches_reference(rng, match, integer):
    preds, targets = random_detections(rng, n_images=12, n_classes=1, integer=integer)
    for p in preds:  # distinct scores: the kernel's own tie order is unspecified
        p["scores"] = rng.permutation(len(p["scores"])) / 16.0
    preds[0] = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)}  # no predictions
    targets[1] = {"boxes": np.zeros((0, 4))}  # no ground truth
    preds[2], targets[2] = (
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)},
        {"boxes": np.zeros((0, 4))},
    )
    mean, per = rsna_score(preds, targets, match=match, return_per_image=True)
    want = [
        ref_rsna_image(p["boxes"], p["scores"], t["boxes"], match) for p, t in zip(preds, targets)
    ]
    want = np.array([np.nan if w is None else w for w in want])
    np.testing.assert_allclose(per, want, rtol=0, atol=1e-12)
    assert np.isnan(per[2])
    assert mean == pytest.approx(np.nanmean(want), abs=1e-12)


def test_rsna_constructed_cases():
    g = np.array([[0, 0, 10, 10.0]])
    e = np.zeros((0, 4))

    def img(b, s=None):
        return {"boxes": b, "scores": np.ones(len(b)) if s is None else s}

    assert rsna_score([img(g)], [{"boxes": g}]) == 1.0
    assert rsna_score([img(g)], [{"boxes": e}]) == 0.0  # no GT, a prediction: 0
    assert np.isnan(rsna_score([img(e)], [{"boxes": e}]))  # nothing at all: skipped
    assert rsna_score([img(e), img(g)], [{"boxes": e}, {"boxes": g}]) == 1.0  # skip, not 0
    assert rsna_score([img(e)], [{"boxes": g}]) == 0.0  # missed
    # IoU 0.5 exactly: a hit for t in 0.40, 0.45 only (strictly greater), 2 of 8 thresholds
    half = np.array([[0, 0, 10, 5.0]])
    assert rsna_image_score(half, [1.0], g) == pytest.approx(2 / 8)
    # the kernel's >= also takes t = 0.5
    assert rsna_image_score(half, [1.0], g, match="kernel") == pytest.approx(3 / 8)
    # confidence decides: the confident box matches, the other is a false positive
    two = np.array([[0, 0, 10, 10.0], [0, 0, 10, 9.0]])
    assert rsna_image_score(two, [0.9, 0.1], g) == pytest.approx(0.5)
    # a confident poor box (IoU 0.45) takes the GT at low t and leaves the good one as an FP
    poor = np.array([[0, 0, 10, 4.6], [0, 0, 10, 10.0]])
    s = rsna_image_score(poor, [0.9, 0.1], g)
    assert s == pytest.approx((0.5 + 0.5 + 6 * 0.5) / 8)
    # torch tensors
    out = rsna_score(
        [{"boxes": torch.tensor(g), "scores": torch.ones(1)}], [{"boxes": torch.tensor(g)}]
    )
    assert out == 1.0


def test_rsna_errors():
    g = np.array([[0, 0, 10, 10.0]])
    with pytest.raises(ValueError, match=r"preds\[0\] has no 'scores' key"):
        rsna_score([{"boxes": g}], [{"boxes": g}])
    with pytest.raises(ValueError, match=r"must have shape \[N, 4\], got \(1, 3\)"):
        rsna_score([{"boxes": g[:, :3], "scores": np.ones(1)}], [{"boxes": g}])
    with pytest.raises(ValueError, match=r"scores'\] must have one entry per box \(1\), got 2"):
        rsna_score([{"boxes": g, "scores": np.ones(2)}], [{"boxes": g}])
    with pytest.raises(ValueError, match="inverted box"):
        rsna_score([{"boxes": g[:, [2, 1, 0, 3]], "scores": np.ones(1)}], [{"boxes": g}])
    with pytest.raises(ValueError, match="finite"):
        rsna_score([{"boxes": g * np.nan, "scores": np.ones(1)}], [{"boxes": g}])
    with pytest.raises(TypeError, match="preds must be a list of dicts"):
        rsna_score({"boxes": g}, [{"boxes": g}])
    with pytest.raises(TypeError, match=r"targets\[0\] must be a dict, got ndarray"):
        rsna_score([{"boxes": g, "scores": np.ones(1)}], [g])
    with pytest.raises(ValueError, match="same length, got 1 and 2"):
        rsna_score([{"boxes": g, "scores": np.ones(1)}], [{"boxes": g}] * 2)
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'boxes' key"):
        rsna_score([{"boxes": g, "scores": np.ones(1)}], [{"labels": np.zeros(1)}])
    with pytest.raises(ValueError, match=r"preds\[0\]\['scores'\] must be finite"):
        rsna_score([{"boxes": g, "scores": np.array([np.inf])}], [{"boxes": g}])
    with pytest.raises(ValueError, match=r"thresholds must be .* in \[0.0, 1\)"):
        rsna_score([{"boxes": g, "scores": np.ones(1)}], [{"boxes": g}], thresholds=[1.5])
    with pytest.raises(ValueError, match="match must be 'confidence' or 'kernel'"):
        rsna_score([{"boxes": g, "scores": np.ones(1)}], [{"boxes": g}], match="best")
    with pytest.raises(
        TypeError, match=r"boxes'\] must be a numpy.ndarray or torch.Tensor, got list"
    ):
        rsna_score([{"boxes": [[0, 0, 1, 1]], "scores": np.ones(1)}], [{"boxes": g}])


# ---------------------------------------------------------------- COCO


@pytest.mark.parametrize("case", ["float", "integer", "crowded"])
def test_coco_map_equals_pycocotools(rng, case):
    pytest.importorskip("pycocotools")
    for _ in range(3):
        preds, targets = random_detections(
            rng,
            n_images=int(rng.integers(1, 7)),
            integer=case == "integer",
            crowd=case == "crowded",
        )
        got = coco_map(preds, targets)
        stats = pycoco_stats(preds, targets)
        for key, i in (("map", 0), ("map_50", 1), ("map_75", 2), ("mar_100", 8)):
            assert abs(got[key] - stats[i]) <= 1e-6, (key, got[key], stats[i])


def test_coco_map_constructed_cases():
    g = np.array([[0, 0, 10, 10.0], [20, 20, 40, 40.0]])
    lab = np.array([1, 2])
    t = [{"boxes": g, "labels": lab}]
    perfect = coco_map([{"boxes": g, "scores": np.array([0.9, 0.8]), "labels": lab}], t)
    for key in ("map", "map_50", "map_75", "mar_100"):  # precision is tp / (tp + fp + eps)
        assert perfect[key] == pytest.approx(1.0, abs=1e-12)
    assert list(perfect["classes"]) == [1, 2]
    none = coco_map(
        [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)}], t
    )
    assert none["map"] == 0.0 and none["mar_100"] == 0.0
    no_gt = coco_map(
        [{"boxes": g, "scores": np.ones(2), "labels": lab}],
        [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}],
    )
    assert no_gt["map"] == -1.0 and no_gt["map_50"] == -1.0
    # a class with GT but no detection counts as AP 0; one only predicted is ignored
    half = coco_map(
        [
            {"boxes": g[:1], "scores": np.ones(1), "labels": lab[:1]},
        ],
        t,
    )
    assert half["map"] == pytest.approx(0.5)
    extra = coco_map([{"boxes": g, "scores": np.ones(2), "labels": np.array([1, 9])}], t)
    assert extra["map"] == pytest.approx(0.5) and list(extra["classes"]) == [1, 2]
    # IoU exactly 0.5: COCO matches at IoU >= t, so only t = 0.5 counts
    at_half = coco_map(
        [{"boxes": np.array([[0, 0, 10, 5.0]]), "scores": np.ones(1), "labels": np.array([1])}],
        [{"boxes": g[:1], "labels": lab[:1]}],
    )
    assert at_half["map_50"] == pytest.approx(1.0) and at_half["map"] == pytest.approx(0.1)
    assert COCO_IOU_THRESHOLDS[0] == 0.5 and COCO_IOU_THRESHOLDS[5] == 0.75
    # torch tensors give the same as numpy
    tt = coco_map(
        [
            {
                "boxes": torch.tensor(g),
                "scores": torch.tensor([0.9, 0.8]),
                "labels": torch.tensor(lab),
            }
        ],
        [{"boxes": torch.tensor(g), "labels": torch.tensor(lab)}],
    )
    assert tt["map"] == perfect["map"]


def test_coco_map_tie_rule_matches_pycocotools():
    # the first detection has IoU 0.5 with both ground truths; pycocotools gives it the later
    # one (B), so the second detection, a copy of B, finds B taken and is a false positive
    a, b = [0, 0, 10, 20.0], [0, 0, 20, 10.0]
    p = [
        {
            "boxes": np.array([[0, 0, 10, 10.0], b]),
            "scores": np.array([0.9, 0.8]),
            "labels": np.zeros(2, np.int64),
        }
    ]
    t = [{"boxes": np.array([a, b]), "labels": np.zeros(2, np.int64)}]
    got = coco_map(p, t)
    assert got["map_50"] == pytest.approx(51 / 101)  # precision 1 up to recall 0.5, then 0
    pytest.importorskip("pycocotools")
    stats = pycoco_stats(p, t)
    assert abs(got["map_50"] - stats[1]) <= 1e-12 and abs(got["map"] - stats[0]) <= 1e-12


def test_coco_map_max_detections():
    g = np.array([[0, 0, 10, 10.0]])
    junk = np.tile([[50, 50, 60, 60.0]], (3, 1))
    p = [
        {
            "boxes": np.concatenate([junk, g]),
            "scores": np.array([0.9, 0.8, 0.7, 0.1]),
            "labels": np.zeros(4, np.int64),
        }
    ]
    t = [{"boxes": g, "labels": np.zeros(1, np.int64)}]
    assert coco_map(p, t, max_detections=3)["map"] == 0.0  # the hit is the 4th by score
    assert coco_map(p, t)["map"] == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ValueError, match="max_detections must be >= 1, got 0"):
        coco_map(p, t, max_detections=0)


def test_greedy_match_rules():
    """The one matcher: confidence order, best free ground truth, >= or > t, ties by index."""
    from fastdet.metrics import greedy_match, match_detections

    iou = np.array([[0.6, 0.6], [0.6, 0.5], [0.9, 0.0]])
    # prediction 0 takes gt 0 (lower index on a tie), 1 takes the free gt 1 at t <= 0.5 only,
    # 2 finds both taken although its IoU with gt 0 is higher (greedy, not optimal)
    assert greedy_match(iou, [0.5, 0.55]).tolist() == [[True, True, False], [True, False, False]]
    assert greedy_match(iou, 0.5, strict=True).tolist() == [[True, False, False]]
    tie = np.array([[0.6, 0.6], [0.0, 0.55]])
    assert greedy_match(tie, 0.5).tolist() == [[True, True]]  # 0 takes gt 0, 1 takes gt 1
    # pycocotools' rule: the later gt wins the tie, so prediction 1 finds only gt 0 (IoU 0)
    assert greedy_match(tie, 0.5, prefer_last=True).tolist() == [[True, False]]
    assert greedy_match(np.zeros((3, 0)), [0.5]).shape == (1, 3)
    pred = {"boxes": np.array([[0, 0, 10, 10], [0, 0, 10, 10.0]]), "scores": np.array([0.2, 0.9])}
    target = {"boxes": np.array([[0, 0, 10, 10.0]])}
    assert match_detections(pred, target).tolist() == [False, True]  # the higher score first
    assert not match_detections(pred, {"boxes": np.zeros((0, 4))}).any()


# ---------------------------------------------------------------- COCO segm


def random_instances(rng, shape=(40, 48)):
    """Ground-truth masks (disjoint, from a label image) and predictions (each ground truth
    shifted, eroded or grown, some dropped, plus spurious blobs; predictions may overlap)."""
    from scipy import ndimage

    gl = random_labels(rng, shape, int(rng.integers(0, 7)))
    gt = [gl == k for k in np.unique(gl)[1:]]
    gt = np.stack(gt) if gt else np.zeros((0, *shape), bool)
    preds = []
    for m in gt:
        if rng.random() < 0.2:
            continue
        p = np.roll(m, tuple(rng.integers(-2, 3, 2)), (0, 1))
        p = [p, ndimage.binary_erosion(p), ndimage.binary_dilation(p)][int(rng.integers(3))]
        preds.append(p)
    extra = random_labels(rng, shape, int(rng.integers(0, 4)), offset=9000)
    preds += [extra == k for k in np.unique(extra)[1:]]
    preds = np.stack(preds) if preds else np.zeros((0, *shape), bool)
    return preds, gt


def _mask_boxes(masks):
    out = np.zeros((len(masks), 4))
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[i] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return out


def pycoco_segm_stats(preds, targets, max_det):
    """COCOeval segm AP, AP50, AP75 and recall (RLE masks) for the same detections with
    maxDets (1, max_det), read from its accumulated arrays (summarize fixes maxDets 100)."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        return r

    anns, res, h, w = [], [], *targets[0]["masks"].shape[1:]
    for i, t in enumerate(targets):
        for m, lab in zip(t["masks"], t["labels"]):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(lab) + 1,
                    "segmentation": rle(m),
                    "area": float(m.sum()),
                    "bbox": list(mask_utils.toBbox(rle(m))),
                    "iscrowd": 0,
                }
            )
    for i, p in enumerate(preds):
        for m, s, lab in zip(p["masks"], p["scores"], p["labels"]):
            res.append(
                {
                    "image_id": i + 1,
                    "category_id": int(lab) + 1,
                    "segmentation": rle(m),
                    "score": float(s),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1, "height": h, "width": w} for i in range(len(targets))],
            "annotations": anns,
            "categories": [{"id": c} for c in (1, 2)],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), "segm")
        ev.params.maxDets = sorted({1, max_det})  # evaluate() sorts them; -1 is max_det
        ev.evaluate()
        ev.accumulate()

    def mean(a):  # COCOeval's summarize, at area "all" and the last maxDets
        return float(a[a > -1].mean()) if (a > -1).any() else -1.0

    prec, rec = ev.eval["precision"][..., 0, -1], ev.eval["recall"][..., 0, -1]
    return mean(prec), mean(prec[0]), mean(prec[5]), mean(rec)


@pytest.mark.parametrize("max_det", [100, 3])
def test_coco_segm_map_equals_pycocotools(rng, max_det):
    pytest.importorskip("pycocotools")
    for _ in range(3):
        preds, targets = [], []
        for _ in range(int(rng.integers(1, 5))):
            p, g = random_instances(rng)
            preds.append(
                {
                    "boxes": _mask_boxes(p),
                    "masks": p,
                    "scores": np.round(rng.random(len(p)), 1),
                    "labels": rng.integers(0, 2, len(p)),
                }
            )
            targets.append(
                {"boxes": _mask_boxes(g), "masks": g, "labels": rng.integers(0, 2, len(g))}
            )
        if not any(len(p["masks"]) for p in preds) or not any(len(t["masks"]) for t in targets):
            continue
        got = coco_map(preds, targets, iou_type="segm", max_detections=max_det)
        stats = pycoco_segm_stats(preds, targets, max_det)
        for key, want in zip(("map", "map_50", "map_75", "mar_100"), stats):
            assert abs(got[key] - want) <= 1e-6, (key, got[key], want)


def test_coco_segm_differs_from_bbox_and_checks_masks():
    """Two L-shaped masks share one box: box AP counts both as matches of the one truth, mask
    AP only the one that overlaps it."""
    a = np.zeros((1, 10, 10), bool)
    a[0, :, :2] = a[0, -2:, :] = True  # an L filling the bottom-left
    b = np.zeros((1, 10, 10), bool)
    b[0, :2, :] = b[0, :, -2:] = True  # the mirrored L
    box = np.array([[0.0, 0, 10, 10]])
    preds = [{"boxes": box, "masks": b, "scores": np.ones(1), "labels": np.zeros(1, int)}]
    targets = [{"boxes": box, "masks": a, "labels": np.zeros(1, int)}]
    assert coco_map(preds, targets)["map_50"] == pytest.approx(1.0)
    assert coco_map(preds, targets, iou_type="segm")["map_50"] == 0.0
    with pytest.raises(ValueError, match=r"preds\[0\] has no 'masks'"):
        coco_map([{k: v for k, v in preds[0].items() if k != "masks"}], targets, iou_type="segm")
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\] must be \[N, H, W\] with N = 1"):
        coco_map(preds, [{**targets[0], "masks": a[0]}], iou_type="segm")
    with pytest.raises(ValueError, match="iou_type"):
        coco_map(preds, targets, iou_type="mask")


# ---------------------------------------------------------------- FROC and bootstrap


def _det(boxes, scores):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.ones(len(scores), dtype=torch.int64),
    }


def _gt(boxes):
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64)}


def test_froc_counts_lesions_found_within_each_false_positive_rate():
    # 2 images, 2 lesions: image 0 finds its lesion at 0.9 after a FP at 0.95; image 1's FP at
    # 0.8, its lesion at 0.3
    preds = [
        _det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.95, 0.9]),
        _det([[70, 70, 80, 80], [20, 20, 30, 30]], [0.8, 0.3]),
    ]
    targets = [_gt([[0, 0, 10, 10]]), _gt([[20, 20, 30, 30]])]
    r = froc(preds, targets, rates=(0.25, 0.5, 1.0, 2.0))
    # FP per image after each detection: 0.5 (0.95), 0.5 (0.9: TP), 1.0 (0.8), 1.0 (0.3: TP)
    assert r["sensitivity"] == [0.0, 0.5, 1.0, 1.0]
    assert r["mean"] == pytest.approx(0.625)
    assert all(math.isnan(v) for v in froc([_det([], [])], [_gt([])])["sensitivity"])


def test_bootstrap_intervals_bracket_the_estimates_and_narrow_with_more_images():
    rng = np.random.default_rng(0)

    def study(n):
        preds, targets = [], []
        for _ in range(n):
            xy = rng.uniform(0, 100, 2)
            gt = [*xy, *(xy + 30)]
            hit = rng.random() < 0.7
            box = gt if hit else [*(xy + 60), *(xy + 90)]
            preds.append(_det([box], [rng.uniform(0.5, 1)]))
            targets.append(_gt([gt]))
        return preds, targets

    preds, targets = study(12)
    ci = bootstrap_intervals(preds, preds, targets, reps=400)
    ap50 = coco_map(preds, targets)["map_50"]
    assert ci["map_50"][0] <= ap50 <= ci["map_50"][1]
    assert ci["rsna_thresholded"][0] <= rsna_score(preds, targets) <= ci["rsna_thresholded"][1]
    wide = ci["fp_per_image"][1] - ci["fp_per_image"][0]
    assert wide > 0
    big = study(200)
    narrow = bootstrap_intervals(big[0], big[0], big[1], reps=200)
    assert narrow["reps"] == 200 and narrow["level"] == 0.95
    assert narrow["fp_per_image"][1] - narrow["fp_per_image"][0] < wide
    assert bootstrap_intervals(preds, preds, targets, reps=50) == bootstrap_intervals(
        preds, preds, targets, reps=50
    )  # seeded
