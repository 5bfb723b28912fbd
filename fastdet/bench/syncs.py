"""Host syncs of a model call, counted on any device: the operations that make the host wait
for the device's data when they run on a GPU (a scalar read back, a size that depends on the
data). A TorchDispatchMode sees every aten and fastdet op, so the count is the same on the CPU
as on CUDA; on a GPU, torch.cuda.set_sync_debug_mode("warn") confirms it from the driver's side.

Counted: `.item()` / float() / bool() of a tensor (aten._local_scalar_dense), nonzero and
torch.where(cond) (one argument), masked_select, boolean-mask indexing, unique, is_nonzero,
equal, repeat_interleave without an output size, and the fastdet ops whose output size is the
data's (NMS, remove_small_boxes: the kernel's count is read back to size the output), and
Tensor.tolist / Tensor.numpy (seen by a TorchFunctionMode: on the CPU they run no aten op)."""

from __future__ import annotations

import collections
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_ATEN = {
    "aten._local_scalar_dense.default",
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten.is_nonzero.default",
    "aten.equal.default",
    "aten._unique2.default",
    "aten.unique_dim.default",
    "aten.unique_consecutive.default",
    "aten.repeat_interleave.Tensor",
}
# fastdet ops whose output size depends on the data
SYNC_FASTDET = {
    "fastdet.nms.default",
    "fastdet.batched_nms.default",
    "fastdet.suppress_contained.default",
    "fastdet.remove_small_boxes.default",
    "fastdet.nms_rotated.default",
    "fastdet.batched_nms_rotated.default",
    "fastdet.soft_nms.default",
    "fastdet.weighted_boxes_fusion.default",
}


def _syncs(func, args, kwargs) -> str | None:
    name = str(func)
    if name in SYNC_ATEN or name in SYNC_FASTDET:
        return name
    if name.startswith("aten.index.Tensor") or name.startswith("aten.index_put"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
            return f"{name} (boolean mask)"
    if name == "aten.repeat_interleave.self_Tensor" and kwargs.get("output_size") is None:
        return name
    return None


class _Reads(TorchFunctionMode):
    """Counts the tensor methods that read data into Python without an aten op (tolist,
    numpy): a host sync on a GPU, invisible to the dispatch mode on the CPU."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.numpy):
            self.counter.record(f"Tensor.{func.__name__}")
        return func(*args, **(kwargs or {}))


class HostSyncCounter(TorchDispatchMode):
    """with HostSyncCounter() as c: ...; c.total, c.by_op {op: n}, c.by_site {"file:line": n}
    (the innermost fastdet frame outside fastdet.ops and this module: the model code that
    asked)."""

    def __init__(self):
        super().__init__()
        self.by_op = collections.Counter()
        self.by_site = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def record(self, op: str) -> None:
        self.by_op[op] += 1
        self.by_site[_site()] += 1

    def __enter__(self):
        self._reads = _Reads(self)
        self._reads.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._reads.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        hit = _syncs(func, args, kwargs)
        if hit:
            self.record(hit)
        return func(*args, **kwargs)


def _site() -> str:
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename.replace("\\", "/")
        if "/fastdet/" in path and "/fastdet/ops/" not in path and "/fastdet/bench/" not in path:
            return f"{path.split('/fastdet/')[-1]}:{frame.lineno}"
    return "?"


def count_host_syncs(fn, *args, **kwargs) -> dict:
    """{"total": n, "by_op": {...}, "by_site": {...}} of one fn(*args, **kwargs) call."""
    with HostSyncCounter() as counter:
        fn(*args, **kwargs)
    return {
        "total": counter.total,
        "by_op": dict(counter.by_op.most_common()),
        "by_site": dict(counter.by_site.most_common()),
    }


def cuda_syncs(fn, *args, **kwargs) -> int:
    """The synchronizing CUDA calls of one fn(*args, **kwargs) call, as the driver side sees
    them: torch.cuda.set_sync_debug_mode("warn") warns once per sync."""
    import warnings

    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(before)
    return sum("synchroniz" in str(w.message) for w in caught)


def detector_syncs(device: str = "cpu", size: int = 600, batch: int = 2) -> dict:
    """Host syncs of fastdet's Faster R-CNN and Mask R-CNN (ResNet-50 + FPN, random weights,
    `batch` random size x size images with three boxes each): per training step and per
    inference call, counted by HostSyncCounter and, on CUDA, by the driver (cuda_syncs)."""
    from ..models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

    out = {}
    for name, build in (
        ("fasterrcnn", fasterrcnn_resnet50_fpn),
        ("maskrcnn", maskrcnn_resnet50_fpn),
    ):
        torch.manual_seed(0)
        model = build(num_classes=2, min_size=size, max_size=size).to(device)
        images, targets = _inputs(device, size, batch, masks=name == "maskrcnn")
        for mode, row in _model_syncs(model, images, targets, device).items():
            out[f"{name}_{mode}"] = row
    return out


def _model_syncs(model, images, targets, device: str) -> dict:
    def step():
        sum(model(images, targets).values()).backward()

    def infer():
        with torch.no_grad():
            model(images)

    out = {}
    for mode, fn in (("train_step", step), ("inference", infer)):
        model.train(mode == "train_step")
        fn()  # warm: first-call work (cuDNN autotuning, allocations) is not counted
        row = {"counted": count_host_syncs(fn)["total"]}
        if device == "cuda":
            row["cuda"] = cuda_syncs(fn)
        out[mode] = row
    return out


def _inputs(device, size: int, batch: int, masks: bool):
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[50.0, 60, 200, 220], [300, 310, 420, 480], [100, 400, 180, 560]])
    boxes = boxes * size / 600
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, size, size, generator=g).to(device))
        t = {"boxes": boxes.to(device), "labels": torch.ones(3, dtype=torch.int64, device=device)}
        if masks:
            m = torch.zeros(3, size, size, dtype=torch.uint8)
            for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
                m[k, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] = 1
            t["masks"] = m.to(device)
        targets.append(t)
    return images, targets
