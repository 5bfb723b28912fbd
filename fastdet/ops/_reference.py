"""Slow, obviously-correct references for the ops, in plain numpy and Python loops.

The tests check every kernel against these (and against torchvision where it has the op). They
take and return numpy arrays, use no torch and no fastdet kernel, and favour clarity over speed:
keep inputs to a few thousand boxes. Boxes are [N, 4] (x1, y1, x2, y2).

Conventions, as fastdet documents them: a zero-area or inverted box has area 0 and IoU 0 with
every box (never NaN); ties in score keep the lower index first; batched_nms keeps classes apart.
Arithmetic happens in the input dtype where fastdet promises bit-identical decisions (nms,
soft_nms); pass float32 or float64 arrays (fastdet computes float16/bfloat16 in float32).
"""

from __future__ import annotations

import math

import numpy as np


def _f(x):
    return np.asarray(x)


def box_area(boxes):
    """[N, 4] -> [N]: max(x2 - x1, 0) * max(y2 - y1, 0), in the input dtype."""
    b = _f(boxes)
    zero = b.dtype.type(0)
    return np.maximum(b[:, 2] - b[:, 0], zero) * np.maximum(b[:, 3] - b[:, 1], zero)


def _inter_union(a, b):
    zero = a.dtype.type(0)
    w = np.maximum(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), zero
    )
    h = np.maximum(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), zero
    )
    inter = w * h
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter, union


def box_iou(boxes1, boxes2):
    """[N, 4], [M, 4] -> [N, M] IoU; 0 where the union is empty (degenerate boxes)."""
    a, b = _f(boxes1), _f(boxes2)
    inter, union = _inter_union(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(a.dtype)


def generalized_box_iou(boxes1, boxes2):
    """[N, 4], [M, 4] -> [N, M] GIoU = IoU - (hull - union) / hull; IoU alone where hull is 0."""
    a, b = _f(boxes1), _f(boxes2)
    inter, union = _inter_union(a, b)
    iou = box_iou(a, b)
    zero = a.dtype.type(0)
    hw = np.maximum(
        np.maximum(a[:, None, 2], b[None, :, 2]) - np.minimum(a[:, None, 0], b[None, :, 0]), zero
    )
    hh = np.maximum(
        np.maximum(a[:, None, 3], b[None, :, 3]) - np.minimum(a[:, None, 1], b[None, :, 1]), zero
    )
    hull = hw * hh
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hull > 0, iou - (hull - union) / np.where(hull > 0, hull, 1), iou).astype(
            a.dtype
        )


def distance_box_iou(boxes1, boxes2, eps=1e-7):
    """[N, 4], [M, 4] -> [N, M] DIoU = IoU - d^2 / (c^2 + eps): d between the centres, c the
    diagonal of the enclosing box (sides clamped at 0); IoU alone where c^2 + eps is 0."""
    a, b = _f(boxes1), _f(boxes2)
    t = a.dtype.type
    iou = box_iou(a, b)
    hw = np.maximum(
        np.maximum(a[:, None, 2], b[None, :, 2]) - np.minimum(a[:, None, 0], b[None, :, 0]), t(0)
    )
    hh = np.maximum(
        np.maximum(a[:, None, 3], b[None, :, 3]) - np.minimum(a[:, None, 1], b[None, :, 1]), t(0)
    )
    diag = hw * hw + hh * hh + t(eps)
    dx = (a[:, None, 0] + a[:, None, 2]) / t(2) - (b[None, :, 0] + b[None, :, 2]) / t(2)
    dy = (a[:, None, 1] + a[:, None, 3]) / t(2) - (b[None, :, 1] + b[None, :, 3]) / t(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        pen = np.where(diag > 0, (dx * dx + dy * dy) / np.where(diag > 0, diag, 1), 0)
    return (iou - pen).astype(a.dtype)


def aspect_angle(boxes):
    """[N, 4] -> [N] atan(w / h) with sides clamped at 0; pi / 2 where h is 0 and w is not, 0
    for a point (CIoU's aspect term, finite for every box)."""
    b = _f(boxes).astype(np.float64)
    w, h = np.maximum(b[:, 2] - b[:, 0], 0), np.maximum(b[:, 3] - b[:, 1], 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h > 0, np.arctan(w / np.where(h > 0, h, 1)), np.where(w > 0, np.pi / 2, 0))


def complete_box_iou(boxes1, boxes2, eps=1e-7):
    """[N, 4], [M, 4] -> [N, M] CIoU = DIoU - alpha v, v = 4 / pi^2 (angle1 - angle2)^2 and
    alpha = v / (1 - IoU + v + eps), in the input dtype (the angles' atan in float64, rounded)."""
    a, b = _f(boxes1), _f(boxes2)
    t = a.dtype.type
    iou = box_iou(a, b)
    diou = distance_box_iou(a, b, eps)
    d = aspect_angle(a).astype(a.dtype)[:, None] - aspect_angle(b).astype(a.dtype)[None, :]
    v = t(4 / np.pi**2) * (d * d)
    den = t(1) - iou + v + t(eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, diou - v / np.where(den > 0, den, 1) * v, diou).astype(a.dtype)


def roi_pool(input, rois, output_size, spatial_scale=1.0):
    """[N, C, H, W], [K, 5] -> [K, C, PH, PW] by torchvision's rules, in Python loops: corners
    scaled and rounded half away from zero, malformed RoIs 1x1, bin p over [floor(p * bin),
    ceil((p + 1) * bin)) + start clipped to the map, empty bins 0. Scaling and the bin arithmetic
    in the input dtype."""
    x, r = np.asarray(input), np.asarray(rois)
    t = x.dtype.type
    ph_, pw_ = output_size
    _, C, H, W = x.shape
    out = np.zeros((len(r), C, ph_, pw_), x.dtype)

    def rnd(v):
        v = float(t(v) * t(spatial_scale))
        return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)

    for k, (bi, x1, y1, x2, y2) in enumerate(r):
        sx, sy, ex, ey = rnd(x1), rnd(y1), rnd(x2), rnd(y2)
        bin_h = t(max(ey - sy + 1, 1)) / t(ph_)
        bin_w = t(max(ex - sx + 1, 1)) / t(pw_)
        for ph in range(ph_):
            h0 = min(max(int(math.floor(t(ph) * bin_h)) + sy, 0), H)
            h1 = min(max(int(math.ceil(t(ph + 1) * bin_h)) + sy, 0), H)
            for pw in range(pw_):
                w0 = min(max(int(math.floor(t(pw) * bin_w)) + sx, 0), W)
                w1 = min(max(int(math.ceil(t(pw + 1) * bin_w)) + sx, 0), W)
                if h1 > h0 and w1 > w0:
                    out[k, :, ph, pw] = x[int(bi), :, h0:h1, w0:w1].reshape(C, -1).max(1)
    return out


def ious_with(kept, cand):
    """IoU of one box `cand` [4] with each of the boxes `kept` [K, 4], as torchvision's nms
    computes it, in their dtype: inter / (area_kept + area_cand - inter); 0 where either box is
    degenerate (zero-area or inverted). Element-wise numpy arithmetic rounds exactly as scalar
    C++ does, so the decisions at a threshold are bit-identical to a scalar loop."""
    kept = np.asarray(kept).reshape(-1, 4)
    t = kept.dtype.type
    zero = t(0)
    ak = np.maximum(kept[:, 2] - kept[:, 0], zero) * np.maximum(kept[:, 3] - kept[:, 1], zero)
    ac = t(max(cand[2] - cand[0], zero) * max(cand[3] - cand[1], zero))
    w = np.maximum(np.minimum(kept[:, 2], cand[2]) - np.maximum(kept[:, 0], cand[0]), zero)
    h = np.maximum(np.minimum(kept[:, 3], cand[3]) - np.maximum(kept[:, 1], cand[1]), zero)
    inter = w * h
    ok = (ak > 0) & (ac > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, inter / np.where(ok, ak + ac - inter, t(1)), zero).astype(t)


def descending_order(scores):
    """Indices in decreasing score; ties keep the lower index first (a stable sort)."""
    s = _f(scores)
    return sorted(range(len(s)), key=lambda i: -float(s[i]))  # Python's sort is stable


def nms(boxes, scores, iou_threshold):
    """Greedy NMS: a box is dropped when its IoU with an earlier kept box is > iou_threshold
    (compared in double). Returns int64 indices of the kept boxes in decreasing score."""
    b = _f(boxes)
    keep = []
    for i in descending_order(scores):
        if not np.any(ious_with(b[keep], b[i]).astype(np.float64) > iou_threshold):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """nms within each class of idxs; the kept indices of all classes in decreasing score
    (ties: lower index first)."""
    b, s, c = _f(boxes), _f(scores), _f(idxs)
    kept = []
    for cls in np.unique(c):
        members = np.flatnonzero(c == cls)
        kept += [int(members[k]) for k in nms(b[members], s[members], iou_threshold)]
    rank = {i: r for r, i in enumerate(descending_order(s))}
    return np.array(sorted(kept, key=rank.__getitem__), dtype=np.int64)


def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian"):
    """Soft-NMS as fastdet/ops/soft_nms.py documents it. Boxes with score < score_threshold are
    dropped at the start. Each step selects the live box with the highest current score (ties:
    lower index), then decays every other live box by its IoU o with it (o in the boxes' dtype,
    as box_iou): linear s *= (1 - o) if o > iou_threshold; gaussian s *= exp(-o^2 / sigma),
    the factor in double and the product rounded to the scores' dtype. A box whose decayed score
    is < score_threshold dies. Returns (keep int64, decayed scores at selection)."""
    b, s = _f(boxes), _f(scores)
    t = s.dtype.type
    live = {i: t(s[i]) for i in range(len(s)) if float(s[i]) >= score_threshold}
    keep, out = [], []
    while live:
        best = min(live, key=lambda i: (-float(live[i]), i))
        keep.append(best)
        out.append(live.pop(best))
        others = list(live)
        for i, o in zip(others, ious_with(b[others], b[best]).tolist()):
            if method == "linear":
                f = 1.0 - o if o > iou_threshold else 1.0
            else:
                f = math.exp(-(o * o) / sigma)
            live[i] = t(float(live[i]) * f)
            if float(live[i]) < score_threshold:
                del live[i]
    return np.array(keep, dtype=np.int64), np.array(out, dtype=s.dtype)


def _centres(boxes):
    b = np.asarray(boxes, dtype=np.float64)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


def encode(reference_boxes, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
    """BoxCoder.encode_single in float64: (wx (gx - px) / pw, wy (gy - py) / ph,
    ww log(gw / pw), wh log(gh / ph)) with centres and sizes of g (reference) and p (proposals)."""
    gx, gy, gw, gh = _centres(reference_boxes)
    px, py, pw, ph = _centres(proposals)
    wx, wy, ww, wh = weights
    with np.errstate(all="ignore"):
        return np.stack(
            [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * np.log(gw / pw), wh * np.log(gh / ph)],
            axis=1,
        )


DEFAULT_CLIP = math.log(1000.0 / 16)


def decode(rel_codes, boxes, weights=(1.0, 1.0, 1.0, 1.0), clip=DEFAULT_CLIP):
    """BoxCoder.decode_single in float64: codes [N, 4k] against boxes [N, 4] -> [N, 4k],
    with dw, dh (after dividing by their weights) clamped above at `clip`."""
    codes = np.asarray(rel_codes, dtype=np.float64)
    cx, cy, w, h = _centres(boxes)
    wx, wy, ww, wh = weights
    out = np.empty_like(codes)
    for i in range(codes.shape[0]):
        for j in range(codes.shape[1] // 4):
            dx, dy, dw, dh = codes[i, 4 * j : 4 * j + 4]
            dw, dh = min(dw / ww, clip), min(dh / wh, clip)
            pcx, pcy = dx / wx * w[i] + cx[i], dy / wy * h[i] + cy[i]
            pw, ph = math.exp(dw) * w[i], math.exp(dh) * h[i]
            out[i, 4 * j : 4 * j + 4] = (
                pcx - 0.5 * pw,
                pcy - 0.5 * ph,
                pcx + 0.5 * pw,
                pcy + 0.5 * ph,
            )
    return out


def cell_anchors(sizes, aspect_ratios):
    """Base anchors centred on 0, for each ratio for each size: round([-w, -h, w, h] / 2) with
    h = size * sqrt(ratio), w = size / sqrt(ratio), computed in float32 as torchvision does."""
    out = []
    for r in aspect_ratios:
        hr = np.sqrt(np.float32(r))
        wr = np.float32(1) / hr
        for s in sizes:
            w, h = wr * np.float32(s), hr * np.float32(s)
            out.append(np.round(np.array([-w, -h, w, h], dtype=np.float32) / np.float32(2)))
    return np.array(out, dtype=np.float32).reshape(-1, 4)


def grid_anchors(sizes, aspect_ratios, grid_size, stride):
    """One level's anchors [gh * gw * A, 4] (float64): row-major positions (y, x), and at each
    position the cell anchors shifted by (x * stride_w, y * stride_h)."""
    base = cell_anchors(sizes, aspect_ratios).astype(np.float64)
    (gh, gw), (sh, sw) = grid_size, stride
    out = []
    for y in range(gh):
        for x in range(gw):
            for a in base:
                out.append(a + (x * sw, y * sh, x * sw, y * sh))
    return np.array(out, dtype=np.float64).reshape(-1, 4)


def clip_boxes_to_image(boxes, size):
    """[..., 4] boxes with x clamped to [0, width] and y to [0, height]; size = (height, width)."""
    b = np.array(boxes, copy=True)
    h, w = size
    b[..., 0::2] = np.clip(b[..., 0::2], 0, w)
    b[..., 1::2] = np.clip(b[..., 1::2], 0, h)
    return b


def remove_small_boxes(boxes, min_size):
    """Increasing int64 indices of the boxes with width >= min_size and height >= min_size."""
    b = _f(boxes)
    t = b.dtype.type
    keep = [
        i
        for i in range(len(b))
        if b[i, 2] - b[i, 0] >= t(min_size) and b[i, 3] - b[i, 1] >= t(min_size)
    ]
    return np.array(keep, dtype=np.int64)
