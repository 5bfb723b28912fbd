"""CUDA tests that are no one op's: the build, streams, graph capture, cupy arrays, several
devices, and constructed edge cases run through every op against the CPU kernels. Each op's own
GPU tests sit in its file (tests/ops/test_<op>.py). Skipped without a GPU."""

import numpy as np
import pytest
import torch

import fastdet
from fastdet import ops

pytestmark = pytest.mark.gpu


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def test_build_has_cuda():
    info = fastdet.build_info()
    assert info["cuda_compiled"] and "cuda" in info["backends"]
    assert info["gpus"] and info["cuda_archs"]


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


def test_empty_noncontiguous_half_and_mixed_devices(make, rng):
    e = torch.zeros(0, 4, device="cuda")
    assert ops.box_iou(e, t(make.boxes(3)).cuda()).shape == (0, 3)
    assert ops.batched_nms(e, e[:, 0], e[:, 0].long(), 0.5).shape == (0,)
    assert ops.soft_nms(e, e[:, 0])[0].shape == (0,)
    wide = t(make.boxes(400)).cuda().repeat(1, 2)[:, 2:6]  # non-contiguous view
    s = t(make.scores(400)).cuda()
    assert not wide.is_contiguous()
    assert torch.equal(ops.nms(wide, s, 0.5), ops.nms(wide.contiguous(), s, 0.5))
    for dt in (torch.float16, torch.bfloat16):
        got = ops.nms(wide.to(dt), s.to(dt), 0.5)
        assert torch.equal(got.cpu(), ops.nms(wide.to(dt).cpu(), s.to(dt).cpu(), 0.5))
        x = t(rng.standard_normal((1, 4, 20, 20), dtype=np.float32)).cuda().to(dt)
        r = torch.tensor([[0, 1, 1, 15, 12]], device="cuda", dtype=dt)
        assert ops.roi_align(x, r, 5, 1.0, 2, True).dtype == dt
    with pytest.raises(ValueError, match="scores is on cpu but boxes is on cuda:0"):
        ops.nms(wide, s.cpu(), 0.5)
    with pytest.raises(ValueError, match="on cuda:0 but .* on cpu|on cpu but .* on cuda:0"):
        ops.box_iou(wide.cpu(), wide)


def test_non_default_stream(make):
    a, b = t(make.boxes(3000)).cuda(), t(make.boxes(2000)).cuda()
    scores = t(make.scores(3000)).cuda()
    want = ops.box_iou(a, b)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = ops.box_iou(a, b)
        keep = ops.nms(a, scores, 0.5)
    s.synchronize()
    assert torch.equal(got, want) and keep.numel() > 0


def image_rois(rng, k, n, h, w):
    """[k, 5] rois in an h x w image, batch indices in [0, n), some partly outside."""
    xy = rng.uniform(0, 1, (k, 2)) * np.array([w, h]) - 10
    wh = rng.uniform(0, 1, (k, 2)) * np.array([w, h]) * 0.6 + 0.5
    idx = rng.integers(0, n, (k, 1))
    return t(np.concatenate([idx, xy, xy + wh], 1).astype(np.float32))


def test_cuda_graph_capture_box_iou_and_roi_align(make, rng):
    a, b = t(make.boxes(1000)).cuda(), t(make.boxes(900)).cuda()
    x = t(rng.standard_normal((1, 8, 30, 30), dtype=np.float32)).cuda()
    r = image_rois(rng, 50, 1, 120, 120).cuda()
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
    a.copy_(t(make.boxes(1000)).cuda())
    x.copy_(t(rng.standard_normal((1, 8, 30, 30), dtype=np.float32)).cuda())
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(iou, ops.box_iou(a, b))
    assert torch.equal(pooled, ops.roi_align(x, r, 7, 0.25, 2, True))


def test_cupy_in_cupy_out(make, rng):
    cp = pytest.importorskip("cupy")
    a, b = t(make.boxes(500)), t(make.boxes(400))
    s = t(make.scores(500))
    got = ops.box_iou(cp.asarray(a.numpy()), cp.asarray(b.numpy()))
    assert isinstance(got, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(got), ops.box_iou(a, b).numpy(), rtol=1e-6, atol=1e-7)
    keep = ops.nms(cp.asarray(a.numpy()), cp.asarray(s.numpy()), 0.5)
    assert isinstance(keep, cp.ndarray) and keep.dtype == cp.int64
    np.testing.assert_array_equal(cp.asnumpy(keep), ops.nms(a, s, 0.5).numpy())
    x = cp.asarray(rng.standard_normal((1, 4, 20, 20), dtype=np.float32))
    r = cp.asarray(np.array([[0, 1, 1, 15, 12]], dtype=np.float32))
    np.testing.assert_allclose(
        cp.asnumpy(ops.roi_align(x, r, 5, 1.0, 2, True)),
        ops.roi_align(
            torch.from_numpy(cp.asnumpy(x)), torch.from_numpy(cp.asnumpy(r)), 5, 1.0, 2, True
        ).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_other_device_than_current(make):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    a = t(make.boxes(100)).to("cuda:1")
    with torch.cuda.device(0):
        got = ops.box_iou(a, a)
    assert got.device == a.device
    torch.testing.assert_close(got.cpu(), ops.box_iou(a.cpu(), a.cpu()))


def test_cupy_in_cupy_out_for_the_drop_in_ops(make, rng):
    cp = pytest.importorskip("cupy")
    a = t(make.boxes(60)).view(3, 20, 4)
    b = t(make.boxes(7))
    for name in ("distance_box_iou", "complete_box_iou"):
        got = getattr(ops, name)(cp.asarray(a.numpy()), cp.asarray(b.numpy()))
        assert isinstance(got, cp.ndarray) and got.shape == (3, 20, 7)
        want = getattr(ops, name)(a.cuda(), b.cuda())
        np.testing.assert_array_equal(cp.asnumpy(got), want.cpu().numpy())
    ints = cp.asarray(np.round(make.boxes(9)).astype(np.int32))
    assert ops.box_iou(ints, ints).dtype == np.float32 and ops.box_area(ints).dtype == np.int32
    conv = ops.box_convert(cp.asarray(b.numpy()), "xyxy", "cxcywh")
    assert isinstance(conv, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(conv), ops.box_convert(b, "xyxy", "cxcywh").numpy())
    masks = rng.random((4, 9, 11)) < 0.05
    got = ops.masks_to_boxes(cp.asarray(masks))
    assert isinstance(got, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(got), ops.masks_to_boxes(masks))
    x = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    r = np.array([[0, 1.0, 2.0, 8.0, 9.0], [1, 0.0, 0.0, 11.0, 9.0]], np.float32)
    got = ops.roi_pool(cp.asarray(x), cp.asarray(r), 3)
    assert isinstance(got, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(got), ops.roi_pool(x, r, 3))
    loss = ops.complete_box_iou_loss(cp.asarray(b.numpy()), cp.asarray(b.numpy()[::-1].copy()))
    assert isinstance(loss, cp.ndarray) and loss.shape == (7,)


def test_drop_in_ops_capture_in_a_cuda_graph(make, rng):
    a = t(make.boxes(600)).view(2, 300, 4).cuda()
    b = t(make.boxes(100)).cuda()
    x = t(rng.standard_normal((2, 8, 30, 30), dtype=np.float32)).cuda()
    r = image_rois(rng, 50, 2, 120, 120).cuda()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the capture
        ops.complete_box_iou(a, b)
        ops.roi_pool(x, r, 7, 0.25)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ciou = ops.complete_box_iou(a, b)
        pooled = ops.roi_pool(x, r, 7, 0.25)
    a.copy_(t(make.boxes(600)).view(2, 300, 4).cuda())
    x.copy_(t(rng.standard_normal((2, 8, 30, 30), dtype=np.float32)).cuda())
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(ciou, ops.complete_box_iou(a, b))
    assert torch.equal(pooled, ops.roi_pool(x, r, 7, 0.25))
