"""Benchmark cases: each times fastdet and its peers on the same inputs in the same process.

A case's `make(device)` returns a list of input sets (rotated between runs so GPU inputs do not
sit in L2) and the implementations to time, {name: fn(inputs)}; "fastdet" is always one, the
peers are torchvision.ops (when installed) and numba (when installed, CPU only). `floor` names
an implementation that is the floor the case is measured against (e.g. the output write)."""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import contextmanager

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, record_function

from .. import ops
from ..models.compile import is_compiled
from .case import Case
from .peers import numba_ops
from .pipeline import CASES as _PIPELINE
from .syncs import count_host_syncs


def _tv():
    try:
        import torchvision

        return torchvision
    except ImportError:
        return None


def uniform_boxes(n: int, g: torch.Generator, image: float = 1000.0):
    """n boxes with sides 4..125 px anywhere in an image of `image` px, and random scores."""
    xy = torch.rand(n, 2, generator=g) * image
    wh = 4 + torch.rand(n, 2, generator=g) * 121
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def clustered_boxes(n: int, objects: int, g: torch.Generator):
    """RPN-like proposals: n boxes jittered around `objects` objects (centre +-15%, size
    x0.75-1.25)."""
    c = torch.rand(objects, 2, generator=g) * 800 + 100
    wh = torch.rand(objects, 2, generator=g) * 150 + 30
    k = torch.randint(0, objects, (n,), generator=g)
    ctr = c[k] + (torch.rand(n, 2, generator=g) - 0.5) * 0.3 * wh[k]
    sz = wh[k] * (0.75 + 0.5 * torch.rand(n, 2, generator=g))
    return torch.cat([ctr - sz / 2, ctr + sz / 2], 1), torch.rand(n, generator=g)


ROTATIONS = {"cpu": 1, "cuda": 4}


def _to(x, device):
    """Tensors in x (nested lists and dicts too, e.g. detection targets) moved to device."""
    if torch.is_tensor(x):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    return {k: _to(v, device) for k, v in x.items()} if isinstance(x, dict) else x


def _sets(device, fn):
    g = torch.Generator().manual_seed(0)
    return [_to(fn(g), device) for _ in range(ROTATIONS[device])]


def _nms_case(n, cluster=None):
    def make(device):
        def gen(g):
            b, s = clustered_boxes(n, cluster, g) if cluster else uniform_boxes(n, g)
            return {"boxes": b, "scores": s}

        sets = _sets(device, gen)
        impls = {
            "fastdet": lambda d: ops.nms(d["boxes"], d["scores"], 0.7),
            "sort (floor)": lambda d: torch.sort(d["scores"], stable=True, descending=True),
        }
        if _tv():
            impls["torchvision"] = lambda d: _tv().ops.nms(d["boxes"], d["scores"], 0.7)
        nb = numba_ops() if device == "cpu" else None
        if nb:
            sets = [
                dict(d, np_boxes=d["boxes"].numpy(), np_scores=d["scores"].numpy()) for d in sets
            ]
            impls["numba"] = lambda d: nb[0](d["np_boxes"], d["np_scores"], 0.7)
        return sets, impls

    name = f"nms_{n}_clustered{cluster}" if cluster else f"nms_{n}_uniform"
    return Case(
        name,
        "nms",
        {"n": n, "iou_threshold": 0.7, "clustered_objects": cluster},
        make,
        floor="sort (floor)",
    )


def _batched_case(n, classes):
    def make(device):
        def gen(g):
            b, s = uniform_boxes(n, g)
            return {"boxes": b, "scores": s, "idxs": torch.randint(0, classes, (n,), generator=g)}

        sets = _sets(device, gen)
        impls = {"fastdet": lambda d: ops.batched_nms(d["boxes"], d["scores"], d["idxs"], 0.7)}
        if _tv():
            impls["torchvision"] = lambda d: _tv().ops.batched_nms(
                d["boxes"], d["scores"], d["idxs"], 0.7
            )
        return sets, impls

    return Case(f"batched_nms_{n}_{classes}cls", "batched_nms", {"n": n, "classes": classes}, make)


def _matrix_contained(boxes, scores, idxs, fraction):
    """suppress_contained as a user would write it in torch: the covered-fraction matrix of all
    pairs, then a greedy pass over its rows (the peer of the fastdet kernel)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    b, c = boxes[order], idxs[order]
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    covers = (inter / area[None, :] > fraction) & (c[:, None] == c[None, :])
    covers = torch.triu(covers, diagonal=1) & (area[None, :] > 0)
    removed = torch.zeros(len(b), dtype=torch.bool, device=b.device)
    for i in range(len(b)):  # a host loop, as a user's greedy pass is
        if not removed[i]:
            removed |= covers[i]
    return order[~removed]


def _contained_case(n, classes, quick=True):
    """Containment suppression of detections after NMS: n boxes nested around 50 objects."""

    def make(device):
        def gen(g):
            b, s = clustered_boxes(n, 50, g)
            return {"boxes": b, "scores": s, "idxs": torch.randint(0, classes, (n,), generator=g)}

        args = ("boxes", "scores", "idxs")
        impls = {
            "fastdet": lambda d: ops.suppress_contained(*(d[k] for k in args), 0.7),
            "torch (matrix)": lambda d: _matrix_contained(*(d[k] for k in args), 0.7),
        }
        return _sets(device, gen), impls

    return Case(
        f"suppress_contained_{n}_{classes}cls",
        "suppress_contained",
        {"n": n, "classes": classes, "fraction": 0.7},
        make,
        quick=quick,
    )


def _iou_case(n, m, op="box_iou"):
    """op: box_iou or another member of the pairwise family (generalized_, distance_,
    complete_box_iou), each against torchvision's."""

    def make(device):
        def gen(g):
            return {"a": uniform_boxes(n, g)[0], "b": uniform_boxes(m, g)[0]}

        sets = _sets(device, gen)
        impls = {
            "fastdet": lambda d: getattr(ops, op)(d["a"], d["b"]),
            "write output (floor)": lambda d: torch.empty((n, m), device=device).fill_(0.5),
        }
        if _tv():
            impls["torchvision"] = lambda d: getattr(_tv().ops, op)(d["a"], d["b"])
        nb = numba_ops() if device == "cpu" and op == "box_iou" else None
        if nb:
            sets = [dict(d, np_a=d["a"].numpy(), np_b=d["b"].numpy()) for d in sets]
            impls["numba"] = lambda d: nb[1](d["np_a"], d["np_b"])
        return sets, impls

    # box_iou_<kind>_...: `--only box_iou` runs the family, `--only box_iou_1000` box_iou alone
    kind = op.removesuffix("_box_iou")
    return Case(
        f"box_iou_{n}x{m}" if op == "box_iou" else f"box_iou_{kind}_{n}x{m}",
        op,
        {"n": n, "m": m, "output_bytes": 4 * n * m},
        make,
        floor="write output (floor)",
        graph=True,
    )


def _rois(k, g, batch, image_h, image_w):
    xy = torch.rand(k, 2, generator=g) * torch.tensor([image_w * 0.8, image_h * 0.8])
    wh = 16 + torch.rand(k, 2, generator=g) * torch.tensor([image_w * 0.3, image_h * 0.3])
    idx = torch.randint(0, batch, (k, 1), generator=g).float()
    return torch.cat([idx, xy, xy + wh], 1)


def _roi_case(shape, k, mode, scale, quick=True, backward=None):
    """mode: "fwd", "fwd+bwd" (through autograd) or "bwd" (the backward kernels alone);
    backward: fastdet.ops.roi_align.CUDA_BACKWARD while fastdet is timed (None: the default)."""
    N, C, H, W = shape
    args = (scale, 7, 7, N, C, H, W, 2, True)

    def switched(fn):  # fn with CUDA_BACKWARD = backward, restored after
        if backward is None:
            return fn

        def f(d):
            ra = sys.modules[
                "fastdet.ops.roi_align"
            ]  # the module (fastdet.ops.roi_align is the function)
            old, ra.CUDA_BACKWARD = ra.CUDA_BACKWARD, backward
            try:
                return fn(d)
            finally:
                ra.CUDA_BACKWARD = old

        return f

    def make(device):
        def gen(g):
            x = torch.randn(shape, generator=g)
            return {
                "x": x,
                "rois": _rois(k, g, N, H / scale, W / scale),
                "grad": torch.randn(k, C, 7, 7, generator=g),
            }

        sets = _sets(device, gen)

        def run(fn):
            def f(d):
                if mode == "fwd":
                    return fn(d["x"], d["rois"], 7, scale, 2, True)
                x = d["x"].detach().requires_grad_()
                fn(x, d["rois"], 7, scale, 2, True).backward(d["grad"])
                return x.grad

            return f

        if mode == "bwd":
            impls = {
                "fastdet": switched(
                    lambda d: torch.ops.fastdet.roi_align_backward(d["grad"], d["rois"], *args)
                )
            }
            if device == "cuda" and backward is None:
                impls["fastdet deterministic"] = lambda d: _deterministic(
                    torch.ops.fastdet.roi_align_backward, d["grad"], d["rois"], *args
                )
            if _tv():
                impls["torchvision"] = lambda d: torch.ops.torchvision._roi_align_backward(
                    d["grad"], d["rois"], *args
                )
            return sets, impls
        impls = {"fastdet": switched(run(ops.roi_align))}
        if _tv():
            impls["torchvision"] = run(_tv().ops.roi_align)
        return sets, impls

    params = {
        "input": list(shape),
        "rois": k,
        "output": 7,
        "sampling_ratio": 2,
        "spatial_scale": scale,
        "aligned": True,
        "mode": mode,
    }
    if backward:
        params["cuda_backward"] = backward
    return Case(
        f"roi_align_{'x'.join(map(str, shape))}_{k}rois_{mode}"
        + (f"_{backward}" if backward else ""),
        "roi_align",
        params,
        make,
        quick=quick,
        graph=mode != "fwd+bwd",
    )


def _roi_pool_case(shape, k, mode, scale, quick=True):
    """roi_pool, 7x7 bins: mode "fwd" or "fwd+bwd" (through autograd), against torchvision."""
    N, C, H, W = shape

    def make(device):
        def gen(g):
            return {
                "x": torch.randn(shape, generator=g),
                "rois": _rois(k, g, N, H / scale, W / scale),
                "grad": torch.randn(k, C, 7, 7, generator=g),
            }

        def run(fn):
            def f(d):
                if mode == "fwd":
                    return fn(d["x"], d["rois"], 7, scale)
                x = d["x"].detach().requires_grad_()
                fn(x, d["rois"], 7, scale).backward(d["grad"])
                return x.grad

            return f

        impls = {"fastdet": run(ops.roi_pool)}
        if _tv():
            impls["torchvision"] = run(_tv().ops.roi_pool)
        return _sets(device, gen), impls

    params = {"input": list(shape), "rois": k, "output": 7, "spatial_scale": scale, "mode": mode}
    name = f"roi_pool_{'x'.join(map(str, shape))}_{k}rois_{mode}"
    return Case(name, "roi_pool", params, make, quick=quick, graph=mode == "fwd")


def _iou_loss_case(op, n):
    """An IoU loss over n paired boxes, forward and backward (mean reduction), against
    torchvision's: both are element-wise torch ops, so the ratio shows the same work."""

    def make(device):
        def gen(g):
            a = uniform_boxes(n, g)[0]
            return {"a": a, "b": a + torch.randn(n, 4, generator=g) * 8}

        def run(fn):
            def f(d):
                a = d["a"].detach().requires_grad_()
                fn(a, d["b"], reduction="mean").backward()
                return a.grad

            return f

        impls = {"fastdet": run(getattr(ops, op))}
        if _tv():
            impls["torchvision"] = run(getattr(_tv().ops, op))
        return _sets(device, gen), impls

    return Case(f"{op}_{n}_fwd+bwd", op, {"n": n, "reduction": "mean"}, make, quick=n <= 100000)


def _deterministic(fn, *args):
    ra = sys.modules["fastdet.ops.roi_align"]  # the module (fastdet.ops.roi_align is the function)

    old, ra.DETERMINISTIC_CUDA_BACKWARD = ra.DETERMINISTIC_CUDA_BACKWARD, True
    try:
        return fn(*args)
    finally:
        ra.DETERMINISTIC_CUDA_BACKWARD = old


class _Images:  # the ImageList interface AnchorGenerator reads
    def __init__(self, tensors):
        self.tensors = tensors
        self.image_sizes = [tuple(tensors.shape[-2:])] * len(tensors)


def _anchor_case(batch, h, w, cold):
    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5

    def make(device):
        images = _Images(torch.zeros(batch, 3, h, w, device=device))
        feats = [torch.zeros(batch, 1, h // s, w // s, device=device) for s in (4, 8, 16, 32, 64)]
        fd = ops.AnchorGenerator(sizes, ratios)
        impls = {
            "fastdet": (lambda d: (fd._cache.clear(), fd(images, feats)))
            if cold
            else (lambda d: fd(images, feats))
        }
        if _tv():
            from torchvision.models.detection.anchor_utils import AnchorGenerator

            tv = AnchorGenerator(sizes, ratios).to(device)
            impls["torchvision"] = lambda d: tv(images, feats)
        return [{}], impls

    return Case(
        f"anchors_fpn5_{h}x{w}_batch{batch}" + ("_cold" if cold else ""),
        "anchors",
        {"levels": 5, "image": [h, w], "batch": batch, "cached": not cold},
        make,
    )


def _coder_case(n):
    def make(device):
        def gen(g):
            a, _ = uniform_boxes(n, g)
            return {"anchors": a, "codes": torch.randn(n, 4, generator=g) * 0.5}

        sets = _sets(device, gen)
        fd = ops.BoxCoder((1.0, 1.0, 1.0, 1.0))
        impls = {"fastdet": lambda d: fd.decode_single(d["codes"], d["anchors"])}
        if _tv():
            from torchvision.models.detection._utils import BoxCoder

            tv = BoxCoder((1.0, 1.0, 1.0, 1.0))
            impls["torchvision"] = lambda d: tv.decode_single(d["codes"], d["anchors"])
        return sets, impls

    return Case(f"box_decode_{n}", "box_coder", {"n": n}, make, graph=True)


def _seg_case(model: str, size: int, train: bool, batch: int, variant: str | None = None):
    """Segmentation model throughput (no peer: torchvision has neither model); the result's
    params carry the batch so images per second = batch / seconds. variant "bf16" (bfloat16
    autocast), "compiled" (fastdet.models.compile; the warm-up call compiles) or "channels_last"
    (NHWC weights) times fastdet so, beside the same model eager in float32 ("float32 eager") as
    the peer."""

    def make(device):
        from ..models import losses
        from ..models.compile import compile_model
        from ..models.segmentation import fpn_resnet18, unet

        def runner(variant):
            bf16 = variant == "bf16"
            torch.manual_seed(0)
            net = (unet(1, 1) if model == "unet" else fpn_resnet18(1, 1)).to(device)
            net.train(train)
            if variant == "channels_last":
                net.to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
            if variant == "compiled":
                compile_model(net)

            def step(d):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    logits = net(d["x"])
                loss = losses.bce_dice(logits.float(), d["y"])
                loss.backward()
                opt.step()
                return loss

            def infer(d):
                with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    return net(d["x"])

            fn = step if train else infer
            fn.net = net  # (what the tests inspect)
            return fn

        def gen(g):
            return {
                "x": torch.randn(batch, 1, size, size, generator=g),
                "y": (torch.rand(batch, 1, size, size, generator=g) > 0.5).float(),
            }

        impls = {"fastdet": runner(variant)}
        if variant is not None:
            impls["float32 eager"] = runner(None)
        return _sets(device, gen), impls

    what = "train_step" if train else "inference"
    return Case(
        f"{model}_{size}_{what}_batch{batch}" + (f"_{variant}" if variant else ""),
        "segmentation_model",
        {"model": model, "size": size, "batch": batch, "train": train, "variant": variant},
        make,
        quick=False,
        min_runs=3,
    )


def _cls_case(model: str, size: int, train: bool, batch: int, quick: bool = False):
    """Classifier throughput (inference, or one SGD training step with cross-entropy) on a batch
    of 3 x size x size images, beside torchvision's model of the same name loaded with the same
    weights (3 classes); the result's params carry the batch (images per second = batch /
    seconds)."""

    def make(device):
        from ..models.classification import classifier

        torch.manual_seed(0)
        nets = {"fastdet": classifier(model, num_classes=3).to(device)}
        if _tv():
            theirs = getattr(_tv().models, model)(weights=None, num_classes=3).to(device)
            theirs.load_state_dict(nets["fastdet"].state_dict())
            nets["torchvision"] = theirs

        def gen(g):
            return {
                "x": torch.randn(batch, 3, size, size, generator=g),
                "y": torch.randint(0, 3, (batch,), generator=g),
            }

        def run(net):
            net.train(train)
            opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

            def step(d):
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(net(d["x"]), d["y"])
                loss.backward()
                opt.step()
                return loss

            def infer(d):
                with torch.no_grad():
                    return net(d["x"])

            return step if train else infer

        return _sets(device, gen), {k: run(n) for k, n in nets.items()}

    what = "train_step" if train else "inference"
    return Case(
        f"cls_{model}_{size}_{what}_batch{batch}",
        "classification_model",
        {"model": model, "size": size, "batch": batch, "train": train},
        make,
        quick=quick,
        min_runs=3,
    )


# Profiler event names per stage, both implementations (read off key_averages on the CPU):
# "filter_proposals" is the record_function _det_stages puts around rpn.filter_proposals; the
# NMS and RoIAlign entries are the custom ops (under autograd the forward's kernel runs inside
# a "GeneratedBackwardFor_..." wrapper that the op's own event encloses).
DET_STAGES = {
    "filter_proposals_ms": ("filter_proposals",),
    "nms_ms": ("fastdet::nms", "fastdet::batched_nms", "torchvision::nms"),
    "roi_align_ms": (
        "fastdet::roi_align",
        "fastdet::roi_align_backward",
        "torchvision::roi_align",
        "torchvision::_roi_align_backward",
    ),
    # Mask R-CNN's output: fastdet's fused op, torchvision's Python loop of interpolations
    "paste_masks_ms": ("fastdet::paste_masks", "paste_masks_in_image"),
}
DET_STAGES_NOTE = (
    "nms_ms includes the RPN's NMS, which filter_proposals_ms also counts; torchvision's "
    "nms_ms is its nms kernel alone (batched_nms's Python around it is not counted)"
)


def _outermost(events, names):
    """The CPU-side events named in `names` under no other such event, so nesting counts once
    (the device-side copy of a record_function is left out by the CPU filter)."""

    def nested(e):
        p = e.cpu_parent
        while p is not None:
            if p.name in names:
                return True
            p = p.cpu_parent
        return False

    return [
        e for e in events if e.device_type == DeviceType.CPU and e.name in names and not nested(e)
    ]


def _stage_ms(events, names, cuda: bool):
    """(ms, clock): on CUDA the kernel time under the events when the profiler linked kernels
    to them, else (and on the CPU) the events' CPU time."""
    es = _outermost(events, names)
    dev = sum(e.device_time_total for e in es) / 1e3 if cuda else 0.0
    return (dev, "cuda") if dev > 0 else (sum(e.cpu_time_total for e in es) / 1e3, "cpu")


def profile_stages(fn, d, device: str, stages: dict, passes: int = 1) -> dict:
    """fn(d) under torch.profiler `passes` times: the median ms of each stage, the median wall
    time of the profiled pass (total_ms) and, on CUDA, the stages that fell back to CPU time."""
    cuda = device == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    runs = []
    for _ in range(passes):
        with torch.profiler.profile(activities=acts) as prof:
            t0 = time.perf_counter()
            fn(d)
            if cuda:
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) * 1e3
        events = prof.events()
        runs.append(({k: _stage_ms(events, names, cuda) for k, names in stages.items()}, wall))
    out = {k: statistics.median(r[0][k][0] for r in runs) for k in stages}
    out["total_ms"] = statistics.median(r[1] for r in runs)
    if cuda:
        out["cpu_clock_stages"] = sorted(
            {k for r in runs for k, (_, c) in r[0].items() if c == "cpu"}
        )
    return out


@contextmanager
def _annotated(obj, method: str):
    """obj.method (a module's function, or an object's method: then an instance attribute that
    shadows the class's) wrapped in a record_function of its name, restored on exit."""
    had, orig = method in vars(obj), getattr(obj, method)

    def wrapped(*args, **kwargs):
        with record_function(method):
            return orig(*args, **kwargs)

    setattr(obj, method, wrapped)
    try:
        yield
    finally:
        if had:
            setattr(obj, method, orig)
        else:
            delattr(obj, method)


def _det_stages(fn, sets, device: str) -> dict:
    """Stage times of one detection impl (fn carries its model as fn.net; the floor has none)
    and its host syncs per call (fastdet.bench.syncs)."""
    if not hasattr(fn, "net"):
        return {}
    with _annotated(fn.net.rpn, "filter_proposals"), _traced_paste():
        out = profile_stages(fn, sets[0], device, DET_STAGES, passes=3)
    if not is_compiled(fn.net):  # (a dispatch mode would make a compiled model retrace)
        out["host_syncs"] = count_host_syncs(fn, sets[0])["total"]
    return out


@contextmanager
def _traced_paste():
    """torchvision's paste_masks_in_image (as its transform calls it) under a record_function."""
    if not _tv():
        yield
        return
    import torchvision.models.detection.transform as tv_transform

    with _annotated(tv_transform, "paste_masks_in_image"):
        yield


# fastdet's documented speed options, one per model case variant (detection, segmentation):
# bfloat16 autocast (--bf16), torch.compile (--compile; the warm-up call compiles) and NHWC
# weights (--channels-last)
VARIANTS = (None, "bf16", "compiled", "channels_last")


def _det_case(
    model: str,
    train: bool,
    size: int = 600,
    variant: str | None = None,
    batch: int = 1,
    width: int | None = None,
):
    """Faster R-CNN (or Mask R-CNN, model "maskrcnn_resnet50_fpn") latency on one size x size
    image (inference) or one training step with 3 boxes (and their masks); beside
    torchvision's resnet50_fpn model with the same weights where it exists, eager float32 as
    users run it. Mask R-CNN's inference keeps torchvision's 100 detections and pastes their
    masks (fastdet's paste_masks, torchvision's paste_masks_in_image): the paste_masks_ms stage.
    variant "bf16": fastdet under bfloat16 autocast (torchvision's under the same autocast is
    timed too, "torchvision bf16"); "compiled": fastdet compiled (fastdet.models.compile);
    "channels_last": fastdet's 4-D weights in NHWC. The floor, "backbone (floor)": fastdet's
    backbone alone on the same input (forward, or forward and backward), in the variant's
    precision and layout: no detector is faster than its
    convolutions. batch images of size x width (default square), each with the 3 boxes; a
    wide case sizes the detector to them (min_size size, max_size width)."""
    shape = (size, width or size)

    def make(device):
        from ..models.detection import (
            fasterrcnn_resnet18_fpn,
            fasterrcnn_resnet50_fpn,
            fasterrcnn_resnet101_fpn,
            fasterrcnn_vgg16,
            maskrcnn_resnet50_fpn,
        )

        torch.manual_seed(0)
        kw = dict(min_size=size, max_size=max(shape[1], 1000))
        build = {
            "resnet50_fpn": lambda: fasterrcnn_resnet50_fpn(num_classes=2, **kw),
            "resnet18_fpn": lambda: fasterrcnn_resnet18_fpn(2, **kw),
            "resnet101_fpn": lambda: fasterrcnn_resnet101_fpn(2, **kw),  # no torchvision peer
            "vgg16": lambda: fasterrcnn_vgg16(2, **kw),
            "maskrcnn_resnet50_fpn": lambda: maskrcnn_resnet50_fpn(num_classes=2, **kw),
        }[model]
        nets = {"fastdet": build().to(device)}
        if model == "resnet101_fpn":
            _zero_init_residuals(nets["fastdet"])
        if model.endswith("resnet50_fpn") and _tv():
            from torchvision.models import detection as tv_det

            peer = getattr(tv_det, model if model.startswith("mask") else f"fasterrcnn_{model}")
            theirs = peer(weights=None, weights_backbone=None, num_classes=2, **kw).to(device)
            theirs.load_state_dict(nets["fastdet"].state_dict())
            nets["torchvision"] = theirs
        for net in nets.values():
            net.train(train)
        bf16 = variant == "bf16"
        backbone = nets["fastdet"].backbone
        if variant == "compiled":
            from ..models.compile import compile_model

            compile_model(nets["fastdet"])
        if variant == "channels_last":
            nets["fastdet"].to(memory_format=torch.channels_last)

        def gen(g):
            boxes = torch.tensor([[50.0, 60, 200, 220], [300, 310, 420, 480], [100, 400, 180, 560]])
            target = {"boxes": boxes, "labels": torch.tensor([1, 1, 1])}
            if model.startswith("mask"):
                masks = torch.zeros(3, *shape, dtype=torch.uint8)
                for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
                    m[y1 + 5 : y2 - 5, x1 + 5 : x2 - 5] = 1
                target["masks"] = masks
            images = [torch.rand(3, *shape, generator=g) for _ in range(batch)]
            return {"images": images, "targets": [target] * batch}

        def run(net, autocast: bool):
            def f(d):
                with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                    if not train:
                        with torch.no_grad():
                            return net(d["images"])
                    net.zero_grad(set_to_none=True)
                    loss = sum(net(d["images"], d["targets"]).values())
                loss.backward()
                return loss

            f.net = net  # for _det_stages
            return f

        def floor(d):
            x = nets["fastdet"].transform(d["images"])[0].tensors
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                with torch.set_grad_enabled(train):
                    out = backbone(x)
            if train:
                sum(o.float().mean() for o in out.values()).backward()

        impls = {k: run(n, bf16 and k == "fastdet") for k, n in nets.items()}
        if bf16 and "torchvision" in nets:
            impls["torchvision bf16"] = run(nets["torchvision"], True)
        impls["backbone (floor)"] = floor
        return _sets(device, gen), impls

    what = "train_step" if train else "inference"
    name = model if model.startswith("mask") else f"fasterrcnn_{model}"
    where = f"{size}" if width is None else f"{size}x{width}_batch{batch}"
    return Case(
        f"{name}_{where}_{what}" + (f"_{variant}" if variant else ""),
        "detection_model",
        {"model": model, "size": size, "width": shape[1], "batch": batch, "train": train}
        | {"variant": variant},
        make,
        quick=False,
        devices=("cuda",) if batch * shape[0] * shape[1] > 600 * 600 * 2 else ("cpu", "cuda"),
        min_runs=3,
        floor="backbone (floor)",
        stages=_det_stages,
        notes={"stages": DET_STAGES_NOTE},
    )


def _zero_init_residuals(net) -> None:
    """Each bottleneck's last BatchNorm scale set to 0 (torchvision's zero_init_residual): 33
    random-weight blocks otherwise grow C5 to ~1e5, the RPN's boxes all fall below the minimum
    size and the timed pass skips NMS and RoIAlign, unlike a trained model's."""
    from ..models.resnet import Bottleneck

    for m in net.modules():
        if isinstance(m, Bottleneck):
            torch.nn.init.zeros_(m.bn3.weight)


_PAIRWISE = ("generalized_box_iou", "distance_box_iou", "complete_box_iou")
_IOU_LOSSES = ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")
CPU_FEATURES = (1, 512, 38, 50)  # VGG16 conv5 on a 600 x 800 image (stride 16)
GPU_FEATURES = (8, 256, 200, 272)  # FPN P2 of a batch of 8 images of 800 x 1088

CASES: list[Case] = [
    _nms_case(1000),
    _nms_case(6000),
    _nms_case(20000),
    _nms_case(6000, cluster=20),
    _nms_case(100000),
    _batched_case(20000, 80),
    _batched_case(100000, 80),
    _contained_case(300, 3),
    _contained_case(2000, 3, quick=False),
    _iou_case(1000, 1000),
    _iou_case(4000, 4000),
    _iou_case(20000, 1000),
    _iou_case(10000, 10000),
    *[
        _roi_case(CPU_FEATURES, k, mode, 1 / 16, quick=k < 2000)
        for k in (128, 300, 2000)
        for mode in ("fwd", "fwd+bwd")
    ],
    *[
        _roi_case(GPU_FEATURES, k, mode, 1 / 4, backward=b)
        for k in (1000, 5000)
        for mode in ("fwd", "bwd", "fwd+bwd")
        for b in (None, "atomic")
        if b is None or mode != "fwd"
    ],
    *[_iou_case(1000, 1000, op) for op in _PAIRWISE],
    *[
        _roi_pool_case(CPU_FEATURES, k, mode, 1 / 16, quick=k < 2000)
        for k in (300, 2000)
        for mode in ("fwd", "fwd+bwd")
    ],
    *[
        _roi_pool_case(GPU_FEATURES, k, mode, 1 / 4)
        for k in (1000, 5000)
        for mode in ("fwd", "fwd+bwd")
    ],
    *[_iou_loss_case(op, n) for op in _IOU_LOSSES for n in (10000, 1000000)],
    _anchor_case(2, 800, 1344, cold=False),
    _anchor_case(2, 800, 1344, cold=True),
    _anchor_case(8, 800, 1344, cold=False),
    _anchor_case(8, 800, 1344, cold=True),
    _coder_case(200000),
    *[
        _seg_case(m, size, train, 2)
        for m in ("unet", "fpn_resnet18")
        for size in (256, 512)
        for train in (False, True)
    ],
    *[
        _seg_case(m, 256, train, 2, variant)
        for m in ("unet", "fpn_resnet18")
        for variant in VARIANTS[1:]
        for train in (False, True)
    ],
    *[
        _det_case(m, train)
        for m in ("resnet50_fpn", "resnet18_fpn", "resnet101_fpn", "vgg16", "maskrcnn_resnet50_fpn")
        for train in (False, True)
    ],
    *[
        _det_case(m, train, variant=v)
        for m in ("resnet50_fpn", "resnet18_fpn", "maskrcnn_resnet50_fpn")
        for v in VARIANTS[1:]
        for train in (False, True)
    ],
    # the GPU shape: a batch of 8 at 800 x 1,333 (GPU only: minutes per call here)
    *[
        _det_case(m, train, 800, v, batch=8, width=1333)
        for m in ("resnet50_fpn", "maskrcnn_resnet50_fpn")
        for v in VARIANTS[:2]
        for train in (False, True)
    ],
    # one small classifier case in the quick set (a few seconds on a 2-core CPU); the rest --full
    _cls_case("resnet50", 224, False, 1, quick=True),
    *[
        _cls_case(m, size, train, 8 if size == 224 else 4)
        for m in ("resnet50", "densenet121")
        for size in (224, 512)
        for train in (False, True)
    ],
]

# Which cases run where: the CPU suite is the core issue's, the GPU suite the CUDA issue's.
_CPU = {
    "nms_1000_uniform",
    "nms_6000_uniform",
    "nms_20000_uniform",
    "nms_6000_clustered20",
    "batched_nms_20000_80cls",
    "box_iou_1000x1000",
    "box_iou_4000x4000",
    "anchors_fpn5_800x1344_batch2",
    "anchors_fpn5_800x1344_batch2_cold",
    "box_decode_200000",
}
_GPU = {
    "nms_1000_uniform",
    "nms_6000_uniform",
    "nms_20000_uniform",
    "nms_100000_uniform",
    "nms_6000_clustered20",
    "batched_nms_100000_80cls",
    "box_iou_4000x4000",
    "box_iou_20000x1000",
    "box_iou_10000x10000",
    "anchors_fpn5_800x1344_batch8",
    "anchors_fpn5_800x1344_batch8_cold",
    "box_decode_200000",
}


KINDS = ("all", "ops", "models")  # `fastdet bench --kind`


def cases_for(
    device: str,
    full: bool = False,
    only: str | None = None,
    kind: str = "all",
    skip: str | None = None,
) -> list[Case]:
    """The cases of `device`'s suite; kind "ops" or "models" keeps one half; only / skip:
    comma-separated name parts, a case kept when its name holds one of `only` and none of
    `skip`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = []
    for c in CASES:
        if kind != "all" and c.group.endswith("_model") != (kind == "models"):
            continue
        both = c.group.endswith("_model") or c.group in _PAIRWISE + _IOU_LOSSES
        on_cpu = (
            c.name in _CPU
            or (c.group in ("roi_align", "roi_pool") and c.params["input"] == list(CPU_FEATURES))
            or both
        )
        on_gpu = (
            c.name in _GPU
            or (c.group in ("roi_align", "roi_pool") and c.params["input"] == list(GPU_FEATURES))
            or both
        )
        if not (on_cpu if device == "cpu" else on_gpu) or device not in c.devices:
            continue
        if device == "cpu" and not full and not c.quick:
            continue
        if only and not any(part in c.name for part in only.split(",")):
            continue
        if skip and any(part in c.name for part in skip.split(",")):
            continue
        out.append(c)
    return out


# --- rotated boxes (fastdet.ops.rotated) --------------------------------------------------


def rotated_boxes(n: int, g: torch.Generator, objects: int | None = None, image: float = 1000.0):
    """n rotated boxes (cx, cy, w, h, angle in degrees) and scores: sides 4..125 px and any
    angle anywhere in the image, or, with `objects`, jittered copies of that many objects
    (centre +-15%, size x0.75-1.25, angle +-10 degrees), as proposals are."""
    if objects is None:
        xy = torch.rand(n, 2, generator=g) * image
        wh = 4 + torch.rand(n, 2, generator=g) * 121
        a = torch.rand(n, 1, generator=g) * 360 - 180
    else:
        c = torch.rand(objects, 2, generator=g) * 800 + 100
        size = torch.rand(objects, 2, generator=g) * 150 + 30
        turn = torch.rand(objects, 1, generator=g) * 360 - 180
        k = torch.randint(0, objects, (n,), generator=g)
        xy = c[k] + (torch.rand(n, 2, generator=g) - 0.5) * 0.3 * size[k]
        wh = size[k] * (0.75 + 0.5 * torch.rand(n, 2, generator=g))
        a = turn[k] + (torch.rand(n, 1, generator=g) - 0.5) * 20
    return torch.cat([xy, wh, a], 1), torch.rand(n, generator=g)


def _rotated_iou_case(n, m, objects=None):
    def make(device):
        def gen(g):
            return {"a": rotated_boxes(n, g, objects)[0], "b": rotated_boxes(m, g, objects)[0]}

        sets = _sets(device, gen)
        impls = {
            "fastdet": lambda d: ops.box_iou_rotated(d["a"], d["b"]),
            "write output (floor)": lambda d: torch.empty((n, m), device=device).fill_(0.5),
        }
        if _tv():
            impls["torchvision"] = lambda d: _tv().ops.box_iou(d["a"], d["b"], fmt="cxcywhr")
        return sets, impls

    suffix = f"_clustered{objects}" if objects else ""
    return Case(
        f"box_iou_rotated_{n}x{m}{suffix}",
        "box_iou_rotated",
        {"n": n, "m": m, "clustered_objects": objects, "output_bytes": 4 * n * m},
        make,
        floor="write output (floor)",
        graph=True,
    )


def _rotated_nms_case(n, objects=None):
    from ..ops import _reference

    def make(device):
        def gen(g):
            b, s = rotated_boxes(n, g, objects)
            return {"boxes": b, "scores": s}

        sets = _sets(device, gen)
        impls = {"fastdet": lambda d: ops.nms_rotated(d["boxes"], d["scores"], 0.5)}
        if device == "cpu":  # what a user would write: numpy, bounding circles, then clipping
            sets = [
                dict(d, np_boxes=d["boxes"].numpy(), np_scores=d["scores"].numpy()) for d in sets
            ]
            impls["numpy reference"] = lambda d: _reference.nms_rotated(
                d["np_boxes"], d["np_scores"], 0.5
            )
        return sets, impls

    suffix = f"_clustered{objects}" if objects else "_uniform"
    return Case(
        f"nms_rotated_{n}{suffix}",
        "nms_rotated",
        {"n": n, "iou_threshold": 0.5, "clustered_objects": objects},
        make,
        min_runs=3,  # the numpy reference takes seconds at 10,000 boxes
        quick=n <= 2000,  # keeps `fastdet bench` under a minute on a 2-core CPU
    )


_ROTATED = [
    _rotated_iou_case(1000, 1000),
    _rotated_iou_case(1000, 1000, objects=20),
    _rotated_iou_case(4000, 4000),
    _rotated_nms_case(2000),
    _rotated_nms_case(10000),
    _rotated_nms_case(10000, objects=20),
]
CASES += _ROTATED
_CPU |= {c.name for c in _ROTATED if c.name != "box_iou_rotated_4000x4000"}
_CONTAINED = {"suppress_contained_300_3cls", "suppress_contained_2000_3cls"}
_CPU |= _CONTAINED
_GPU |= _CONTAINED
_GPU |= {c.name for c in _ROTATED}


# --- weighted boxes fusion (fastdet.ops.weighted_boxes_fusion) ------------------------------


def wbf_image(g: torch.Generator, models: int, n: int, objects: int, labels: int = 10):
    """One image's detections by `models` models, n boxes each, normalised to [0, 1]: jittered
    copies of `objects` objects (centre +-15%, size x0.75-1.25) of `labels` classes, as numpy
    lists (ensemble-boxes' input)."""
    c = torch.rand(objects, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1
    wh = torch.rand(objects, 2, generator=g, dtype=torch.float64) * 0.15 + 0.02
    lab = torch.randint(0, labels, (objects,), generator=g)
    bl, sl, ll = [], [], []
    for _ in range(models):
        k = torch.randint(0, objects, (n,), generator=g)
        ctr = c[k] + (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 0.3 * wh[k]
        sz = wh[k] * (0.75 + 0.5 * torch.rand(n, 2, generator=g, dtype=torch.float64))
        bl.append(torch.cat([ctr - sz / 2, ctr + sz / 2], 1).clamp(0, 1).numpy())
        sl.append(torch.rand(n, generator=g, dtype=torch.float64).numpy())
        ll.append(lab[k].numpy())
    return bl, sl, ll


def _ensemble_boxes():
    try:
        import ensemble_boxes

        return ensemble_boxes
    except ImportError:
        return None


def _wbf_case(models, n, images, peer_images, quick):
    objects = n // 20  # ~100 boxes per object over the 5 models, as raw detector outputs

    def make(device):
        def gen(g):
            return {"images": [wbf_image(g, models, n, objects) for _ in range(images)]}

        sets = _sets(device, gen)

        def fused(d):
            return [ops.weighted_boxes_fusion(*im, iou_thr=0.55) for im in d["images"]]

        impls = {"fastdet": fused}
        eb = _ensemble_boxes()
        if eb:

            def peer(d):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return [
                        eb.weighted_boxes_fusion(*im, iou_thr=0.55)
                        for im in d["images"][:peer_images]
                    ]

            impls["ensemble-boxes"] = peer
        return sets, impls

    return Case(
        f"weighted_boxes_fusion_{models}x{n}_{images}img",
        "weighted_boxes_fusion",
        {
            "models": models,
            "boxes_per_model": n,
            "images": images,
            "objects": objects,
            "labels": 10,
            "iou_thr": 0.55,
        },
        make,
        quick=quick,
        devices=("cpu",),
        min_runs=3,  # ensemble-boxes takes seconds per call
        per_call={"fastdet": images, "ensemble-boxes": peer_images},
        notes={
            "unit": f"ms per image; fastdet timed on {images} images per call, ensemble-boxes "
            f"on {peer_images} (it takes seconds per image), both scaled per image"
        },
    )


_WBF = [
    _wbf_case(5, 1000, 10, 1, quick=True),
    _wbf_case(5, 1000, 100, 3, quick=False),
    _wbf_case(5, 10000, 100, 1, quick=False),
]
CASES += _WBF
_CPU |= {c.name for c in _WBF}


# --- mask pasting (fastdet.ops.paste_masks, masks_to_labels) -------------------------------


def _paste_case(op, k, size):
    """k Mask R-CNN masks of 28 x 28 pasted into a size x size image: nuclei-sized boxes (sides
    8..64 px; some run past the right and bottom edges, none wholly outside, where torchvision
    raises). Peer: torchvision's paste_masks_in_image, and for masks_to_labels the threshold
    (> 0.5) and score-ordered argmax (ties: lower index) a user writes after it."""

    def paste_masks_in_image(*args):  # imported when run: torchvision is optional
        from torchvision.models.detection.roi_heads import paste_masks_in_image as paste

        return paste(*args)

    def tv_labels(d):
        probs = paste_masks_in_image(d["masks4"], d["boxes"], (size, size))[:, 0]
        hit = probs > 0.5
        order = torch.sort(d["scores"], descending=True, stable=True).indices
        first = hit[order].to(torch.uint8).argmax(0)  # argmax: the first maximum
        return torch.where(hit.any(0), order[first] + 1, 0).to(torch.int32)

    def make(device):
        def gen(g):
            xy = torch.rand(k, 2, generator=g) * (size - 8)
            wh = 8 + torch.rand(k, 2, generator=g) * 56
            masks = torch.rand(k, 28, 28, generator=g)
            return {
                "masks": masks,
                "masks4": masks[:, None],
                "boxes": torch.cat([xy, xy + wh], 1),
                "scores": torch.rand(k, generator=g),
            }

        sets = _sets(device, gen)
        if op == "paste_masks":
            impls = {"fastdet": lambda d: ops.paste_masks(d["masks"], d["boxes"], (size, size))}
            if _tv():
                impls["torchvision"] = lambda d: paste_masks_in_image(
                    d["masks4"], d["boxes"], (size, size)
                )
        else:
            impls = {
                "fastdet": lambda d: ops.masks_to_labels(
                    d["masks"], d["boxes"], d["scores"], (size, size)
                )
            }
            if _tv():
                impls["torchvision + argmax"] = tv_labels
        return sets, impls

    return Case(
        f"{op}_{k}x28_into_{size}",
        op,
        {"masks": k, "mask_size": 28, "image": [size, size], "padding": 1},
        make,
        quick=(k, size) == (300, 512),
        min_runs=3,  # torchvision takes seconds at 1,000 masks on a CPU
    )


_PASTE = [
    _paste_case(op, k, size)
    for op in ("paste_masks", "masks_to_labels")
    for k in (100, 300, 1000)
    for size in (512, 1024)
]
CASES += _PASTE
_CPU |= {c.name for c in _PASTE}
_GPU |= {c.name for c in _PASTE}


# --- per-call overhead of the ops' Python layer (tiny calls) -------------------------------

OVERHEAD_CALLS = 50  # tiny calls per timed run: the runner reports milliseconds per call


@contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _tiny_inputs(g: torch.Generator) -> dict:
    """3 boxes and scores (two overlapping), 1 RoI on an 8 x 16 x 16 map, as issue 17 states."""
    b = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    return {
        "boxes": b,
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "idxs": torch.tensor([0, 1, 0]),
        "x": torch.rand(1, 8, 16, 16, generator=g),
        "rois": torch.tensor([[0.0, 1, 1, 9, 9]]),
        "per_image": [b[:1] - 0.5],
    }


# name -> (the call on an ops module: fastdet.ops or torchvision.ops; the same op through the
# dispatcher, torch.ops.fastdet, where the public op is one)
_TINY = {
    "nms": (
        lambda o, d: o.nms(d["boxes"], d["scores"], 0.5),
        lambda d: torch.ops.fastdet.nms(d["boxes"], d["scores"], 0.5),
    ),
    "batched_nms": (
        lambda o, d: o.batched_nms(d["boxes"], d["scores"], d["idxs"], 0.5),
        lambda d: torch.ops.fastdet.batched_nms(d["boxes"], d["scores"], d["idxs"], 0.5),
    ),
    "box_iou": (
        lambda o, d: o.box_iou(d["boxes"], d["boxes"]),
        lambda d: torch.ops.fastdet.box_iou(d["boxes"], d["boxes"]),
    ),
    "roi_align": (
        lambda o, d: o.roi_align(d["x"], d["rois"], 7, 1.0, 2, True),
        lambda d: torch.ops.fastdet.roi_align(d["x"], d["rois"], 1.0, 7, 7, 2, True),
    ),
    "roi_align_list": (lambda o, d: o.roi_align(d["x"], d["per_image"], 7, 1.0, 2, True), None),
    "roi_pool": (
        lambda o, d: o.roi_pool(d["x"], d["rois"], 7, 1.0),
        lambda d: torch.ops.fastdet.roi_pool(d["x"], d["rois"], 1.0, 7, 7),
    ),
    "clip_boxes_to_image": (
        lambda o, d: o.clip_boxes_to_image(d["boxes"], (16, 16)),
        lambda d: torch.ops.fastdet.clip_boxes_to_image(d["boxes"], 16.0, 16.0),
    ),
    "remove_small_boxes": (
        lambda o, d: o.remove_small_boxes(d["boxes"], 1.0),
        lambda d: torch.ops.fastdet.remove_small_boxes(d["boxes"], 1.0),
    ),
    "box_convert": (lambda o, d: o.box_convert(d["boxes"], "xyxy", "cxcywh"), None),
}


def _overhead_case(op: str):
    call, dispatched = _TINY[op]

    def make(device):
        sets = _sets(device, _tiny_inputs)

        def repeat(fn):
            def run(d):
                with _one_thread():
                    for _ in range(OVERHEAD_CALLS):
                        fn(d)

            return run

        impls = {"fastdet": repeat(lambda d: call(ops, d))}
        if _tv():
            impls["torchvision"] = repeat(lambda d: call(_tv().ops, d))
        if dispatched:  # what the eager fast path saves: the torch.library op, called directly
            impls["torch.ops.fastdet"] = repeat(dispatched)
        return sets, impls

    return Case(
        f"overhead_{op}",
        "overhead",
        {"op": op, "calls_per_run": OVERHEAD_CALLS, "threads": 1},
        make,
        quick=op in ("nms", "roi_align"),  # issue 17's two: about a second each; the rest --full
        min_runs=20,
        per_call=dict.fromkeys(("fastdet", "torchvision", "torch.ops.fastdet"), OVERHEAD_CALLS),
        notes={
            "unit": "ms per call, one thread, warm; tiny inputs (3 boxes; 1 RoI on an "
            "8 x 16 x 16 map): the ops' Python layer, validation and dispatch, not their "
            "kernels; torch.ops.fastdet is the same op through the dispatcher, without the "
            "eager fast path"
        },
    )


_OVERHEAD = [_overhead_case(op) for op in _TINY]
CASES += _OVERHEAD
_CPU |= {c.name for c in _OVERHEAD}
_GPU |= {c.name for c in _OVERHEAD}

CASES += _PIPELINE  # `predict det` over files against its forward passes (--full)
