"""Instance and detection scores: the 2018 Data Science Bowl score on label images, the RSNA
Pneumonia Detection Challenge score and COCO mAP on boxes.

Box inputs follow torchmetrics' MeanAveragePrecision: one dict per image, predictions
{"boxes" [N, 4], "scores" [N], "labels" [N]} and targets {"boxes" [M, 4], "labels" [M]}, boxes
(x1, y1, x2, y2) in pixels, numpy arrays or torch tensors. "labels" may be left out (one class).
Boxes must be finite with x2 >= x1 and y2 >= y1 (ValueError otherwise).
"""

from __future__ import annotations

import math

import numpy as np

from . import _inputs as inputs

# Thresholds written as literals (not arange) so "IoU > 0.55" compares with the double nearest
# 0.55, exactly as the competitions' own code did.
DSB_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
RSNA_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
# pycocotools' own values (linspace, not rounded), so ties at a threshold resolve as there
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1)


# ---------------------------------------------------------------- label images (DSB 2018)


def label_iou(pred_labels, gt_labels):
    """IoU of every predicted instance with every ground-truth instance.

    pred_labels, gt_labels: integer label images of one shape (2-D or 3-D), 0 = background, any
    positive ids (not necessarily consecutive). Returns (iou [P, G] float64, pred_ids [P],
    gt_ids [G]) with ids sorted. One pass over the pixels: the joint histogram of (pred, gt) label
    pairs (np.unique + np.bincount) gives every intersection at once."""
    p, g = inputs.labels(pred_labels, "pred_labels"), inputs.labels(gt_labels, "gt_labels")
    inputs.same_shape(p, g, "pred_labels", "gt_labels")
    pu, pi = np.unique(p.ravel(), return_inverse=True)
    gu, gi = np.unique(g.ravel(), return_inverse=True)
    joint = np.bincount(pi.ravel() * gu.size + gi.ravel(), minlength=pu.size * gu.size)
    joint = joint.reshape(pu.size, gu.size)
    area_p, area_g = joint.sum(1), joint.sum(0)
    pm, gm = pu > 0, gu > 0
    inter = joint[pm][:, gm].astype(np.float64)
    union = area_p[pm][:, None] + area_g[gm][None, :] - inter
    return inter / np.maximum(union, 1), pu[pm], gu[gm]


def _check_thresholds(thresholds, lo: float, name: str) -> np.ndarray:
    t = np.asarray(thresholds, np.float64).ravel()
    if t.size == 0 or not np.all((t >= lo) & (t < 1)):
        raise ValueError(
            f"{name} must be a non-empty list of values in [{lo}, 1), got {thresholds}"
        )
    return t


def dsb_image_score(pred_labels, gt_labels, thresholds=DSB_THRESHOLDS) -> float:
    """The 2018 Data Science Bowl score of one image: mean over thresholds t of
    TP / (TP + FP + FN), an instance pair being a match when IoU > t (strictly).

    Thresholds must be >= 0.5: then matches are one-to-one without any assignment step (IoU > 0.5
    means the pair shares more than half of each instance, so disjoint instances cannot both
    match one). Both images empty -> 1.0 (nothing to find, nothing found); exactly one empty -> 0.
    """
    t = _check_thresholds(thresholds, 0.5, "thresholds")
    iou, pids, gids = label_iou(pred_labels, gt_labels)
    n_p, n_g = pids.size, gids.size
    if n_p == 0 and n_g == 0:
        return 1.0
    tp = (iou[None] > t[:, None, None]).sum((1, 2))
    return float(np.mean(tp / (n_p + n_g - tp)))  # TP + FP + FN = P + G - TP


def dsb_score(pred_labels, gt_labels, *, thresholds=DSB_THRESHOLDS, return_per_image=False):
    """Mean 2018 Data Science Bowl score over images (`dsb_image_score` gives the rules).

    pred_labels, gt_labels: one pair of label images, or two lists of them (one per image).
    Returns the mean as a float, or (mean, per-image scores [N]) with return_per_image=True."""
    if inputs.both_lists(pred_labels, gt_labels, "pred_labels", "gt_labels", "lists"):
        scores = np.array(
            [dsb_image_score(p, g, thresholds) for p, g in zip(pred_labels, gt_labels)], np.float64
        )
    else:
        scores = np.array([dsb_image_score(pred_labels, gt_labels, thresholds)])
    mean = float(scores.mean()) if scores.size else float("nan")
    return (mean, scores) if return_per_image else mean


# ---------------------------------------------------------------- boxes


def _detections(preds, targets):
    p = inputs.detections(preds, "preds", with_scores=True)
    t = inputs.detections(targets, "targets", with_scores=False)
    inputs.same_length(p, t, "preds", "targets")
    for name, items in (("preds", p), ("targets", t)):
        for i, d in enumerate(items):
            b = d["boxes"]
            if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
                raise ValueError(
                    f"{name}[{i}]['boxes'] must be (x1, y1, x2, y2) with x2 >= x1 "
                    "and y2 >= y1, found an inverted box"
                )
    return p, t


def _confidence_order(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score; equal scores keep their input order."""
    return np.argsort(-scores, kind="mergesort")


# ---------------------------------------------------------------- RSNA pneumonia


def greedy_match(iou, thresholds, *, strict: bool = False, prefer_last: bool = False):
    """[T, P] bool: prediction p is matched at threshold thresholds[i] (all thresholds at once).

    The rows of iou [P, G] are the predictions by decreasing confidence; each in turn takes the
    still-free ground truth of highest IoU when that IoU >= t (> t with strict). Among equal
    IoUs the lower ground-truth index wins (the higher with prefer_last: pycocotools' rule).
    This is the one greedy matcher of the RSNA score, COCO mAP and match_detections."""
    iou = np.asarray(iou, np.float64)
    t = np.atleast_1d(np.asarray(thresholds, np.float64))
    n_p, n_g = iou.shape
    matched = np.zeros((t.size, n_p), bool)
    if n_g == 0:
        return matched
    free = np.ones((t.size, n_g), bool)
    rows = np.arange(t.size)
    for d in range(n_p):  # most confident first
        cand = np.where(free, iou[d][None, :], -np.inf)
        j = n_g - 1 - cand[:, ::-1].argmax(1) if prefer_last else cand.argmax(1)
        best = cand[rows, j]
        ok = best > t if strict else best >= t
        matched[ok, d] = True
        free[rows[ok], j[ok]] = False
    return matched


def match_detections(pred: dict, target: dict, iou_threshold: float = 0.5) -> np.ndarray:
    """is_tp [D] of one image's detections {"boxes", "scores"} against {"boxes"}: taken by
    decreasing score (ties keep input order), each matched to the free ground truth of highest
    IoU >= iou_threshold (greedy_match; IoU from fastdet.ops.box_iou in float32)."""
    from fastdet.ops import box_iou

    scores = np.asarray(pred["scores"], np.float64).reshape(-1)
    tp = np.zeros(len(scores), bool)
    gt = np.asarray(target["boxes"], np.float32).reshape(-1, 4)
    if len(gt) == 0 or len(scores) == 0:
        return tp
    order = _confidence_order(scores)
    iou = np.asarray(box_iou(np.asarray(pred["boxes"], np.float32).reshape(-1, 4), gt))
    tp[order] = greedy_match(iou[order], iou_threshold)[0]
    return tp


def _rsna_matches(iou: np.ndarray, t: np.ndarray, match: str) -> np.ndarray:
    """True positives [T] at thresholds t; iou is [P, G] with predictions by decreasing
    confidence."""
    if match == "confidence":
        return greedy_match(iou, t, strict=True).sum(1)
    n_p, n_g = iou.shape
    tp = np.zeros(t.size, np.int64)
    for i, x in enumerate(t):  # "kernel": each ground truth takes the first free prediction
        free = np.ones(n_p, bool)
        for g in range(n_g):
            hit = np.flatnonzero(free & (iou[:, g] >= x))
            if hit.size:
                free[hit[0]] = False
        tp[i] = n_p - free.sum()
    return tp


def rsna_image_score(
    pred_boxes, scores, gt_boxes, *, thresholds=RSNA_THRESHOLDS, match="confidence"
):
    """RSNA Pneumonia Detection Challenge score of one image, or None when the image has neither
    ground truth nor predictions (such images are left out of the mean).

    For each threshold t, predictions are taken by decreasing confidence (ties keep input order)
    and TP / (TP + FP + FN) is computed; the image's score is the mean over thresholds. An image
    with no ground truth and any prediction scores 0.

    match="confidence" (default): the challenge's stated rule, each prediction in turn matches
    the still-unmatched ground-truth box with the highest IoU if that IoU > t (ties: the lower
    index). match="kernel": the rule of the widely used Kaggle kernel ("map_iou"), which loops
    over ground-truth boxes and gives each the first still-unmatched prediction (in confidence
    order) with IoU >= t; the two differ only in rare crowded cases and at IoU exactly t.
    Box IoU is fastdet.ops.box_iou (zero-area boxes have IoU 0)."""
    from fastdet.ops import box_iou

    if match not in ("confidence", "kernel"):
        raise ValueError(f"match must be 'confidence' or 'kernel', got {match!r}")
    t = _check_thresholds(thresholds, 0.0, "thresholds")
    n_p, n_g = len(pred_boxes), len(gt_boxes)
    if n_g == 0:
        return None if n_p == 0 else 0.0
    order = _confidence_order(np.asarray(scores, np.float64))
    iou = np.asarray(
        box_iou(
            np.asarray(pred_boxes, np.float64)[order].reshape(-1, 4),
            np.asarray(gt_boxes, np.float64).reshape(-1, 4),
        )
    )
    tp = _rsna_matches(iou, t, match).astype(np.float64)
    return float(np.mean(tp / (n_p + n_g - tp)))


def rsna_score(
    preds, targets, *, thresholds=RSNA_THRESHOLDS, match="confidence", return_per_image=False
):
    """Mean RSNA Pneumonia Detection Challenge score over images (rules: `rsna_image_score`).

    preds: list of {"boxes", "scores"[, "labels"]}; targets: list of {"boxes"[, "labels"]}, one
    per image. Labels are ignored (the challenge has one class). Images with neither boxes nor
    predictions are skipped; the mean is NaN when every image is skipped. With
    return_per_image=True returns (mean, per-image scores [N], NaN for skipped images)."""
    p, t = _detections(preds, targets)
    per = np.array(
        [
            np.nan if s is None else s
            for s in (
                rsna_image_score(
                    a["boxes"], a["scores"], b["boxes"], thresholds=thresholds, match=match
                )
                for a, b in zip(p, t)
            )
        ],
        np.float64,
    )
    kept = per[~np.isnan(per)]
    mean = float(kept.mean()) if kept.size else float("nan")
    return (mean, per) if return_per_image else mean


# ---------------------------------------------------------------- COCO mAP


def _coco_iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[D, G] box IoU computed as pycocotools' maskUtils.iou does: boxes as (x, y, w, h) in
    float64, area w * h (no +1), intersection from x + w, so values agree to the last bit."""
    dx, dy, dw, dh = dt[:, 0], dt[:, 1], dt[:, 2] - dt[:, 0], dt[:, 3] - dt[:, 1]
    gx, gy, gw, gh = gt[:, 0], gt[:, 1], gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    w = np.minimum((dx + dw)[:, None], (gx + gw)[None]) - np.maximum(dx[:, None], gx[None])
    h = np.minimum((dy + dh)[:, None], (gy + gh)[None]) - np.maximum(dy[:, None], gy[None])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (dw * dh)[:, None] + (gw * gh)[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def _coco_match(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """[T, D] bool: detection d (sorted by score) is a true positive at threshold t, by
    pycocotools' greedy rule (IoU >= t, thresholds capped at 1 - 1e-10; on equal IoU the later
    ground truth wins)."""
    return greedy_match(iou, np.minimum(thresholds, 1 - 1e-10), prefer_last=True)


def _mask_iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[D, G] IoU of bool masks [D, H, W] and [G, H, W] (pycocotools' RLE IoU: intersection
    over union of pixel counts, float64), by a sparse product so large sparse sets are cheap."""
    from scipy import sparse

    if dt.shape[0] == 0 or gt.shape[0] == 0:
        return np.zeros((dt.shape[0], gt.shape[0]))
    a = sparse.csr_matrix(dt.reshape(dt.shape[0], -1), dtype=np.float64)
    b = sparse.csr_matrix(gt.reshape(gt.shape[0], -1), dtype=np.float64)
    inter = np.asarray((a @ b.T).todense()).reshape(dt.shape[0], gt.shape[0])
    union = np.asarray(a.sum(1)).reshape(-1, 1) + np.asarray(b.sum(1)).reshape(1, -1) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _class_pr(p, t, cls, max_det, thresholds, key="boxes"):
    """Scores [D], matches [T, D] over all images for one class, and its ground-truth count;
    key "boxes" (box IoU) or "masks" (mask IoU)."""
    iou = _coco_iou if key == "boxes" else _mask_iou
    scores, matches, n_gt = [], [], 0
    for a, b in zip(p, t):
        gt = b[key][b["labels"] == cls]
        n_gt += gt.shape[0]
        keep = a["labels"] == cls
        if not keep.any():
            continue
        s, dt = a["scores"][keep], a[key][keep]
        order = _confidence_order(s)[:max_det]
        scores.append(s[order])
        matches.append(_coco_match(iou(dt[order], gt), thresholds))
    if not scores:
        return np.zeros(0), np.zeros((thresholds.size, 0), bool), n_gt
    return np.concatenate(scores), np.concatenate(matches, 1), n_gt


def _precision_recall(scores, matches, n_gt):
    """pycocotools' accumulate for one class: precision [T, R] at the recall thresholds (101
    points, interpolated as the right-running max) and the final recall [T]."""
    order = _confidence_order(scores)  # stable: ties keep image order, then in-image order
    m = matches[:, order]
    tp = np.cumsum(m, 1, dtype=np.float64)
    fp = np.cumsum(~m, 1, dtype=np.float64)
    n_t, n_d = m.shape
    prec = np.zeros((n_t, COCO_RECALL_THRESHOLDS.size))
    rec = np.zeros(n_t)
    if n_d == 0:
        return prec, rec
    for k in range(n_t):
        rc = tp[k] / n_gt
        pr = tp[k] / (fp[k] + tp[k] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
        inside = idx < n_d
        prec[k, inside] = pr[idx[inside]]
        rec[k] = rc[-1]
    return prec, rec


def _masks(items, name: str) -> None:
    """Checks and converts each dict's "masks" to bool [N, H, W], one per box."""
    for i, d in enumerate(items):
        if "masks" not in d:
            raise ValueError(f"{name}[{i}] has no 'masks': iou_type='segm' needs them")
        m = inputs.binary(d["masks"], f"{name}[{i}]['masks']")
        if m.ndim != 3 or m.shape[0] != d["boxes"].shape[0]:
            raise ValueError(
                f"{name}[{i}]['masks'] must be [N, H, W] with N = {d['boxes'].shape[0]} (its "
                f"boxes), got {tuple(m.shape)}"
            )
        d["masks"] = m


def coco_map(preds, targets, *, max_detections=100, iou_type="bbox"):
    """COCO bbox or segm mAP as pycocotools' COCOeval computes it (area range "all", no crowd
    objects).

    preds: list of {"boxes" [N, 4], "scores" [N], "labels" [N]}; targets: list of
    {"boxes" [M, 4], "labels" [M]}, one per image, boxes x1, y1, x2, y2 in pixels.

    Per class and image the detections are sorted by score and cut to `max_detections`; each is
    matched greedily to the best free ground truth with IoU >= t for t in .50:.05:.95 (IoU as
    pycocotools computes it, w * h areas without +1). Precision is interpolated at 101 recall
    points, averaged over thresholds and over the classes that have ground truth (classes that
    only occur in predictions are ignored, as in COCOeval).

    iou_type "segm" matches by mask IoU instead (pycocotools' iouType="segm"): every dict then
    also holds "masks" [N, H, W] binary (bool or 0/1), one per box, all of one image's size.

    Returns {"map": AP@[.5:.95], "map_50", "map_75", "mar_100": recall averaged over thresholds
    and classes, "classes": [K] labels with ground truth, "map_per_class": [K]}. When no image
    has ground truth the scores are -1.0, as in pycocotools and torchmetrics."""
    if int(max_detections) < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    p, t = _detections(preds, targets)
    key = "boxes" if iou_type == "bbox" else "masks"
    if key == "masks":
        _masks(p, "preds")
        _masks(t, "targets")
    classes = np.unique(np.concatenate([b["labels"] for b in t] + [np.zeros(0, np.int64)]))
    thr = COCO_IOU_THRESHOLDS
    prec = np.zeros((thr.size, COCO_RECALL_THRESHOLDS.size, classes.size))
    rec = np.zeros((thr.size, classes.size))
    for k, cls in enumerate(classes):
        s, m, n_gt = _class_pr(p, t, cls, int(max_detections), thr, key)
        prec[:, :, k], rec[:, k] = _precision_recall(s, m, n_gt)
    if classes.size == 0:
        none = -1.0
        return {
            "map": none,
            "map_50": none,
            "map_75": none,
            "mar_100": none,
            "classes": classes,
            "map_per_class": np.zeros(0),
        }
    i50, i75 = int(np.argmin(abs(thr - 0.5))), int(np.argmin(abs(thr - 0.75)))
    return {
        "map": float(prec.mean()),
        "map_50": float(prec[i50].mean()),
        "map_75": float(prec[i75].mean()),
        "mar_100": float(rec.mean()),
        "classes": classes,
        "map_per_class": prec.mean((0, 1)),
    }


# ---------------------------------------------------------------- FROC and bootstrap

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # false positives per image


def froc(preds, targets, rates=FROC_RATES, iou_threshold: float = 0.5) -> dict:
    """Free-response ROC, the lesion-detection standard: {"rates": false positives per image,
    "sensitivity": the fraction of ground-truth boxes found at the lowest score threshold whose
    false positives per image stay within each rate, "mean": their mean}. Detections are
    matched per image as match_detections does (greedy by score, IoU >= iou_threshold);
    sensitivities are NaN without ground truth."""
    p, t = _detections(preds, targets)
    scores, hits, n_gt = [], [], 0
    for a, b in zip(p, t):
        n_gt += len(b["boxes"])
        scores.append(np.asarray(a["scores"], np.float64))
        hits.append(match_detections(a, b, iou_threshold))
    s = np.concatenate(scores + [np.zeros(0)])
    order = np.argsort(-s, kind="stable")
    hit = np.concatenate(hits + [np.zeros(0, bool)])[order]
    tp = np.concatenate([[0], np.cumsum(hit)])
    fp_rate = np.concatenate([[0], np.cumsum(~hit)]) / max(len(p), 1)
    sens = []
    for r in rates:
        k = int(np.searchsorted(fp_rate, r, side="right")) - 1  # the last prefix within r
        sens.append(float(tp[k] / n_gt) if n_gt else math.nan)
    return {"rates": [float(r) for r in rates], "sensitivity": sens, "mean": float(np.mean(sens))}


def _ap50_pieces(p, t, classes, max_det):
    """Per image, per class: (scores, matches [1, D] at IoU 0.5, ground-truth count)."""
    thr = np.array([0.5])
    return [[_class_pr([a], [b], c, max_det, thr) for c in classes] for a, b in zip(p, t)]


def _ap50_of(pieces, idx, n_classes) -> float:
    """COCO AP50 (coco_map's map_50) of the images idx, from _ap50_pieces."""
    aps = []
    for k in range(n_classes):
        n_gt = sum(pieces[i][k][2] for i in idx)
        if n_gt == 0:
            continue
        s = np.concatenate([pieces[i][k][0] for i in idx])
        m = np.concatenate([pieces[i][k][1] for i in idx], 1)
        aps.append(_precision_recall(s, m, n_gt)[0].mean())
    return float(np.mean(aps)) if aps else math.nan


def bootstrap_intervals(
    preds, kept, targets, max_detections: int = 100, reps: int = 1000, seed: int = 0
) -> dict:
    """95% bootstrap intervals over images (reps resamples with replacement, percentiles 2.5 and
    97.5) of COCO AP50 of `preds`, and of the RSNA score and the false positives per image of
    `kept` (the detections at the operating point's score threshold), each [low, high]; with
    few images they are wide, which is the point of reporting them."""
    p, t = _detections(preds, targets)
    n = len(p)
    classes = np.unique(np.concatenate([b["labels"] for b in t] + [np.zeros(0, np.int64)]))
    pieces = _ap50_pieces(p, t, classes, int(max_detections))
    _, rsna = rsna_score(kept, targets, return_per_image=True)
    fp = np.array([(~match_detections(a, b)).sum() for a, b in zip(*_detections(kept, targets))])
    rng = np.random.default_rng(seed)
    draws = {"map_50": [], "rsna_thresholded": [], "fp_per_image": []}
    for _ in range(reps if n else 0):
        idx = rng.integers(0, n, n)
        draws["map_50"].append(_ap50_of(pieces, idx, classes.size))
        r = rsna[idx]
        draws["rsna_thresholded"].append(
            float(r[~np.isnan(r)].mean()) if (~np.isnan(r)).any() else math.nan
        )
        draws["fp_per_image"].append(float(fp[idx].mean()))
    out = {}
    for k, v in draws.items():
        v = np.asarray(v, np.float64)
        v = v[~np.isnan(v)]
        out[k] = (
            [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
            if v.size
            else [math.nan] * 2
        )
    return {**out, "reps": reps, "level": 0.95}
