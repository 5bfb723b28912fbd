"""The eager fast path (fastdet.ops._arrays.eager): plain tensors in eager mode with no gradient
wanted skip the torch.library op and run its function directly, with the same result bit for
bit; everything that watches or transforms a call (autograd, torch.compile, jit tracing,
make_fx, dispatch and function modes, the profiler) still sees the op.

Which path ran is read off a spy on each op object, never off timings."""

import sys

import numpy as np
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from fastdet import ops
from fastdet.ops import _arrays

_nms = sys.modules["fastdet.ops.nms"]  # the modules (fastdet.ops.nms is the function)
_ra = sys.modules["fastdet.ops.roi_align"]
_rp = sys.modules["fastdet.ops.roi_pool"]
_iou = sys.modules["fastdet.ops.box_iou"]
_boxes = sys.modules["fastdet.ops.boxes"]
_coder = sys.modules["fastdet.ops.box_coder"]
_rot = sys.modules["fastdet.ops.rotated"]
_soft = sys.modules["fastdet.ops.soft_nms"]


class Spy:
    """Wraps the op object at `where` (a module attribute or a dict entry) and counts calls."""

    def __init__(self, monkeypatch, container, key):
        self.calls = 0
        get = container.__getitem__ if isinstance(container, dict) else container.__dict__.get
        op = get(key)

        def counted(*args):
            self.calls += 1
            return op(*args)

        if isinstance(container, dict):
            monkeypatch.setitem(container, key, counted)
        else:
            monkeypatch.setattr(container, key, counted)


def _t(x, dtype, device="cpu"):
    return torch.from_numpy(np.ascontiguousarray(x)).to(device, dtype)


def _rotated(rng, n, dtype, device):
    c = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(4, 60, (n, 2))
    a = rng.uniform(-180, 180, (n, 1))
    return _t(np.concatenate([c, wh, a], 1), dtype, device)


def _cases(make, rng, dtype, device="cpu"):
    """name -> (the op's location, a call of the public function on fresh random inputs)."""
    n = int(rng.integers(1, 60))
    b, s = _t(make.clustered(n), dtype, device), _t(make.scores(n), dtype, device)
    c = torch.from_numpy(make.classes(n, 3)).to(device)
    b2 = _t(make.boxes(int(rng.integers(1, 20))), dtype, device)
    x = _t(rng.standard_normal((2, 3, 24, 20)), dtype, device)
    k = int(rng.integers(1, 12))
    xy = rng.uniform(-4, 18, (k, 2))
    r = np.concatenate([rng.integers(0, 2, (k, 1)), xy, xy + rng.uniform(0.5, 12, (k, 2))], 1)
    rois = _t(r, dtype, device)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    codes = _t(rng.normal(0, 0.5, (n, 8)), dtype, device)
    rb, rs = _rotated(rng, n, dtype, device), s
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
    perm = torch.from_numpy(rng.permutation(n)).to(device)  # proposals: the boxes in another order
    return {
        "nms": ((_nms, "_nms_op"), lambda: ops.nms(b, s, 0.5)),
        "batched_nms": ((_nms, "_batched_op"), lambda: ops.batched_nms(b, s, c, 0.5)),
        "suppress_contained": (
            (_nms, "_contained_op"),
            lambda: ops.suppress_contained(b, s, c, 0.6),
        ),
        "box_iou": ((_iou._OPS, "box_iou"), lambda: ops.box_iou(b, b2)),
        "generalized_box_iou": (
            (_iou._OPS, "generalized_box_iou"),
            lambda: ops.generalized_box_iou(b, b2),
        ),
        "distance_box_iou": ((_iou._OPS, "distance_box_iou"), lambda: ops.distance_box_iou(b, b2)),
        "complete_box_iou": ((_iou._OPS, "complete_box_iou"), lambda: ops.complete_box_iou(b, b2)),
        "box_area": ((_iou, "_box_area_op"), lambda: ops.box_area(b)),
        "roi_align": ((_ra, "_roi_align_op"), lambda: ops.roi_align(x, rois, 5, 0.5, -1, True)),
        "roi_align_list": ((_ra, "_roi_align_op"), lambda: ops.roi_align(x, per_image, (4, 3))),
        "roi_pool": ((_rp, "_roi_pool_op"), lambda: ops.roi_pool(x, rois, 3, 0.5)),
        "clip_boxes_to_image": ((_boxes, "_clip_op"), lambda: ops.clip_boxes_to_image(b, (90, 70))),
        "remove_small_boxes": ((_boxes, "_small_op"), lambda: ops.remove_small_boxes(b, 60.0)),
        "encode": ((_coder, "_encode_op"), lambda: coder.encode_single(b, b[perm])),
        "decode": ((_coder, "_decode_op"), lambda: coder.decode_single(codes, b)),
        "box_iou_rotated": ((_rot, "_iou_op"), lambda: ops.box_iou_rotated(rb, rb[:5])),
        "nms_rotated": ((_rot, "_nms_op"), lambda: ops.nms_rotated(rb, rs, 0.3)),
        "batched_nms_rotated": (
            (_rot, "_batched_op"),
            lambda: ops.batched_nms_rotated(rb, rs, c, 0.3),
        ),
        "soft_nms": ((_soft, "_soft_op"), lambda: ops.soft_nms(b, s, 0.3, 0.5, 0.01, "linear")),
    }


NAMES = [
    "nms",
    "batched_nms",
    "suppress_contained",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "box_area",
    "roi_align",
    "roi_align_list",
    "roi_pool",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "encode",
    "decode",
    "box_iou_rotated",
    "nms_rotated",
    "batched_nms_rotated",
    "soft_nms",
]


def _same(a, b):
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_fast_path_is_taken_and_equals_the_op(name, dtype, device, make, rng, monkeypatch):
    (where, key), call = _cases(make, rng, dtype, device)[name]
    spy = Spy(monkeypatch, where, key)
    fast = call()
    assert spy.calls == 0  # eager, no grad: the op's function ran without the op
    with monkeypatch.context() as m:
        m.setattr(_arrays, "eager", lambda *tensors: False)
        slow = call()
    assert spy.calls == 1  # the dispatcher's way
    assert _same(fast, slow)


def test_cases_cover_every_name(make, rng):
    assert list(_cases(make, rng, torch.float32)) == NAMES


def test_roi_align_with_grad_goes_through_autograd(rng, monkeypatch):
    spy = Spy(monkeypatch, _ra, "_roi_align_op")
    x = torch.from_numpy(rng.standard_normal((1, 2, 6, 7))).requires_grad_()
    r = torch.tensor([[0.0, 0.5, 0.3, 4.2, 5.1], [0.0, 2.0, 1.0, 6.0, 3.5]], dtype=x.dtype)
    out = ops.roi_align(x, r, 3, 1.0, 2, True)
    assert spy.calls == 1 and out.requires_grad
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, r, 3, 1.0, 2, True), (x,))
    with torch.no_grad():  # no gradient wanted: the fast path, and no graph
        y = ops.roi_align(x, r, 3, 1.0, 2, True)
    assert spy.calls > 1 and not y.requires_grad
    calls = spy.calls
    with torch.no_grad():
        y2 = ops.roi_align(x, r, 3, 1.0, 2, True)
    assert spy.calls == calls and torch.equal(y, y2) and torch.equal(y, out.detach())


def test_roi_pool_with_grad_goes_through_autograd(rng, monkeypatch):
    spy = Spy(monkeypatch, _rp, "_roi_pool_op")
    x = torch.from_numpy(rng.standard_normal((1, 2, 6, 7))).requires_grad_()
    r = torch.tensor([[0.0, 0.5, 0.3, 4.2, 5.1]], dtype=x.dtype)
    ops.roi_pool(x, r, 2).sum().backward()
    assert spy.calls == 1 and x.grad.abs().sum() > 0


def _boxes_scores(make, n=40):
    return _t(make.clustered(n), torch.float32), _t(make.scores(n), torch.float32)


def test_profiler_sees_the_op(make, monkeypatch):
    spy = Spy(monkeypatch, _nms, "_nms_op")
    b, s = _boxes_scores(make)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        ops.nms(b, s, 0.5)
    assert spy.calls == 1
    assert "fastdet::nms" in {e.key for e in prof.key_averages()}


def test_function_mode_sees_the_op(make, monkeypatch):
    spy = Spy(monkeypatch, _nms, "_nms_op")
    b, s = _boxes_scores(make)
    with torch.device("cpu"):  # a torch function mode
        keep = ops.nms(b, s, 0.5)
    assert spy.calls == 1 and torch.equal(keep, ops.nms(b, s, 0.5))


def test_make_fx_and_jit_trace_record_the_op(make, rng):
    b, s = _boxes_scores(make)
    x = torch.from_numpy(rng.standard_normal((1, 2, 8, 8))).float()
    r = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]])

    def f(x, r, b, s):
        return ops.roi_align(x, r, 2, 1.0, 2, True), ops.box_iou(b, b)

    code = make_fx(f)(x, r, b, s).code  # real tensors under a proxy dispatch mode
    assert "fastdet.roi_align" in code and "fastdet.box_iou" in code
    traced = torch.jit.trace(lambda b, s: ops.box_iou(b, b) + s.sum(), (b, s), check_trace=False)
    assert "fastdet::box_iou" in str(traced.graph)
    assert torch.equal(traced(b, s), ops.box_iou(b, b) + s.sum())


def test_fake_tensors_take_the_op(make):
    from torch._subclasses.fake_tensor import FakeTensorMode

    b, _ = _boxes_scores(make)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fb = mode.from_tensor(b)
        assert ops.box_iou(fb, fb).shape == (40, 40)
        x = mode.from_tensor(torch.zeros(1, 2, 8, 8))
        out = ops.roi_align(x, mode.from_tensor(torch.tensor([[0.0, 1, 1, 5, 5]])), 3)
        assert out.shape == (1, 2, 3, 3)


def test_inductor_compiles_nms_and_roi_align_fullgraph(make, rng):
    """torch.compile (inductor, gcc on the CPU) of a small detector-like step: nms keeps a
    data-dependent number of boxes, roi_align pools them."""
    b, s = _boxes_scores(make, 30)
    b = b / 4  # inside a 64 x 64 map
    x = torch.from_numpy(rng.standard_normal((1, 4, 64, 64))).float()

    def step(x, b, s):
        keep = ops.nms(b, s, 0.5)
        kept = b[keep]
        rois = torch.cat([torch.zeros_like(kept[:, :1]), kept], 1)
        return ops.roi_align(x, rois, 3, 1.0, 2, True).mean((1, 2, 3)), keep

    compiled = torch.compile(step, fullgraph=True)
    got, want = compiled(x, b, s), step(x, b, s)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0])


def test_bad_input_raises_the_same_errors_on_the_fast_path():
    b = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="boxes contains NaN|finite"):
        ops.nms(torch.tensor([[0.0, 0, 1, float("nan")]]), torch.ones(1), 0.5)
    with pytest.raises(ValueError, match="scores"):
        ops.nms(b, torch.zeros(2), 0.5)
    with pytest.raises(TypeError, match="iou_threshold"):
        ops.nms(b, torch.zeros(3), "0.5")
    with pytest.raises(ValueError, match=r"boxes\[:, 0\] must hold integer batch indices"):
        ops.roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[1.0, 0, 0, 2, 2]]), 2)
    with pytest.raises(ValueError, match=r"boxes\[:, 0\] must hold integer batch indices"):
        ops.roi_align(torch.zeros(2, 1, 4, 4), torch.tensor([[0.5, 0, 0, 2, 2]]), 2)
    with pytest.raises(ValueError, match="boxes contains NaN"):
        ops.roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[0.0, 0, 0, float("inf"), 2]]), 2)
    with pytest.raises(ValueError, match="is on"):
        ops.roi_align(torch.zeros(1, 1, 4, 4), [torch.zeros(1, 4, device="meta")], 2)
    with pytest.raises(ValueError, match="spatial_scale"):
        ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 2, 0.0)
