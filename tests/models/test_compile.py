"""torch.compile and bfloat16 for the detectors (fastdet.models.compile, the builders' `compile`
flag, the engine's --compile / --bf16): compiled inference is one graph (fullgraph) whose
detections equal eager ones; compiled training (static parts compiled) computes eager's loss
and learns; bf16 autocast on the CPU trains and detects what float32 does. Inductor compiles
C++ here, so the tests use the smallest detector that has every part the properties
need (a three-convolution backbone with two feature levels, the RPN, the box and mask heads and
fastdet's ops): compiling it takes half the time of fasterrcnn_resnet18_fpn."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fastdet.models.compile import STATIC_PARTS, compile_model, is_compiled
from fastdet.models.detection import (
    FasterRCNN,
    MaskRCNN,
    MaskRCNNHeads,
    MaskRCNNPredictor,
)
from fastdet.ops import AnchorGenerator, MultiScaleRoIAlign, box_iou

pytestmark = pytest.mark.slow  # long: run first (tests/conftest.py)

SIZE = 64


def _batch(seed: int = 0):
    """Two 64 x 64 images, each with two bright rectangles on noise, and their targets."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(2):
        im = torch.rand(3, SIZE, SIZE, generator=g) * 0.2
        boxes = []
        for x, y, w, h in torch.randint(4, 28, (2, 4), generator=g).tolist():
            x, y, w, h = x, y + (32 if boxes else 0), w // 2 + 10, h // 2 + 10
            x2, y2 = min(x + w, SIZE - 1), min(y + h, SIZE - 1)
            im[:, y:y2, x:x2] += 0.7
            boxes.append([x, y, x2, y2])
        images.append(im.clamp(0, 1))
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.ones(2, dtype=torch.int64),
            }
        )
    return images, targets


class TinyBackbone(nn.Module):
    """Three strided convolutions: two feature levels, at strides 4 and 8 (so MultiScaleRoIAlign
    maps boxes to levels inside the graph)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2, 1)
        )
        self.down = nn.Conv2d(channels, channels, 3, 2, 1)
        self.out_channels = channels

    def forward(self, x):
        c4 = torch.relu(self.stem(x))
        return {"0": c4, "1": torch.relu(self.down(c4))}


def _tiny(masks: bool = False, **kw):
    """Faster R-CNN (masks: Mask R-CNN) on TinyBackbone, with small heads."""
    torch.manual_seed(0)
    kw = {"box_score_thresh": 0.0, "box_detections_per_img": 1000, **kw}
    kw.update(
        min_size=SIZE,
        max_size=SIZE,
        rpn_anchor_generator=AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2),
        box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2),
        representation_size=64,
    )
    if not masks:
        return FasterRCNN(TinyBackbone(), 2, **kw)
    mask_heads = dict(
        mask_roi_pool=MultiScaleRoIAlign(["0", "1"], 14, 2),
        mask_head=MaskRCNNHeads(16, (16, 16), 1),
        mask_predictor=MaskRCNNPredictor(16, 16, 2),
    )
    return MaskRCNN(TinyBackbone(), 2, **mask_heads, **kw)


def _same_detections(a: dict, b: dict, atol: float = 1e-3) -> None:
    """Equal up to the order of near-tied scores: the same count, and each detection of `a` has
    one of `b` with the same label, a box within atol and a score within atol."""
    assert a["boxes"].shape == b["boxes"].shape
    if not len(a["boxes"]):
        return
    close = (a["boxes"][:, None] - b["boxes"][None]).abs().amax(-1) <= atol
    close &= (a["scores"][:, None] - b["scores"][None]).abs() <= atol
    close &= a["labels"][:, None] == b["labels"][None]
    assert close.any(1).all(), f"{int((~close.any(1)).sum())} detections have no match"


def _steps(model, images, targets, n: int, autocast=False, lr=0.01) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    for _ in range(n):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_compiled_inference_is_one_graph_and_equals_eager():
    images, _ = _batch()
    eager = _tiny().eval()
    compiled = _tiny(compile=True).eval()  # fullgraph=True: a graph break would raise
    compiled.load_state_dict(eager.state_dict())
    assert is_compiled(compiled) and list(compiled.state_dict()) == list(eager.state_dict())
    with torch.no_grad():
        want, got = eager(images), compiled(images)
        again = compiled([im.flip(-1) for im in images])  # new data, same graph
        want_again = eager([im.flip(-1) for im in images])
    assert len(want[0]["boxes"]) > 10  # something to compare
    for a, b in zip(want + want_again, got + again):
        _same_detections(a, b)


def test_compiled_mask_rcnn_inference_equals_eager():
    images, _ = _batch()
    eager = _tiny(masks=True, box_detections_per_img=50).eval()
    compiled = compile_model(copy.deepcopy(eager))
    with torch.no_grad():
        want, got = eager(images), compiled(images)
    for a, b in zip(want, got):
        _same_detections({k: a[k] for k in ("boxes", "scores", "labels")}, b)
        # masks follow their boxes: compare where the detections are in the same order
        same = (a["boxes"] - b["boxes"]).abs().amax(1) <= 1e-3
        assert same.float().mean() > 0.9
        torch.testing.assert_close(a["masks"][same], b["masks"][same], atol=1e-4, rtol=0)


def test_compiled_training_computes_eager_loss_and_learns():
    images, targets = _batch()
    eager = _tiny()
    compiled = compile_model(copy.deepcopy(eager))
    for path in STATIC_PARTS[:4]:  # backbone, RPN head, box head and predictor
        module = compiled
        for name in path.split("."):
            module = getattr(module, name)
        assert is_compiled(module), path
    eager.train(), compiled.train()
    torch.manual_seed(1)
    first = float(sum(eager(images, targets).values()).detach())
    torch.manual_seed(1)  # the same sampling draws: the middle of the step runs eagerly
    losses = _steps(compiled, images, targets, 25, lr=0.05)  # the tiny model learns at 0.05
    assert losses[0] == pytest.approx(first, rel=1e-3)
    assert min(losses[-5:]) < 0.5 * losses[0], losses


def test_bf16_autocast_trains_and_detects_as_float32():
    images, targets = _batch()
    model = _tiny()
    losses = _steps(model, images, targets, 25, autocast=True, lr=0.05)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        fp32 = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(images)
    for a, b, t in zip(fp32, bf16, targets):
        # the heads' outputs leave autocast as float32: boxes decoded in float32
        assert b["boxes"].dtype == b["scores"].dtype == torch.float32
        # each object found among the 20 best detections, in float32 and in bfloat16
        ia = box_iou(t["boxes"], a["boxes"][:20]).amax(1)
        ib = box_iou(t["boxes"], b["boxes"][:20]).amax(1)
        assert (ia > 0.5).all() and (ib > 0.5).all(), (ia, ib)
