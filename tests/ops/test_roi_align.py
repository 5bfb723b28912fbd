"""roi_align against torchvision.ops.roi_align and a direct reference, forward and backward."""

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.ops import RoIAlign

tv = pytest.importorskip("torchvision")


def rois(rng, k, n, h, w, scale=1.0):
    """[k, 5] rois in input-image coordinates, some partly or wholly outside the map."""
    xy = rng.uniform(-0.2, 1.0, (k, 2)) * np.array([w, h]) / scale
    wh = rng.uniform(0.05, 0.7, (k, 2)) * np.array([w, h]) / scale
    idx = rng.integers(0, n, (k, 1))
    return torch.from_numpy(np.concatenate([idx, xy, xy + wh], 1).astype(np.float32))


def features(rng, shape, dtype=torch.float32):
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("output_size", [7, (3, 5)])
def test_forward_matches_torchvision(rng, aligned, sampling_ratio, output_size):
    x = features(rng, (2, 6, 19, 23))
    r = rois(rng, 40, 2, 19, 23, scale=0.25)
    got = ops.roi_align(x, r, output_size, 0.25, sampling_ratio, aligned)
    want = tv.ops.roi_align(x, r, output_size, 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_backward_matches_torchvision(rng, aligned, sampling_ratio):
    x = features(rng, (2, 5, 17, 21))
    r = rois(rng, 60, 2, 17, 21, scale=0.5)
    g = torch.from_numpy(rng.standard_normal((60, 5, 4, 6)).astype(np.float32))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ops.roi_align(a, r, (4, 6), 0.5, sampling_ratio, aligned).backward(g)
    tv.ops.roi_align(b, r, (4, 6), 0.5, sampling_ratio, aligned).backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_float64_and_benchmark_shape(rng):
    x = features(rng, (1, 64, 38, 50), torch.float64)
    r = rois(rng, 128, 1, 38, 50, scale=1 / 16).double()
    torch.testing.assert_close(
        ops.roi_align(x, r, 7, 1 / 16, 2, True),
        tv.ops.roi_align(x, r, 7, 1 / 16, 2, True),
        rtol=1e-12,
        atol=1e-12,
    )


def test_gradcheck_float64(rng):
    x = features(rng, (2, 3, 9, 11), torch.float64).requires_grad_()
    r = rois(rng, 5, 2, 9, 11).double()
    for aligned in (False, True):
        assert torch.autograd.gradcheck(
            lambda t, a=aligned: ops.roi_align(t, r, (2, 3), 1.0, 2, a), (x,)
        )


def test_backward_is_bit_identical_and_thread_count_free(rng):
    import fastdet

    x = features(rng, (2, 32, 30, 40))
    r = rois(rng, 400, 2, 30, 40, scale=0.25)  # heavily overlapping rois
    g = torch.from_numpy(rng.standard_normal((400, 32, 7, 7)).astype(np.float32))

    def grad():
        t = x.clone().requires_grad_()
        ops.roi_align(t, r, 7, 0.25, 2, True).backward(g)
        return t.grad

    first = grad()
    assert torch.equal(grad(), first)
    threads = fastdet.get_num_threads()
    try:
        fastdet.set_num_threads(1)
        assert torch.equal(grad(), first)
    finally:
        fastdet.set_num_threads(threads)


def test_list_of_boxes_equals_rois_tensor(rng):
    x = features(rng, (3, 4, 16, 16))
    per_image = [
        torch.from_numpy(rng.uniform(0, 60, (k, 4)).astype(np.float32))
        .sort(1)
        .values[:, [0, 2, 1, 3]]
        for k in (3, 0, 5)
    ]
    per_image = [
        torch.stack([b[:, 0], b[:, 2], b[:, 1], b[:, 3]], 1) for b in per_image
    ]  # x1<x2, y1<y2
    got = ops.roi_align(x, per_image, 5, 0.25, 2, True)
    assert torch.equal(got, tv.ops.roi_align(x, per_image, 5, 0.25, 2, True)) or torch.allclose(
        got, tv.ops.roi_align(x, per_image, 5, 0.25, 2, True), rtol=1e-5, atol=1e-6
    )


def test_numpy_in_numpy_out(rng):
    x = features(rng, (1, 3, 10, 12))
    r = rois(rng, 7, 1, 10, 12)
    got = ops.roi_align(x.numpy(), r.numpy(), 3, 1.0, 2, False)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (7, 3, 3, 3)
    np.testing.assert_allclose(
        got, tv.ops.roi_align(x, r, 3, 1.0, 2, False).numpy(), rtol=1e-5, atol=1e-6
    )


def test_half_precision_computes_in_float32(rng):
    x = features(rng, (1, 4, 12, 12))
    r = rois(rng, 6, 1, 12, 12)
    for dt in (torch.float16, torch.bfloat16):
        got = ops.roi_align(x.to(dt), r.to(dt), 3, 1.0, 2, True)
        assert got.dtype == dt
        want = ops.roi_align(x.to(dt).float(), r.to(dt).float(), 3, 1.0, 2, True).to(dt)
        assert torch.equal(got, want)


def test_empty_and_degenerate(rng):
    x = features(rng, (1, 4, 8, 8))
    out = ops.roi_align(x, torch.zeros(0, 5), 3, 1.0, 2, True)
    assert out.shape == (0, 4, 3, 3)
    zero = torch.tensor([[0, 3.0, 3.0, 3.0, 3.0], [0, 100.0, 100.0, 120.0, 130.0]])
    torch.testing.assert_close(
        ops.roi_align(x, zero, 3, 1.0, 2, True), tv.ops.roi_align(x, zero, 3, 1.0, 2, True)
    )


def test_non_contiguous_input(rng):
    x = features(rng, (1, 6, 14, 10)).transpose(2, 3)  # [1, 6, 10, 14] view
    r = rois(rng, 9, 1, 10, 14)
    assert not x.is_contiguous()
    torch.testing.assert_close(
        ops.roi_align(x, r, 4, 1.0, 2, True), tv.ops.roi_align(x.contiguous(), r, 4, 1.0, 2, True)
    )


def test_module_matches_function(rng):
    x = features(rng, (1, 2, 9, 9))
    r = rois(rng, 4, 1, 9, 9)
    m = RoIAlign((2, 2), 1.0, 2, aligned=True)
    assert torch.equal(m(x, r), ops.roi_align(x, r, (2, 2), 1.0, 2, True))
    assert "output_size=(2, 2)" in repr(m)


def test_errors_name_the_argument(rng):
    x = features(rng, (2, 2, 8, 8))
    good = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match=r"input must have shape \[N, C, H, W\]"):
        ops.roi_align(x[0], good, 2)
    with pytest.raises(ValueError, match=r"boxes must have shape \[K, 5\]"):
        ops.roi_align(x, good[:, 1:], 2)
    with pytest.raises(TypeError, match="input must be float16, bfloat16, float32 or float64"):
        ops.roi_align(x.int(), good, 2)
    with pytest.raises(
        ValueError, match=r"boxes\[:, 0\] must hold integer batch indices in \[0, 2\)"
    ):
        ops.roi_align(x, torch.tensor([[2, 1.0, 1.0, 5.0, 5.0]]), 2)
    with pytest.raises(ValueError, match="boxes contains NaN or inf"):
        ops.roi_align(x, torch.tensor([[0, float("nan"), 1.0, 5.0, 5.0]]), 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        ops.roi_align(x, good, 0)
    with pytest.raises(TypeError, match="boxes is a numpy array but input is a torch array"):
        ops.roi_align(x, good.numpy(), 2)


def test_torch_compile_fullgraph(rng):
    x = features(rng, (1, 3, 12, 12)).requires_grad_()
    r = rois(rng, 5, 1, 12, 12)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(t, b):
        return ops.roi_align(t, b, 3, 1.0, 2, True).sum()

    y = f(x, r)
    y.backward()
    x2 = x.detach().clone().requires_grad_()
    ops.roi_align(x2, r, 3, 1.0, 2, True).sum().backward()
    torch.testing.assert_close(y, ops.roi_align(x2, r, 3, 1.0, 2, True).sum())
    torch.testing.assert_close(x.grad, x2.grad)
