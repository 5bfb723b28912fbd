"""Whole-detector CPU timings interleaved run by run (fairer than the bench's blocks on a shared
machine): torchvision's resnet50_fpn eager float32 (and under bf16 autocast) against fastdet's
with the same weights eager, bf16, compiled and with channels-last (NHWC) weights, alone and
with bf16, and fastdet's backbone alone (the floor), at 600 x 600 with 3 boxes; medians.

    python benchmarks/det_interleaved.py r50 infer|train [threads=1] [reps=7] [nocompile]

Prints JSON; the first call (compiling, for "fastdet compiled") is timed apart."""

import copy
import json
import statistics
import sys
import time

import torch
import torchvision.models.detection as tvd

from fastdet.models.compile import compile_model
from fastdet.models.detection import fasterrcnn_resnet18_fpn, fasterrcnn_resnet50_fpn

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
model = sys.argv[1]
train = sys.argv[2] == "train"
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 7
size = 600
torch.manual_seed(0)
kw = dict(min_size=size, max_size=1000)
build = fasterrcnn_resnet50_fpn if model == "r50" else fasterrcnn_resnet18_fpn
ours = build(num_classes=2, **kw)
nets = {"fastdet": ours}
if model == "r50":
    tv = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, **kw)
    tv.load_state_dict(ours.state_dict())
    nets["torchvision"] = tv
comp = compile_model(copy.deepcopy(ours)) if "nocompile" not in sys.argv else None
nhwc = copy.deepcopy(ours).to(memory_format=torch.channels_last)
for n in list(nets.values()) + ([comp] if comp else []) + [nhwc]:
    n.train(train)
img = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))]
tg = [
    {
        "boxes": torch.tensor([[50.0, 60, 200, 220], [300, 310, 420, 480], [100, 400, 180, 560]]),
        "labels": torch.tensor([1, 1, 1]),
    }
]


def run(net, bf16=False):
    def f():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if not train:
                with torch.no_grad():
                    return net(img)
            net.zero_grad(set_to_none=True)
            loss = sum(net(img, tg).values())
        loss.backward()

    return f


def floor(bf16=False):
    x = ours.transform(img)[0].tensors

    def f():
        with (
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
            torch.set_grad_enabled(train),
        ):
            out = ours.backbone(x)
        if train:
            sum(o.float().mean() for o in out.values()).backward()

    return f


V = {}
if "torchvision" in nets:
    V["torchvision"] = run(nets["torchvision"])
    V["torchvision bf16"] = run(nets["torchvision"], True)
V["fastdet"] = run(ours)
V["fastdet bf16"] = run(ours, True)
if comp:
    V["fastdet compiled"] = run(comp)
V["fastdet channels_last"] = run(nhwc)
V["fastdet bf16 channels_last"] = run(nhwc, True)
V["backbone floor"] = floor()
V["backbone floor bf16"] = floor(True)
warm = {}
for k, f in V.items():
    s = time.perf_counter()
    f()
    warm[k] = time.perf_counter() - s
t = {k: [] for k in V}
for _r in range(reps):
    for k, f in V.items():
        s = time.perf_counter()
        f()
        t[k].append((time.perf_counter() - s) * 1e3)
peer = "torchvision" if "torchvision" in t else "fastdet"
pm = statistics.median(t[peer])
out = {
    k: {
        "median_ms": statistics.median(v),
        "vs_" + peer: pm / statistics.median(v),
        "first_call_s": warm[k],
    }
    for k, v in t.items()
}
print(
    json.dumps(
        {
            "model": model,
            "train": train,
            "threads": torch.get_num_threads(),
            "reps": reps,
            "results": out,
        },
        indent=1,
    )
)
