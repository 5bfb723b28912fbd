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


def _extent(a, b, axis: int, hull: bool = False):
    """[N, M] side along `axis` (0: x, 1: y) of each pair's intersection, or with hull of the
    box enclosing both, clamped at 0, in the input dtype."""
    hi, lo = (np.maximum, np.minimum) if hull else (np.minimum, np.maximum)
    i, j = axis, axis + 2
    return np.maximum(
        hi(a[:, None, j], b[None, :, j]) - lo(a[:, None, i], b[None, :, i]), a.dtype.type(0)
    )


def _inter_union(a, b):
    inter = _extent(a, b, 0) * _extent(a, b, 1)
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
    hull = _extent(a, b, 0, hull=True) * _extent(a, b, 1, hull=True)
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
    hw, hh = _extent(a, b, 0, hull=True), _extent(a, b, 1, hull=True)
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


def suppress_contained(boxes, scores, idxs, fraction):
    """Greedy containment suppression: in decreasing score (ties: lower index first), a box is
    dropped when more than `fraction` of its area (inter / area, in the boxes' dtype, compared
    in double) lies inside one kept box of its class; a zero-area box is never dropped."""
    b, c = _f(boxes), _f(idxs)
    t = b.dtype.type
    keep = []
    for i in descending_order(scores):
        box = b[i]
        area = t(max(box[2] - box[0], t(0)) * max(box[3] - box[1], t(0)))
        kept = b[[k for k in keep if c[k] == c[i]]].reshape(-1, 4)
        w = np.maximum(np.minimum(kept[:, 2], box[2]) - np.maximum(kept[:, 0], box[0]), t(0))
        h = np.maximum(np.minimum(kept[:, 3], box[3]) - np.maximum(kept[:, 1], box[1]), t(0))
        if area > 0 and np.any(((w * h) / area).astype(np.float64) > fraction):
            continue
        keep.append(i)
    return np.array(keep, dtype=np.int64)


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


# --- rotated boxes ------------------------------------------------------------------------
# [N, 5] (cx, cy, w, h, angle in degrees, counter-clockwise on an image with y down: the point
# at local offset (u, v) is (cx + u cos a + v sin a, cy - u sin a + v cos a)); float64 numpy,
# vectorised over pairs. A box with w <= 0 or h <= 0 has IoU 0 with every box.


def rotated_corners(boxes):
    """[N, 5] -> [N, 4, 2] corners in a consistent cyclic order, float64."""
    b = np.asarray(boxes, np.float64).reshape(-1, 5)
    r = np.deg2rad(b[:, 4])
    c, s = np.cos(r)[:, None], np.sin(r)[:, None]
    u = b[:, 2:3] / 2 * np.array([1, -1, -1, 1])
    v = b[:, 3:4] / 2 * np.array([1, 1, -1, -1])
    return np.stack([b[:, :1] + u * c + v * s, b[:, 1:2] - u * s + v * c], -1)


def _clip_polygons(px, py, count, ax, ay, bx, by):
    """Sutherland-Hodgman, one step for P polygons at once: polygon p (px[p, :count[p]]) keeps
    the part left of the line a[p] -> b[p] (cross >= 0). Returns the new (px, py, count)."""
    k = px.shape[1]
    cols = np.arange(k)
    nxt = np.where(cols[None, :] + 1 < count[:, None], cols[None, :] + 1, 0)
    qx, qy = np.take_along_axis(px, nxt, 1), np.take_along_axis(py, nxt, 1)
    dx, dy = (bx - ax)[:, None], (by - ay)[:, None]
    sp = dx * (py - ay[:, None]) - dy * (px - ax[:, None])
    sq = dx * (qy - ay[:, None]) - dy * (qx - ax[:, None])
    valid = cols[None, :] < count[:, None]
    keep = valid & (sp >= 0)
    cross = valid & (((sp > 0) & (sq < 0)) | ((sp < 0) & (sq > 0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(cross, sp / np.where(cross, sp - sq, 1), 0)
    ox = np.stack([px, px + (qx - px) * t], 2).reshape(len(px), 2 * k)
    oy = np.stack([py, py + (qy - py) * t], 2).reshape(len(px), 2 * k)
    mask = np.stack([keep, cross], 2).reshape(len(px), 2 * k)
    order = np.argsort(~mask, axis=1, kind="stable")  # kept slots first, in polygon order
    count = mask.sum(1)
    width = max(int(count.max(initial=0)), 1)
    return (
        np.take_along_axis(ox, order, 1)[:, :width],
        np.take_along_axis(oy, order, 1)[:, :width],
        count,
    )


def rotated_intersections(corners1, corners2):
    """Areas of corners1[p] (convex quads, [P, 4, 2]) intersected with corners2[p]."""
    c2 = np.array(corners2, np.float64)
    # orient the clipping quads counter-clockwise in (x, y) so that their inside is on the left
    signed = np.sum(
        c2[:, :, 0] * np.roll(c2[:, :, 1], -1, 1) - np.roll(c2[:, :, 0], -1, 1) * c2[:, :, 1], 1
    )
    c2[signed < 0] = c2[signed < 0, ::-1]
    px, py = corners1[:, :, 0].copy(), corners1[:, :, 1].copy()
    count = np.full(len(px), 4)
    for e in range(4):
        a, b = c2[:, e], c2[:, (e + 1) % 4]
        px, py, count = _clip_polygons(px, py, count, a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    cols = np.arange(px.shape[1])
    nxt = np.where(cols[None, :] + 1 < count[:, None], cols[None, :] + 1, 0)
    qx, qy = np.take_along_axis(px, nxt, 1), np.take_along_axis(py, nxt, 1)
    terms = np.where(cols[None, :] < count[:, None], px * qy - qx * py, 0)
    return np.where(count >= 3, np.abs(terms.sum(1)) / 2, 0.0)


def _rotated_ious(b1, b2):
    """IoU of pairs b1[p], b2[p] ([P, 5] each), float64."""
    # about b1's centre: the shoelace of coordinates near 1e8 would cancel away every digit
    b1, b2 = b1.copy(), b2.copy()
    b2[:, :2] -= b1[:, :2]
    b1[:, :2] = 0
    a1, a2 = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
    ok = (b1[:, 2] > 0) & (b1[:, 3] > 0) & (b2[:, 2] > 0) & (b2[:, 3] > 0)
    inter = rotated_intersections(rotated_corners(b1), rotated_corners(b2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, np.clip(inter / (a1 + a2 - inter), 0, 1), 0.0)


def box_iou_rotated(boxes1, boxes2):
    """[N, 5], [M, 5] -> [N, M] float64 IoU by polygon clipping (every pair, in row chunks)."""
    a = np.asarray(boxes1, np.float64).reshape(-1, 5)
    b = np.asarray(boxes2, np.float64).reshape(-1, 5)
    out = np.zeros((len(a), len(b)))
    rows = max(1, 20000 // max(len(b), 1))
    for i in range(0, len(a), rows):
        blk = a[i : i + rows]
        pa, pb = np.repeat(blk, len(b), 0), np.tile(b, (len(blk), 1))
        out[i : i + rows] = _rotated_ious(pa, pb).reshape(len(blk), len(b))
    return out


def nms_rotated(boxes, scores, iou_threshold, idxs=None):
    """Greedy NMS of rotated boxes (per class of idxs when given), as a numpy user would write
    it: each kept box against the live later boxes whose bounding circles meet its own, in
    float64. Kept indices in decreasing score (ties: lower index first)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 5)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    b = b[order]
    cls = None if idxs is None else np.asarray(idxs)[order]
    radius = np.hypot(b[:, 2], b[:, 3]) / 2
    live = np.ones(len(b), bool)
    keep = []
    for i in range(len(b)):
        if not live[i]:
            continue
        keep.append(order[i])
        if iou_threshold < 0:  # every IoU (>= 0) is above it: the rest of the class goes
            live[i + 1 :] &= False if cls is None else cls[i + 1 :] != cls[i]
            continue
        rest = i + 1 + np.flatnonzero(live[i + 1 :])
        if cls is not None:
            rest = rest[cls[rest] == cls[i]]
        near = rest[np.hypot(*(b[rest, :2] - b[i, :2]).T) < radius[rest] + radius[i]]
        if len(near):
            iou = _rotated_ious(np.repeat(b[i : i + 1], len(near), 0), b[near])
            live[near[iou > iou_threshold]] = False
    return np.array(keep, dtype=np.int64)


# --- mask pasting (torchvision's paste_masks_in_image rules) --------------------------------
# Per box: pad the M x M mask by `padding` zeros; grow the box about its centre by
# (M + 2 padding) / M in the boxes' dtype; truncate the corners toward zero; resize the padded
# mask to max(x2 - x0 + 1, 1) x max(y2 - y0 + 1, 1) with F.interpolate's bilinear
# (align_corners=False) rules; paste at (x0, y0), clipped to the image. Arithmetic in the masks'
# dtype (float32 or float64), the box growth in the boxes' dtype.


def _resize_taps(d, n_in, n_out, t):
    """Bilinear (align_corners=False) source taps of output indices d (int array) when n_in
    samples are resized to n_out, in float type t: (i0, i1, l0, l1). The source index is
    clamped at 0, the index at n_in - 1 (its upper tap then repeats it), the weight to [0, 1]."""
    d = np.asarray(d, dtype=np.int64)
    if n_in == n_out:  # F.interpolate copies
        return d, d, np.ones(d.shape, t), np.zeros(d.shape, t)
    scale = t(n_in) / t(n_out)
    src = scale * (d.astype(t) + t(0.5)) - t(0.5)
    src = np.where(src < 0, t(0), src).astype(t)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    l1 = np.clip(src - i0.astype(t), t(0), t(1)).astype(t)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, (t(1) - l1).astype(t), l1


def paste_footprint(box, scale):
    """(x0, y0, x2, y2) of a box grown by `scale` about its centre in the box's dtype and
    truncated toward zero (torchvision's expand_boxes, then .to(int64))."""
    tb = box.dtype.type
    s = tb(scale)
    w_half = (box[2] - box[0]) * tb(0.5) * s
    h_half = (box[3] - box[1]) * tb(0.5) * s
    xc = (box[2] + box[0]) * tb(0.5)
    yc = (box[3] + box[1]) * tb(0.5)
    return tuple(int(np.trunc(v)) for v in (xc - w_half, yc - h_half, xc + w_half, yc + h_half))


def paste_masks(masks, boxes, image_shape, padding=1, threshold=None):
    """masks [K, M, M], boxes [K, 4] -> [K, H, W] probabilities (bool prob > threshold when
    given); a box wholly outside the image pastes nothing."""
    m, b = _f(masks), _f(boxes)
    t = m.dtype.type
    K, M = m.shape[0], m.shape[-1]
    H, W = image_shape
    Mp = M + 2 * padding
    out = np.zeros((K, H, W), m.dtype)
    for k in range(K):
        pad = np.zeros((Mp, Mp), m.dtype)
        pad[padding : padding + M, padding : padding + M] = m[k]
        x0, y0, x2, y2 = paste_footprint(b[k], float(Mp) / M)
        w, h = max(x2 - x0 + 1, 1), max(y2 - y0 + 1, 1)
        for y in range(max(y0, 0), min(y2 + 1, H)):
            iy0, iy1, ly0, ly1 = _resize_taps(y - y0, Mp, h, t)
            for x in range(max(x0, 0), min(x2 + 1, W)):
                ix0, ix1, lx0, lx1 = _resize_taps(x - x0, Mp, w, t)
                t0 = pad[iy0, ix0] * lx0 + pad[iy0, ix1] * lx1
                t1 = pad[iy1, ix0] * lx0 + pad[iy1, ix1] * lx1
                out[k, y, x] = t0 * ly0 + t1 * ly1
    return out if threshold is None else out > t(threshold)


def masks_to_labels(masks, boxes, scores, image_shape, threshold=0.5, padding=1):
    """int32 [H, W]: pixel = k + 1 of the highest-scoring mask k (ties: lower k) whose pasted
    probability is > threshold, else 0. boxes None: masks are [K, H, W] probabilities."""
    probs = _f(masks) if boxes is None else paste_masks(masks, boxes, image_shape, padding)
    s = _f(scores)
    H, W = image_shape
    out = np.zeros((H, W), np.int32)
    best = np.full((H, W), -np.inf)
    t = probs.dtype.type
    for k in range(probs.shape[0]):
        hit = (probs[k] > t(threshold)) & (s[k] > best)  # strictly greater: ties keep lower k
        out[hit] = k + 1
        best[hit] = s[k]
    return out


def weighted_boxes_fusion(
    boxes_list,
    scores_list,
    labels_list,
    weights=None,
    iou_thr=0.55,
    skip_box_thr=0.0,
    conf_type="avg",
    allows_overflow=False,
):
    """Weighted boxes fusion with fastdet's rules (ensemble-boxes' clustering, fastdet's tie
    orders): lists of numpy boxes [Ni, 4], scores [Ni], integer labels [Ni] per model ->
    (boxes float64 [K, 4], scores float64 [K], labels int64 [K]). Every box is compared with
    every cluster of its label; the running fused box is accumulated in float32."""
    m = len(boxes_list)
    w = np.ones(m) if weights is None else np.asarray(weights, np.float64)
    items = []  # (label, -weighted score, input position, box, weighted score, model)
    pos = 0
    for t in range(m):
        for b, s, lab in zip(
            np.asarray(boxes_list[t]).reshape(-1, 4), scores_list[t], labels_list[t], strict=True
        ):
            pos += 1
            if s < skip_box_thr:
                continue
            x1, y1, x2, y2 = (float(v) for v in b)
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
            x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))
            if (x2 - x1) * (y2 - y1) == 0.0:
                continue
            ws = float(s) * w[t]
            items.append((int(lab), -ws, pos, (x1, y1, x2, y2), ws, t))
    items.sort(key=lambda it: it[:3])

    def iou(c, b):
        inter = max(min(c[2], b[2]) - max(c[0], b[0]), 0.0) * max(
            min(c[3], b[3]) - max(c[1], b[1]), 0.0
        )
        union = (c[2] - c[0]) * (c[3] - c[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    out = []  # (score, first position, box, label)
    for label in sorted({it[0] for it in items}):
        clusters = []  # dicts: box, members [(box, ws, model)], first
        for lab, _, p, b, ws, t in items:
            if lab != label:
                continue
            best, best_iou = None, iou_thr
            for c in clusters:
                o = iou(c["box"], b)
                if o > best_iou:  # strictly better: the older cluster wins ties
                    best, best_iou = c, o
            if best is None:
                clusters.append({"box": b, "members": [(b, ws, t)], "first": p})
                continue
            best["members"].append((b, ws, t))
            acc = np.zeros(4, np.float32)
            conf = 0.0
            for mb, mws, _ in best["members"]:
                for k in range(4):  # float32 storage of a float64 sum, as numpy's += does
                    acc[k] = np.float32(float(acc[k]) + mws * mb[k])
                conf += mws
            n = len(best["members"])
            if conf != 0.0:
                best["box"] = tuple(float(np.float32(float(a) / conf)) for a in acc)
            else:
                best["box"] = tuple(
                    float(np.float32(sum(mb[k] for mb, _, _ in best["members"]) / n))
                    for k in range(4)
                )
        for c in clusters:
            mem = c["members"]
            n = len(mem)
            conf = sum(ws for _, ws, _ in mem)
            wsum = sum(w[t] for _, _, t in mem)
            if n > 1:
                s = max(ws for _, ws, _ in mem) if conf_type == "max" else conf / n
                s, wsum = float(np.float32(s)), float(np.float32(wsum))
            else:
                s = conf
            models = sorted({t for _, _, t in mem})
            if conf_type == "box_and_model_avg":
                s = s * n / wsum * sum(w[t] for t in models) / np.sum(w)
            elif conf_type == "absent_model_aware_avg":
                s = s * n / (wsum + sum(w[t] for t in range(m) if t not in models))
            elif conf_type == "max":
                s = s / np.max(w)
            else:
                s = s * (n if allows_overflow else min(n, m)) / np.sum(w)
            out.append((-float(s), c["first"], c["box"], label))
    out.sort(key=lambda r: r[:2])
    boxes = np.array([r[2] for r in out], np.float64).reshape(-1, 4)
    scores = np.array([-r[0] for r in out], np.float64)
    labels = np.array([r[3] for r in out], np.int64)
    return boxes, scores, labels
