"""weighted_boxes_fusion (Solovyev, Wang and Gabruseva, 2021): fuse the detections of several
models into one set, with the rules of the `ensemble-boxes` package's `weighted_boxes_fusion`.

Per label, the boxes of all models in decreasing weighted score (score * model weight) each join
the cluster whose running fused box has the highest IoU with them, if that IoU is > iou_thr,
or start a new cluster. A cluster's box is the weighted-score average of its boxes; its score
follows conf_type, then is rescaled by the number of models (see `weighted_boxes_fusion`).

The CPU kernel finds the best cluster through a grid of cluster centres instead of scanning them
all; the match is provably the same (csrc/cpu/weighted_boxes_fusion.cpp). On the GPU, torch ops
filter and sort the boxes and one CUDA block per label clusters them (csrc/cuda/).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._ext import _C
from . import _arrays as arrays

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
_CONF_CODE = {name: i for i, name in enumerate(CONF_TYPES)}  # fastdet::wbf::ConfType


def _wbf(boxes, scores, labels, models, skip, weights, iou_thr, conf_type, allows_overflow):
    """The kernel on flat arrays (numpy or tensors; CUDA tensors take the staged GPU path):
    boxes float64 [N, 4], scores float64 [N], labels and models int64 [N], skip bool [N],
    weights float64 [M] (a CPU array)."""
    if not 0 <= conf_type < len(CONF_TYPES):  # only reachable through torch.ops.fastdet
        raise ValueError(f"conf_type must be in [0, {len(CONF_TYPES)}), got {conf_type}")
    n = boxes.shape[0]
    w = weights.numpy() if isinstance(weights, Tensor) else np.asarray(weights)
    if arrays.is_cuda(boxes):
        return _wbf_staged(
            boxes, scores, labels, models, skip, w, iou_thr, conf_type, allows_overflow
        )
    out_b = arrays.empty(boxes, (n, 4), np.float64)
    out_s = arrays.empty(boxes, (n,), np.float64)
    out_l = arrays.empty(boxes, (n,), np.int64)
    count = 0
    if n:
        count = arrays.launch(
            boxes,
            "weighted_boxes_fusion",
            arrays.ptr(boxes),
            arrays.ptr(scores),
            arrays.ptr(labels),
            arrays.ptr(models),
            arrays.ptr(skip),
            n,
            arrays.ptr(w),
            w.shape[0],
            float(np.sum(w)),  # numpy's (pairwise) sum, as ensemble-boxes divides by it
            float(np.max(w)) if w.shape[0] else 1.0,
            iou_thr,
            conf_type,
            allows_overflow,
            arrays.ptr(out_b),
            arrays.ptr(out_s),
            arrays.ptr(out_l),
        )
    if count < 0:
        raise arrays.status_error(count, "weighted_boxes_fusion")
    copy = (lambda x: x.clone()) if isinstance(boxes, Tensor) else (lambda x: x.copy())
    return copy(out_b[:count]), copy(out_s[:count]), copy(out_l[:count])


def _wbf_staged(boxes, scores, labels, models, skip, w, iou_thr, conf_type, allows_overflow):
    """The GPU path (torch tensors; runs on CPU tensors too, which the tests use to check it
    against the CPU kernel): the prefilter, sort and final scores as torch ops on the device,
    the clustering in the wbf_cluster kernel. Same arithmetic as the CPU kernel, so the same
    boxes; the distinct-model weight sums of "box_and_model_avg" and "absent_model_aware_avg"
    are atomic sums on the GPU (their scores may differ from the CPU's in the last bits)."""
    dev = boxes.device
    m = w.shape[0]
    f64 = torch.float64
    empty = (boxes.new_zeros((0, 4)), scores.new_zeros((0,)), labels.new_zeros((0,)))
    if boxes.shape[0] == 0:
        return empty
    bad = (models < 0) | (models >= m)
    finite = torch.isfinite(boxes).all() & torch.isfinite(scores).all()
    if bool(bad.any()):  # one sync for both checks: the flags are read together
        raise arrays.status_error(int(_C.Status.bad_index), "weighted_boxes_fusion")
    if not bool(finite):
        raise arrays.status_error(int(_C.Status.non_finite), "weighted_boxes_fusion")
    wt = torch.from_numpy(w).to(dev)
    # ensemble-boxes' prefilter: swap inverted sides, clip to [0, 1], drop zero areas.
    x1 = torch.minimum(boxes[:, 0], boxes[:, 2]).clamp(0, 1)
    x2 = torch.maximum(boxes[:, 0], boxes[:, 2]).clamp(0, 1)
    y1 = torch.minimum(boxes[:, 1], boxes[:, 3]).clamp(0, 1)
    y2 = torch.maximum(boxes[:, 1], boxes[:, 3]).clamp(0, 1)
    clipped = torch.stack([x1, y1, x2, y2], 1)
    keep = ~skip & ((x2 - x1) * (y2 - y1) != 0)
    idx = keep.nonzero().squeeze(1)
    if idx.numel() == 0:
        return empty
    ws = scores * wt[models]
    # label, then decreasing weighted score, then input position (stable sorts, last key first)
    idx = idx[torch.sort(ws[idx], descending=True, stable=True).indices]
    idx = idx[torch.sort(labels[idx], stable=True).indices]
    k = idx.numel()
    lab = labels[idx].contiguous()
    seg_labels, counts = torch.unique_consecutive(lab, return_counts=True)
    nseg = seg_labels.numel()
    seg = torch.zeros(nseg + 1, dtype=torch.int64, device=dev)
    seg[1:] = torch.cumsum(counts, 0)
    seg_of = torch.repeat_interleave(torch.arange(nseg, device=dev), counts)  # per sorted box
    ib = clipped[idx].contiguous()
    iws = ws[idx].contiguous()
    iw = wt[models[idx]].contiguous()
    ipos = idx.contiguous()
    ob = torch.empty((k, 4), dtype=f64, device=dev)
    os_ = torch.empty(k, dtype=f64, device=dev)
    ow = torch.empty(k, dtype=f64, device=dev)
    oc = torch.empty(k, dtype=torch.int64, device=dev)
    of = torch.empty(k, dtype=torch.int64, device=dev)
    ncl = torch.empty(nseg, dtype=torch.int64, device=dev)
    assign = torch.empty(k, dtype=torch.int64, device=dev)
    ptrs = [arrays.ptr(x) for x in (ib, iws, iw, ipos, seg)]
    outs = [arrays.ptr(x) for x in (ob, os_, ow, oc, of, ncl, assign)]
    if boxes.is_cuda:
        ws_args, _keep_alive = arrays.workspace(boxes, "wbf_cluster_workspace_bytes", k)
        arrays.launch(boxes, "wbf_cluster", *ptrs, nseg, iou_thr, conf_type, *outs, *ws_args)
    else:
        _C.cpu.wbf_cluster(*ptrs, nseg, iou_thr, conf_type, *outs)
    # the cluster rows: row seg[s] + c for c < ncl[s]
    rows = (torch.arange(k, device=dev) - seg[seg_of] < ncl[seg_of]).nonzero().squeeze(1)
    s, wf, n = os_[rows], ow[rows], oc[rows].to(f64)
    weight_sum = float(np.sum(w))
    if conf_type == _CONF_CODE["max"]:
        score = s / float(np.max(w))
    elif conf_type == _CONF_CODE["avg"]:
        score = s * (n if allows_overflow else n.clamp(max=m)) / weight_sum
    else:
        # each cluster's distinct models: the distinct (cluster row, model) pairs of its boxes
        pair = torch.unique((seg[seg_of] + assign) * m + models[idx])
        usum = torch.zeros(k, dtype=f64, device=dev).index_add_(0, pair // m, wt[pair % m])
        usum = usum[rows]
        if conf_type == _CONF_CODE["box_and_model_avg"]:
            score = s * n / wf * usum / weight_sum
        else:  # absent_model_aware_avg
            score = s * n / (wf + (weight_sum - usum))
    order = torch.sort(of[rows], stable=True).indices
    order = order[torch.sort(score[order], descending=True, stable=True).indices]
    r = rows[order]
    return ob[r], score[order], seg_labels[seg_of[r]]


@torch.library.custom_op("fastdet::weighted_boxes_fusion", mutates_args=())
def _wbf_op(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    models: Tensor,
    skip: Tensor,
    weights: Tensor,
    iou_thr: float,
    conf_type: int,
    allows_overflow: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    n = boxes.shape[0]
    if boxes.dtype != torch.float64 or boxes.shape != (n, 4):
        raise ValueError(f"boxes must be float64 [N, 4], got {boxes.dtype} {tuple(boxes.shape)}")
    for name, x, dt in (
        ("scores", scores, torch.float64),
        ("labels", labels, torch.int64),
        ("models", models, torch.int64),
        ("skip", skip, torch.bool),
    ):
        if x.dtype != dt or x.shape != (n,):
            raise ValueError(f"{name} must be {dt} [{n}], got {x.dtype} {tuple(x.shape)}")
    if weights.dtype != torch.float64 or weights.ndim != 1 or weights.device.type != "cpu":
        raise ValueError(f"weights must be a float64 [M] CPU tensor, got {weights.dtype}")
    return _wbf(
        boxes.contiguous(),
        scores.contiguous(),
        labels.contiguous(),
        models.contiguous(),
        skip.contiguous(),
        weights.contiguous(),
        iou_thr,
        conf_type,
        allows_overflow,
    )


@_wbf_op.register_fake
def _(boxes, scores, labels, models, skip, weights, iou_thr, conf_type, allows_overflow):
    k = torch.library.get_ctx().new_dynamic_size()
    return (
        boxes.new_empty((k, 4)),
        scores.new_empty((k,)),
        labels.new_empty((k,), dtype=torch.int64),
    )


def _entries(x, name: str) -> list:
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
        raise TypeError(f"{name} must be a list with one entry per model, got {type(x).__name__}")
    return list(x)


def _is_floating(a) -> bool:
    return a.dtype.is_floating_point if isinstance(a, Tensor) else a.dtype.kind == "f"


def _model_array(x, name: str, ndim: int, torch_kind: bool):
    """One model's boxes (ndim 2) or scores / labels (ndim 1): a tensor as it is, anything else
    as a numpy array; numbers only (bool and complex refused)."""
    if isinstance(x, Tensor):
        if not torch_kind:
            raise TypeError(f"{name} is a torch.Tensor but other entries are not; pass one kind")
        a = x
        bad = a.dtype == torch.bool or a.dtype.is_complex
    else:
        if torch_kind:
            raise TypeError(
                f"{name} is a {type(x).__name__} but other entries are tensors; pass one kind"
            )
        try:
            a = np.asarray(x)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"{name} must be a rectangular array: {e}") from None
        bad = a.dtype.kind not in "iuf"
    if bad:
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if ndim == 2 and a.ndim == 1 and a.shape[0] == 0:  # [] for a model without boxes
        a = a.reshape(0, 4)
    if a.ndim != ndim or (ndim == 2 and a.shape[1] != 4):
        want = "[N, 4]" if ndim == 2 else "[N]"
        raise arrays.ShapeError(f"{name} must have shape {want}, got {tuple(a.shape)}")
    return a


def _check_data(b, s, lab, t: int) -> None:
    """NaN / inf and non-integer labels, naming the model (CPU data only: on the GPU this would
    cost a sync, and the kernel flags non-finite values there)."""
    if arrays.is_cuda(b):  # the kernel path checks finiteness; float labels cost one sync here
        if lab.dtype.is_floating_point and not bool(
            (torch.isfinite(lab) & (lab.floor() == lab) & (lab.abs() < 2.0**63)).all()
        ):
            raise ValueError(f"labels_list[{t}] must hold integers")
        return
    bn = b.numpy() if isinstance(b, Tensor) else b
    sn = s.numpy() if isinstance(s, Tensor) else s
    ln = lab.numpy() if isinstance(lab, Tensor) else lab
    if not np.isfinite(bn).all():
        raise ValueError(f"boxes_list[{t}] contains NaN or inf")
    if not np.isfinite(sn).all():
        raise ValueError(f"scores_list[{t}] contains NaN or inf")
    if ln.dtype.kind == "f":
        ok = np.isfinite(ln) & (np.floor(ln) == ln) & (np.abs(ln) < 2.0**63)
        if not ok.all():
            bad = ln[~ok][0]
            raise ValueError(f"labels_list[{t}] must hold integers, got {bad!r}")


def weighted_boxes_fusion(
    boxes_list,
    scores_list,
    labels_list,
    weights=None,
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.0,
    conf_type: str = "avg",
    allows_overflow: bool = False,
):
    """Weighted boxes fusion of several models' detections, as ensemble-boxes'
    `weighted_boxes_fusion` computes it (same arguments and results).

    boxes_list: one entry per model, boxes [Ni, 4] (x1, y1, x2, y2) normalised to [0, 1];
    scores_list: scores [Ni]; labels_list: integer-valued labels [Ni]. Entries are numpy arrays,
    nested lists or torch tensors (all tensors on one device, or none). weights: one positive
    weight per model (default 1). A box whose score is < skip_box_thr is dropped (the comparison
    in the score's own dtype, as numpy and torch compare with a Python float); inverted sides
    are swapped, coordinates clipped to [0, 1] and zero-area boxes dropped, silently (where
    ensemble-boxes warns).

    Per label, boxes are taken in decreasing score * weight (ties: model, then index order) and
    join the cluster whose running fused box has the highest IoU with them if it is > iou_thr
    (ties: the older cluster), else start one. A cluster's box is the score-weighted mean of its
    boxes, rounded to float32 as ensemble-boxes' float32 accumulation rounds it. Its score, with
    s the weighted scores, w the weights of its n boxes and W the weights of all M models:
    "avg": mean(s) * min(n, M) / sum(W) (n instead of min(n, M) when allows_overflow);
    "max": max(s) / max(W); "box_and_model_avg": mean(s) * n / sum(w) * (sum of the weights of
    its distinct models) / sum(W); "absent_model_aware_avg": mean(s) * n / (sum(w) + sum of the
    weights of the models absent from it).

    Returns (boxes [K, 4], scores [K], labels int64 [K]) sorted by decreasing score, ties by the
    input position of the cluster's first box: numpy float64 for numpy or list inputs; torch on
    the inputs' device for tensors, float64 if any boxes or scores tensor is, else float32.

    Differences from ensemble-boxes: bad input raises ValueError / TypeError (it prints and
    exits, or replaces wrong-length weights by ones); NaN or inf raise; labels are returned as
    int64 (it returns float64, and stores a fused cluster's label in float32, wrong beyond 2^24);
    the order of boxes with tied weighted scores is defined (its numpy argsort is unstable, so
    its order of ties is unspecified); a cluster whose scores sum to 0 gets the plain mean box
    (it divides by 0: NaN); weights are used in float64 (float32 weights make numpy compute the
    scores in float32); per-cluster sums of model weights run in model order (numpy sums 8 or
    more pairwise: last-bit differences in the score). It must be run with numpy >= 2 for the
    float32 rounding of fused boxes to agree bit for bit (numpy 1 divides in float32).
    """
    bl = _entries(boxes_list, "boxes_list")
    sl = _entries(scores_list, "scores_list")
    ll = _entries(labels_list, "labels_list")
    if not len(bl) == len(sl) == len(ll):
        raise ValueError(
            "boxes_list, scores_list and labels_list must have one entry per model, got "
            f"{len(bl)}, {len(sl)} and {len(ll)}"
        )
    m = len(bl)
    iou_thr = arrays.check_threshold(iou_thr, "iou_thr")
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"iou_thr must be in [0, 1], got {iou_thr}")
    skip_box_thr = arrays.check_real(skip_box_thr, "skip_box_thr")
    if not isinstance(conf_type, str) or conf_type not in _CONF_CODE:
        raise ValueError(f"conf_type must be one of {', '.join(CONF_TYPES)}; got {conf_type!r}")
    allows_overflow = arrays.check_bool(allows_overflow, "allows_overflow")
    if weights is None:
        w = np.ones(m)
    else:
        if isinstance(weights, Tensor):
            weights = weights.detach().cpu().numpy()
        w = np.asarray(weights)
        if w.dtype.kind not in "iuf" or w.ndim != 1:
            raise TypeError(
                f"weights must be a 1-d sequence of real numbers, got {w.dtype} {w.shape}"
            )
        if w.shape[0] != m:
            raise ValueError(f"weights must have one entry per model ({m}), got {w.shape[0]}")
        w = w.astype(np.float64)
        if not (np.isfinite(w) & (w > 0)).all():
            raise ValueError(f"weights must be finite and > 0, got {w.tolist()}")

    torch_kind = any(isinstance(x, Tensor) for x in bl + sl + ll)
    boxes, scores, labels = [], [], []
    for t in range(m):
        b = _model_array(bl[t], f"boxes_list[{t}]", 2, torch_kind)
        s = _model_array(sl[t], f"scores_list[{t}]", 1, torch_kind)
        lab = _model_array(ll[t], f"labels_list[{t}]", 1, torch_kind)
        if not b.shape[0] == s.shape[0] == lab.shape[0]:
            raise arrays.ShapeError(
                f"model {t}: boxes_list[{t}], scores_list[{t}] and labels_list[{t}] must have "
                f"the same length, got {b.shape[0]}, {s.shape[0]} and {lab.shape[0]}"
            )
        _check_data(b, s, lab, t)
        boxes.append(b)
        scores.append(s)
        labels.append(lab)

    if torch_kind:
        devices = {x.device for x in boxes + scores + labels}
        if len(devices) > 1:
            raise ValueError(f"tensors must be on one device, got {sorted(map(str, devices))}")
        device = devices.pop()
        out_dt = (
            torch.float64
            if any(x.dtype == torch.float64 for x in boxes + scores)
            else torch.float32
        )
        if m == 0:
            return (
                torch.zeros((0, 4), dtype=out_dt, device=device),
                torch.zeros((0,), dtype=out_dt, device=device),
                torch.zeros((0,), dtype=torch.int64, device=device),
            )
        counts = torch.tensor([b.shape[0] for b in boxes], device=device)
        fb = torch.cat([b.detach().to(torch.float64) for b in boxes]).contiguous()
        fs = torch.cat([s.detach().to(torch.float64) for s in scores])
        fl = torch.cat([lab.to(torch.int64) for lab in labels])
        models = torch.repeat_interleave(torch.arange(m, device=device), counts)
        skip = torch.cat([s < skip_box_thr for s in scores])
        ob, os_, ol = _wbf_op(
            fb,
            fs,
            fl,
            models,
            skip,
            torch.from_numpy(w),
            iou_thr,
            _CONF_CODE[conf_type],
            allows_overflow,
        )
        return ob.to(out_dt), os_.to(out_dt), ol

    if m == 0:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,), np.int64)
    counts = [b.shape[0] for b in boxes]
    fb = np.ascontiguousarray(np.concatenate(boxes), dtype=np.float64)
    fs = np.ascontiguousarray(np.concatenate([s.astype(np.float64) for s in scores]))
    fl = np.concatenate([lab.astype(np.int64) for lab in labels])
    models = np.repeat(np.arange(m, dtype=np.int64), counts)
    skip = np.concatenate([s < skip_box_thr for s in scores]).astype(bool)
    return _wbf(fb, fs, fl, models, skip, w, iou_thr, _CONF_CODE[conf_type], allows_overflow)
