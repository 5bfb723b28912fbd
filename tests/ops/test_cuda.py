"""CUDA kernels against the CPU kernels and torchvision's CUDA ops (skipped without a GPU)."""

import sys

import numpy as np
import pytest
import torch

import fastdet
from fastdet import ops

pytestmark = pytest.mark.gpu
tv = pytest.importorskip("torchvision")


@pytest.fixture
def g():
    seed = int.from_bytes(np.random.bytes(4), "little")
    print("seed", seed)
    return torch.Generator().manual_seed(seed)


def boxes(n, g, image=1000.0, lo=4.0, hi=125.0):
    xy = torch.rand(n, 2, generator=g) * image
    wh = lo + torch.rand(n, 2, generator=g) * (hi - lo)
    return torch.cat([xy, xy + wh], 1)


def unique_scores(n, g):
    return (torch.randperm(n, generator=g).float() + 1) / (n + 1)


def test_build_has_cuda():
    info = fastdet.build_info()
    assert info["cuda_compiled"] and "cuda" in info["backends"]
    assert info["gpus"] and info["cuda_archs"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op", ["box_iou", "generalized_box_iou"])
def test_pairwise_matches_cpu_and_torchvision(op, dtype, g):
    a, b = boxes(777, g).to(dtype), boxes(1001, g).to(dtype)
    got = getattr(ops, op)(a.cuda(), b.cuda())
    assert got.is_cuda and got.dtype == dtype and got.shape == (777, 1001)
    torch.testing.assert_close(got.cpu(), getattr(ops, op)(a, b), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, getattr(tv.ops, op)(a.cuda(), b.cuda()), rtol=1e-5, atol=1e-6)


def test_box_iou_edges_on_gpu(g):
    a = torch.tensor([[0, 0, 0, 0], [5, 5, 1, 1], [0, 0, 10, 10]], dtype=torch.float32)
    got = ops.box_iou(a.cuda(), a.cuda()).cpu()
    assert torch.equal(got, ops.box_iou(a, a))
    assert not got.isnan().any()
    for n, m in [(0, 5), (5, 0), (1, 1), (3, 7)]:  # tails of the vectorised stores
        x, y = boxes(n, g), boxes(m, g)
        torch.testing.assert_close(ops.box_iou(x.cuda(), y.cuda()).cpu(), ops.box_iou(x, y))


def test_box_area_half_precision(g):
    b = boxes(100, g)
    for dt in (torch.float16, torch.bfloat16):
        got = ops.box_area(b.to(dt).cuda())
        assert got.dtype == dt
        torch.testing.assert_close(got.float().cpu(), ops.box_area(b.to(dt).float()).to(dt).float())


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000, 6000, 20000])
@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_nms_matches_torchvision(n, thr, g):
    b, s = boxes(n, g), unique_scores(n, g)
    got = ops.nms(b.cuda(), s.cuda(), thr)
    assert got.is_cuda and got.dtype == torch.int64
    assert torch.equal(got.cpu(), tv.ops.nms(b.cuda(), s.cuda(), thr).cpu())
    assert torch.equal(got.cpu(), ops.nms(b, s, thr))


@pytest.mark.parametrize("n", [100_000, 200_000])
def test_nms_large_matches_cpu(n, g):
    b, s = boxes(n, g, image=3000.0), unique_scores(n, g)
    assert torch.equal(ops.nms(b.cuda(), s.cuda(), 0.7).cpu(), ops.nms(b, s, 0.7))


def _edge_sets():
    """The core issue's constructed cases: (name, boxes, scores)."""
    f = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    yield "one", f([[1, 2, 3, 4]]), f([0.5])
    yield "identical", f([[0, 0, 10, 10]] * 5), f([0.1, 0.9, 0.5, 0.3, 0.7])
    yield "iou_at_threshold", f([[0, 0, 10, 10], [0, 0, 10, 5], [0, 5, 10, 10]]), f([0.9, 0.8, 0.7])
    yield (
        "zero_area",
        f([[0, 0, 0, 0], [5, 5, 5, 9], [0, 0, 10, 10], [3, 3, 3, 3]]),
        f([0.9, 0.8, 0.7, 0.6]),
    )
    yield (
        "huge_negative",
        f(
            [
                [-1e7, -1e7, -1e7 + 50, -1e7 + 60],
                [-1e7 + 10, -1e7, -1e7 + 60, -1e7 + 60],
                [1e7, 1e7, 1e7 + 8, 1e7 + 8],
                [1e7 + 1, 1e7, 1e7 + 9, 1e7 + 8],
            ]
        ),
        f([0.4, 0.3, 0.2, 0.1]),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_cases_match_cpu(dtype):
    for name, b, s in _edge_sets():
        b, s = b.to(dtype), s.to(dtype)
        bc, sc = b.cuda(), s.cuda()
        for op in (ops.box_iou, ops.generalized_box_iou):
            assert torch.equal(op(bc, bc).cpu(), op(b, b)), (name, op.__name__)
        assert torch.equal(ops.box_area(bc).cpu(), ops.box_area(b)), name
        for thr in (0.5, 0.0, 1.0):
            assert torch.equal(ops.nms(bc, sc, thr).cpu(), ops.nms(b, s, thr)), (name, thr)
            cls = torch.arange(len(b)) % 2
            assert torch.equal(
                ops.batched_nms(bc, sc, cls.cuda(), thr).cpu(), ops.batched_nms(b, s, cls, thr)
            ), (name, thr)
        k1, s1 = ops.soft_nms(bc, sc, 0.5, 0.5, 0.0, "gaussian")
        k2, s2 = ops.soft_nms(b, s, 0.5, 0.5, 0.0, "gaussian")
        assert torch.equal(k1.cpu(), k2), name
        torch.testing.assert_close(s1.cpu(), s2)
    b = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5]], dtype=dtype, device="cuda")
    assert ops.nms(b, torch.tensor([0.9, 0.8], dtype=dtype, device="cuda"), 0.5).tolist() == [0, 1]
    assert ops.nms(b, torch.tensor([0.9, 0.8], dtype=dtype, device="cuda"), 0.49).tolist() == [0]


def test_empty_noncontiguous_half_and_mixed_devices(g):
    e = torch.zeros(0, 4, device="cuda")
    assert ops.box_iou(e, boxes(3, g).cuda()).shape == (0, 3)
    assert ops.batched_nms(e, e[:, 0], e[:, 0].long(), 0.5).shape == (0,)
    assert ops.soft_nms(e, e[:, 0])[0].shape == (0,)
    wide = boxes(400, g).cuda().repeat(1, 2)[:, 2:6]  # non-contiguous view
    s = unique_scores(400, g).cuda()
    assert not wide.is_contiguous()
    assert torch.equal(ops.nms(wide, s, 0.5), ops.nms(wide.contiguous(), s, 0.5))
    for dt in (torch.float16, torch.bfloat16):
        got = ops.nms(wide.to(dt), s.to(dt), 0.5)
        assert torch.equal(got.cpu(), ops.nms(wide.to(dt).cpu(), s.to(dt).cpu(), 0.5))
        x = torch.randn(1, 4, 20, 20, device="cuda").to(dt)
        r = torch.tensor([[0, 1, 1, 15, 12]], device="cuda", dtype=dt)
        assert ops.roi_align(x, r, 5, 1.0, 2, True).dtype == dt
    with pytest.raises(ValueError, match="scores is on cpu but boxes is on cuda:0"):
        ops.nms(wide, s.cpu(), 0.5)
    with pytest.raises(ValueError, match="on cuda:0 but .* on cpu|on cpu but .* on cuda:0"):
        ops.box_iou(wide.cpu(), wide)


def test_nms_float64_ties_and_empty(g):
    b = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float64)
    s = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    assert ops.nms(b.cuda(), s.cuda(), 0.5).tolist() == [0, 2]
    e = ops.nms(torch.zeros(0, 4, device="cuda"), torch.zeros(0, device="cuda"), 0.5)
    assert e.shape == (0,) and e.is_cuda


def test_nms_nan_raises_on_gpu(g):
    b, s = boxes(100, g), unique_scores(100, g)
    b[7, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        ops.nms(b.cuda(), s.cuda(), 0.5)


def test_batched_nms_negative_coordinates(g):
    n = 5000
    b, s = boxes(n, g, lo=4, hi=60) - 500, unique_scores(n, g)
    idx = torch.randint(-3, 40, (n,), generator=g)
    got = ops.batched_nms(b.cuda(), s.cuda(), idx.cuda(), 0.5).cpu()
    assert torch.equal(got, ops.batched_nms(b, s, idx, 0.5))


def test_batched_nms_100k_matches_cpu(g):
    n = 100_000
    b, s, idx = boxes(n, g), unique_scores(n, g), torch.randint(0, 80, (n,), generator=g)
    assert torch.equal(
        ops.batched_nms(b.cuda(), s.cuda(), idx.cuda(), 0.7).cpu(), ops.batched_nms(b, s, idx, 0.7)
    )


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_matches_cpu(method, g):
    b, s = boxes(800, g, image=300), unique_scores(800, g)
    k1, s1 = ops.soft_nms(b.cuda(), s.cuda(), 0.3, 0.5, 0.01, method)
    k2, s2 = ops.soft_nms(b, s, 0.3, 0.5, 0.01, method)
    assert torch.equal(k1.cpu(), k2)
    torch.testing.assert_close(s1.cpu(), s2, rtol=1e-5, atol=1e-6)


def _rois(k, g, n, h, w):
    xy = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) - 10
    wh = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) * 0.6 + 0.5
    return torch.cat([torch.randint(0, n, (k, 1), generator=g).float(), xy, xy + wh], 1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sr", [0, 2])
def test_roi_align_forward_backward_match_torchvision(aligned, sr, g):
    x = torch.randn(2, 16, 40, 52, generator=g)
    r = _rois(300, g, 2, 160, 208)
    xc = x.cuda().requires_grad_()
    xt = x.cuda().requires_grad_()
    y = ops.roi_align(xc, r.cuda(), (7, 5), 0.25, sr, aligned)
    yt = tv.ops.roi_align(xt, r.cuda(), (7, 5), 0.25, sr, aligned)
    # torchvision's CUDA build contracts to FMA: sample positions near x = 50 differ by an ulp
    # (4e-6), values by that times the local gradient; we build with -fmad=false, as the CPU.
    torch.testing.assert_close(y, yt, rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(
        y.cpu(), ops.roi_align(x, r, (7, 5), 0.25, sr, aligned), rtol=1e-5, atol=1e-5
    )
    gout = torch.randn_like(y)
    y.backward(gout)
    yt.backward(gout)
    torch.testing.assert_close(xc.grad, xt.grad, rtol=1e-4, atol=5e-5)


def test_roi_align_backward_deterministic_mode_and_atomic_mode_agree(g):
    x = torch.randn(2, 32, 50, 60, device="cuda")
    r = _rois(2000, g, 2, 200, 240).cuda()  # many overlapping rois: atomics race
    # and both are right: checked against the CPU backward in float64 at the end
    gout = torch.randn(2000, 32, 7, 7, device="cuda")

    def grad():
        xx = x.clone().requires_grad_()
        ops.roi_align(xx, r, 7, 0.25, 2, True).backward(gout)
        return xx.grad

    atomic = grad()
    torch.use_deterministic_algorithms(True)
    try:
        first = grad()
        for _ in range(3):
            assert torch.equal(grad(), first)  # bit-identical
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(atomic, first, rtol=1e-4, atol=1e-5)
    xx = x.double().cpu().requires_grad_()
    ops.roi_align(xx, r.double().cpu(), 7, 0.25, 2, True).backward(gout.double().cpu())
    torch.testing.assert_close(first.double().cpu(), xx.grad, rtol=1e-4, atol=1e-4)


def test_roi_align_gradcheck_float64(g):
    x = torch.randn(1, 2, 8, 9, dtype=torch.float64, device="cuda", requires_grad=True)
    r = torch.tensor(
        [[0, 1.3, 0.7, 6.2, 7.9], [0, -2, 3, 4.5, 12]], dtype=torch.float64, device="cuda"
    )
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, r, 3, 1.0, 2, True), (x,))


_ra = sys.modules["fastdet.ops.roi_align"]  # the module (fastdet.ops.roi_align is the function)


def _roi_backward(backward, gout, r, scale, out, shape, sr, aligned):
    """The roi_align backward op with CUDA_BACKWARD = backward (restored after)."""
    old, _ra.CUDA_BACKWARD = _ra.CUDA_BACKWARD, backward
    try:
        return torch.ops.fastdet.roi_align_backward(gout, r, scale, *out, *shape, sr, aligned)
    finally:
        _ra.CUDA_BACKWARD = old


@pytest.fixture
def shared_backward(monkeypatch):
    monkeypatch.setattr(_ra, "CUDA_BACKWARD", "shared")


@pytest.mark.parametrize(
    "aligned,sr,out", [(True, 2, (7, 7)), (False, 0, (7, 5)), (True, 0, (5, 7)), (False, 2, (3, 6))]
)
def test_roi_align_shared_backward_matches_atomic_and_cpu(aligned, sr, out, g):
    # Footprints up to the whole 260 x 300 map: past the shared tables' 24 KiB (a square of about
    # 227 px in float32, 128 px in float64) a roi takes the per-tap fallback; wide float64 rois
    # need several channel passes per tile (tiles of 10 channels here: 12 makes a partial one).
    # _rois puts some partly outside the map; the last three rois span it all.
    shape = (2, 12, 260, 300)
    r = torch.cat(
        [
            _rois(300, g, 2, 1040, 1200),
            torch.tensor(
                [[0, -50, -40, 1300, 1100], [1, 0, 0, 1199, 1039], [1, 4, 900, 1196, 1100]]
            ),
        ]
    )
    gout = torch.randn(len(r), 12, *out, generator=g, dtype=torch.float64)
    for dt in (torch.float64, torch.float32):  # against the CPU in the same dtype: same taps
        cpu = torch.ops.fastdet.roi_align_backward(
            gout.to(dt), r.to(dt), 0.25, *out, *shape, sr, aligned
        )
        args = (gout.to(dt).cuda(), r.to(dt).cuda(), 0.25, out, shape, sr, aligned)
        shared = _roi_backward("shared", *args)
        assert shared.dtype == dt and shared.shape == shape
        tol = dict(rtol=1e-10, atol=1e-10) if dt == torch.float64 else dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(shared, _roi_backward("atomic", *args), **tol)
        torch.testing.assert_close(shared.cpu(), cpu, **tol)


@pytest.mark.parametrize("aligned,sr", [(True, 2), (False, 0), (False, 2), (True, 0)])
def test_roi_align_shared_backward_edges(aligned, sr, g):
    shape = (2, 3, 20, 24)
    sets = {
        "no rois": torch.zeros(0, 5),
        "outside the map": torch.tensor(
            [[0, -90, -90, -60, -50], [1, 200, 10, 260, 40], [1, 3, 30, 9, 90]]
        ),
        "malformed, degenerate, on the edges": torch.tensor(
            [
                [0, 10, 10, 5, 4],
                [1, 7, 7, 7, 7],
                [0, 3, 4, 3.5, 90],
                [1, 23, 19, 23, 19],
                [0, -1, -1, 0, 0],
                [1, 22.5, -3, 40, 30],
                [0, 0, 0, 24, 20],
            ]
        ),
    }
    for name, r in sets.items():
        gout = torch.randn(len(r), 3, 4, 3, generator=g, dtype=torch.float64)
        cpu = torch.ops.fastdet.roi_align_backward(gout, r.double(), 1.0, 4, 3, *shape, sr, aligned)
        args = (gout.cuda(), r.double().cuda(), 1.0, (4, 3), shape, sr, aligned)
        shared = _roi_backward("shared", *args)
        torch.testing.assert_close(
            shared, _roi_backward("atomic", *args), rtol=1e-12, atol=1e-12, msg=name
        )
        torch.testing.assert_close(shared.cpu(), cpu, rtol=1e-12, atol=1e-12, msg=name)
    # a batch index outside [0, N) (the GPU does not check): nothing flows back, as the atomic path
    r = torch.tensor([[2, 1, 1, 9, 9], [-1, 1, 1, 9, 9]], dtype=torch.float64, device="cuda")
    gout = torch.randn(2, 3, 4, 3, dtype=torch.float64, device="cuda")
    assert not _roi_backward("shared", gout, r, 1.0, (4, 3), shape, sr, aligned).any()


def test_roi_align_shared_backward_half(g, monkeypatch):
    for dt in (torch.float16, torch.bfloat16):
        x = torch.randn(2, 8, 40, 52, generator=g).cuda().to(dt)
        r = _rois(200, g, 2, 160, 208).cuda().to(dt)
        gout = torch.randn(200, 8, 7, 7, generator=g).cuda().to(dt)

        def grad(backward, x=x, r=r, gout=gout):
            monkeypatch.setattr(_ra, "CUDA_BACKWARD", backward)
            xx = x.clone().requires_grad_()
            ops.roi_align(xx, r, 7, 0.25, 2, True).backward(gout)
            return xx.grad

        shared, atomic = grad("shared"), grad("atomic")
        assert shared.dtype == dt
        # both sum in float32 and round once: at most an ulp of dt apart
        tol = dict(rtol=2e-3, atol=1e-3) if dt == torch.float16 else dict(rtol=1.6e-2, atol=1e-2)
        torch.testing.assert_close(shared, atomic, **tol)


def test_roi_align_shared_gradcheck_float64(shared_backward):
    x = torch.randn(1, 2, 8, 9, dtype=torch.float64, device="cuda", requires_grad=True)
    r = torch.tensor(
        [[0, 1.3, 0.7, 6.2, 7.9], [0, -2, 3, 4.5, 12], [0, 5, 5, 5.2, 5.1]],
        dtype=torch.float64,
        device="cuda",
    )
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, r, 3, 1.0, 2, True), (x,))
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, r, (2, 3), 1.0, 0, False), (x,))


def test_roi_align_deterministic_wins_over_shared(g, monkeypatch):
    x = torch.randn(2, 16, 50, 60, device="cuda")
    r = _rois(1000, g, 2, 200, 240).cuda()
    gout = torch.randn(1000, 16, 7, 7, device="cuda")

    def grad(backward):
        monkeypatch.setattr(_ra, "CUDA_BACKWARD", backward)
        xx = x.clone().requires_grad_()
        ops.roi_align(xx, r, 7, 0.25, 2, True).backward(gout)
        return xx.grad

    monkeypatch.setattr(_ra, "DETERMINISTIC_CUDA_BACKWARD", True)
    first = grad("shared")
    assert torch.equal(grad("shared"), first)
    assert torch.equal(grad("atomic"), first)  # the same fixed-point kernel
    monkeypatch.setattr(_ra, "DETERMINISTIC_CUDA_BACKWARD", False)
    with pytest.raises(ValueError, match="CUDA_BACKWARD must be one of"):
        grad("fast")


def test_anchors_and_box_coder_on_gpu(g):
    class Images:
        tensors = torch.zeros(2, 3, 800, 1344, device="cuda")
        image_sizes = [(800, 1344)] * 2

    feats = [torch.zeros(2, 1, 800 // s, 1344 // s, device="cuda") for s in (4, 8, 16, 32, 64)]
    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    ours = ops.AnchorGenerator(sizes, ratios)(Images, feats)
    theirs = AnchorGenerator(sizes, ratios)(ImageList(Images.tensors, Images.image_sizes), feats)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    from torchvision.models.detection._utils import BoxCoder

    a, gt = boxes(5000, g).cuda(), boxes(5000, g).cuda()
    codes = torch.randn(5000, 8, generator=g).cuda()
    ours, theirs = ops.BoxCoder((10, 10, 5, 5)), BoxCoder((10, 10, 5, 5))
    torch.testing.assert_close(
        ours.encode_single(gt, a), theirs.encode_single(gt, a), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        ours.decode_single(codes, a), theirs.decode_single(codes, a), rtol=1e-5, atol=1e-4
    )
    b = boxes(1000, g).cuda() - 100
    assert torch.equal(
        ops.clip_boxes_to_image(b, (500, 600)), tv.ops.clip_boxes_to_image(b, (500, 600))
    )
    assert torch.equal(ops.remove_small_boxes(b, 40.0), tv.ops.remove_small_boxes(b, 40.0))


def test_non_default_stream(g):
    a, b = boxes(3000, g).cuda(), boxes(2000, g).cuda()
    want = ops.box_iou(a, b)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = ops.box_iou(a, b)
        keep = ops.nms(a, torch.rand(3000, device="cuda"), 0.5)
    s.synchronize()
    assert torch.equal(got, want) and keep.numel() > 0


def test_cuda_graph_capture_box_iou_and_roi_align(g):
    a, b = boxes(1000, g).cuda(), boxes(900, g).cuda()
    x = torch.randn(1, 8, 30, 30, device="cuda")
    r = _rois(50, g, 1, 120, 120).cuda()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the capture
        ops.box_iou(a, b)
        ops.roi_align(x, r, 7, 0.25, 2, True)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        iou = ops.box_iou(a, b)
        pooled = ops.roi_align(x, r, 7, 0.25, 2, True)
    a.copy_(boxes(1000, g).cuda())
    x.copy_(torch.randn(1, 8, 30, 30, device="cuda"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(iou, ops.box_iou(a, b))
    assert torch.equal(pooled, ops.roi_align(x, r, 7, 0.25, 2, True))


def test_cupy_in_cupy_out(g):
    cp = pytest.importorskip("cupy")
    a, b = boxes(500, g), boxes(400, g)
    s = unique_scores(500, g)
    got = ops.box_iou(cp.asarray(a.numpy()), cp.asarray(b.numpy()))
    assert isinstance(got, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(got), ops.box_iou(a, b).numpy(), rtol=1e-6, atol=1e-7)
    keep = ops.nms(cp.asarray(a.numpy()), cp.asarray(s.numpy()), 0.5)
    assert isinstance(keep, cp.ndarray) and keep.dtype == cp.int64
    np.testing.assert_array_equal(cp.asnumpy(keep), ops.nms(a, s, 0.5).numpy())
    x = cp.asarray(np.random.default_rng(0).standard_normal((1, 4, 20, 20), dtype=np.float32))
    r = cp.asarray(np.array([[0, 1, 1, 15, 12]], dtype=np.float32))
    np.testing.assert_allclose(
        cp.asnumpy(ops.roi_align(x, r, 5, 1.0, 2, True)),
        ops.roi_align(
            torch.from_numpy(cp.asnumpy(x)), torch.from_numpy(cp.asnumpy(r)), 5, 1.0, 2, True
        ).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_other_device_than_current():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    a = boxes(100, torch.Generator().manual_seed(0)).to("cuda:1")
    with torch.cuda.device(0):
        got = ops.box_iou(a, a)
    assert got.device == a.device
    torch.testing.assert_close(got.cpu(), ops.box_iou(a.cpu(), a.cpu()))
