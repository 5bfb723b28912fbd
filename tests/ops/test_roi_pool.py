"""roi_pool / RoIPool against torchvision.ops.roi_pool and the Python-loop reference, forward and
backward: rounding of the RoI corners and bin edges, empty bins, ties, dtypes, custom ops."""

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.ops import RoIPool
from fastdet.ops import _reference as reference

tv = pytest.importorskip("torchvision")


def rois(rng, k, n, h, w, scale=1.0, dtype=torch.float32):
    """[k, 5] rois in image coordinates: some partly or wholly outside the map, some inverted,
    some with corners exactly on .5 after scaling (the rounding's ties)."""
    xy = rng.uniform(-0.3, 1.1, (k, 2)) * np.array([w, h]) / scale
    wh = rng.uniform(-0.1, 0.8, (k, 2)) * np.array([w, h]) / scale
    r = np.concatenate([rng.integers(0, n, (k, 1)), xy, xy + wh], 1)
    r[: k // 4, 1:] = (np.round(r[: k // 4, 1:] * scale * 2) + 1) / 2 / scale  # x.5 after scaling
    return torch.from_numpy(r).to(dtype)


def features(rng, shape, dtype=torch.float32):
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype)


CASES = [((7, 7), 1.0), ((3, 5), 0.5), (2, 0.25), ((1, 1), 1 / 16), ((6, 4), 0.37)]


@pytest.mark.parametrize("output_size,scale", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_forward_matches_torchvision_and_reference(output_size, scale, dtype, rng, device):
    x = features(rng, (2, 3, 13, 17), dtype)
    r = rois(rng, 40, 2, 13, 17, scale, dtype)
    got = ops.roi_pool(x.to(device), r.to(device), output_size, scale)
    want = tv.ops.roi_pool(x, r, output_size, scale)
    assert got.dtype == dtype and got.shape == want.shape
    assert torch.equal(got.cpu(), want)
    size = (output_size, output_size) if isinstance(output_size, int) else output_size
    np.testing.assert_array_equal(got.cpu().numpy(), reference.roi_pool(x, r, size, scale))


@pytest.mark.parametrize("output_size,scale", CASES)
def test_backward_matches_torchvision(output_size, scale, rng, device):
    x = features(rng, (2, 3, 13, 17), torch.float64)
    r = rois(rng, 40, 2, 13, 17, scale, torch.float64)
    grads = []
    for impl, dev in [(ops, device), (tv.ops, "cpu")]:
        xx = x.to(dev).requires_grad_()
        out = impl.roi_pool(xx, r.to(dev), output_size, scale)
        g = torch.from_numpy(rng.standard_normal(tuple(out.shape))) if not grads else grads[0][1]
        out.backward(g.to(dev))
        grads.append((xx.grad.cpu(), g))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)


def test_gradcheck_float64(rng, device):
    x = features(rng, (2, 3, 9, 11), torch.float64).to(device).requires_grad_()
    r = rois(rng, 8, 2, 9, 11, 0.5, torch.float64).to(device)
    assert torch.autograd.gradcheck(lambda z: ops.roi_pool(z, r, (3, 2), 0.5), (x,))


def test_cpu_backward_is_bit_identical_for_any_thread_count(rng):
    import fastdet

    x = features(rng, (2, 16, 20, 20)).requires_grad_()
    r = rois(rng, 300, 2, 20, 20)
    g = features(rng, (300, 16, 3, 3))
    before = fastdet.get_num_threads()
    out = []
    try:
        for threads in (1, 2, before):
            fastdet.set_num_threads(threads)
            x.grad = None
            ops.roi_pool(x, r, 3).backward(g)
            out.append(x.grad.clone())
    finally:
        fastdet.set_num_threads(before)
    assert all(torch.equal(o, out[0]) for o in out)


def test_ties_send_the_gradient_to_the_first_maximum():
    x = torch.zeros(1, 1, 4, 4, requires_grad=True)
    r = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    out = ops.roi_pool(x, r, 1)  # one bin over the whole map, every value tied at 0
    out.backward(torch.ones_like(out))
    want = torch.zeros(1, 1, 4, 4)
    want[0, 0, 0, 0] = 1
    assert torch.equal(x.grad, want)


def test_empty_bins_and_rois_outside_give_zero():
    x = torch.arange(16.0).view(1, 1, 4, 4) + 1
    r = torch.tensor([[0, 10.0, 10.0, 20.0, 20.0], [0, -9.0, -9.0, -5.0, -5.0]])
    assert torch.equal(ops.roi_pool(x, r, 2), torch.zeros(2, 1, 2, 2))
    assert torch.equal(ops.roi_pool(x, r, 2), tv.ops.roi_pool(x, r, 2))
    # a malformed (inverted) roi is 1x1 at its rounded start
    inv = torch.tensor([[0, 2.4, 1.6, 0.0, 0.0]])
    assert ops.roi_pool(x, inv, 1).item() == x[0, 0, 2, 2].item()


def test_corners_round_half_away_from_zero():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    r = torch.tensor([[0, 0.5, 0.5, 2.5, 2.5], [0, 1.5, 1.5, 3.5, 3.5]])
    got = ops.roi_pool(x, r, 1)
    assert got.flatten().tolist() == [x[0, 0, 3, 3].item(), x[0, 0, 4, 4].item()]
    assert torch.equal(got, tv.ops.roi_pool(x, r, 1))


def test_half_types_compute_in_float32(rng):
    x = features(rng, (2, 3, 10, 12))
    r = rois(rng, 12, 2, 10, 12)
    for dtype in (torch.float16, torch.bfloat16):
        got = ops.roi_pool(x.to(dtype), r.to(dtype), (2, 3))
        assert got.dtype == dtype
        want = ops.roi_pool(x.to(dtype).float(), r.to(dtype).float(), (2, 3)).to(dtype)
        assert torch.equal(got, want)


def test_list_of_boxes_numpy_and_module(rng):
    x = features(rng, (2, 3, 10, 12))
    r = rois(rng, 10, 2, 10, 12)
    per_image = [r[r[:, 0] == i, 1:] for i in range(2)]
    ordered = torch.cat([r[r[:, 0] == i] for i in range(2)])
    want = ops.roi_pool(x, ordered, 3, 0.5)
    assert torch.equal(ops.roi_pool(x, per_image, 3, 0.5), want)
    got = ops.roi_pool(x.numpy(), ordered.numpy(), 3, 0.5)
    assert isinstance(got, np.ndarray) and np.array_equal(got, want.numpy())
    m = RoIPool((3, 3), 0.5)
    assert torch.equal(m(x, ordered), want)
    assert repr(m) == "RoIPool(output_size=(3, 3), spatial_scale=0.5)"
    assert repr(tv.ops.RoIPool((3, 3), 0.5)) == repr(m)


def test_non_contiguous_input(rng):
    x = features(rng, (2, 3, 10, 12))
    r = rois(rng, 10, 2, 10, 12)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert torch.equal(ops.roi_pool(xt, r, 3), ops.roi_pool(x, r, 3))


def test_errors():
    a = torch.linspace(1, 64, 64).reshape(1, 1, 8, 8)
    with pytest.raises(AssertionError, match=r"boxes must have shape \[K, 5\]"):
        ops.roi_pool(a, torch.tensor([[0, 0, 3, 3]], dtype=a.dtype), output_size=(2, 2))
    with pytest.raises(ValueError, match=r"boxes\[0\] must have shape \[Ki, 4\]"):
        ops.roi_pool(a, [torch.tensor([[0, 0, 3]], dtype=a.dtype)], output_size=(2, 2))
    with pytest.raises(RuntimeError, match=r"input must have shape \[N, C, H, W\]"):
        ops.roi_pool(a[0], torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match=r"boxes\[:, 0\] must hold integer batch indices"):
        ops.roi_pool(a, torch.tensor([[1, 0, 0, 3, 3.0]]), 2)
    with pytest.raises(ValueError, match="boxes contains NaN or inf"):
        ops.roi_pool(a, torch.tensor([[0, 0, float("nan"), 3, 3.0]]), 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        ops.roi_pool(a, torch.zeros(1, 5), (0, 2))
    with pytest.raises(TypeError, match="input must be float16"):
        ops.roi_pool(a.int(), torch.zeros(1, 5), 2)


def test_empty_inputs(rng):
    x = features(rng, (2, 3, 10, 12)).requires_grad_()
    out = ops.roi_pool(x, torch.zeros(0, 5), 3)
    assert out.shape == (0, 3, 3, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert ops.roi_pool(x[:, :0], rois(rng, 4, 2, 10, 12), 2).shape == (4, 0, 2, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_custom_ops_pass_opcheck(rng, dtype, device):
    x = features(rng, (2, 3, 10, 12), dtype).to(device)
    r = rois(rng, 6, 2, 10, 12, 0.5, dtype).to(device)
    strided = x.transpose(2, 3).contiguous().transpose(2, 3)
    args = (0.5, 3, 2)
    for inputs in [(x, r), (x.clone().requires_grad_(), r), (x, r[:0]), (strided, r)]:
        torch.library.opcheck(torch.ops.fastdet.roi_pool, (*inputs, *args))
    out, argmax = torch.ops.fastdet.roi_pool(x, r, *args)
    assert argmax.dtype == torch.int32 and out.dtype == dtype
    g = torch.from_numpy(rng.standard_normal((6, 3, 3, 2))).to(device, dtype)
    for grad, boxes, am in [
        (g, r, argmax),
        (g.transpose(2, 3).contiguous().transpose(2, 3), r, argmax),
    ]:
        torch.library.opcheck(torch.ops.fastdet.roi_pool_backward, (grad, boxes, am, 2, 3, 10, 12))


def test_torch_compile_fullgraph(rng):
    x = features(rng, (1, 3, 12, 12)).requires_grad_()
    r = rois(rng, 5, 1, 12, 12)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(t, b):
        return ops.roi_pool(t, b, 3, 0.5).sum()

    y = f(x, r)
    y.backward()
    x2 = x.detach().clone().requires_grad_()
    ops.roi_pool(x2, r, 3, 0.5).sum().backward()
    assert torch.equal(x.grad, x2.grad)


def test_module_is_a_torch_fx_leaf(rng):
    m = RoIPool(3, 0.5)
    traced = torch.fx.symbolic_trace(m)
    assert [n.target for n in traced.graph.nodes if n.op == "call_function"] == [ops.roi_pool]
    x, r = features(rng, (2, 3, 10, 12)), rois(rng, 6, 2, 10, 12)
    assert torch.equal(traced(x, r), m(x, r))


# --- GPU --------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_large_matches_cpu(rng):
    x = features(rng, (2, 64, 50, 68))
    r = rois(rng, 1000, 2, 800, 1088, 1 / 16)
    xc = x.clone().requires_grad_()
    xg = x.cuda().requires_grad_()
    a, b = ops.roi_pool(xc, r, 7, 1 / 16), ops.roi_pool(xg, r.cuda(), 7, 1 / 16)
    assert torch.equal(a, b.cpu())
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g.cuda())
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_gpu_batch_index_outside_gives_zeros_and_deterministic_mode_raises(rng):
    x = features(rng, (1, 2, 6, 6)).cuda().requires_grad_()
    r = torch.tensor([[3, 0.0, 0.0, 4.0, 4.0], [0, 0.0, 0.0, 4.0, 4.0]]).cuda()
    out = ops.roi_pool(x, r, 2)
    assert (out[0] == 0).all()
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="not deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


# --- found by tests/ops/test_fuzz.py ----------------------------------------------------------


@pytest.mark.parametrize(
    "scale,error",
    [
        (None, TypeError),
        ("1", TypeError),
        (True, TypeError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (0.0, ValueError),
        (-0.5, ValueError),
    ],  # fmt: skip
)
def test_bad_spatial_scale_raises_naming_it(scale, error):
    # None was float()'s bare TypeError; NaN gave zeros
    a = torch.linspace(1, 64, 64).reshape(1, 1, 8, 8)
    r = torch.tensor([[0, 0, 0, 3, 3.0]])
    with pytest.raises(error, match="spatial_scale"):
        ops.roi_pool(a, r, 2, scale)
    with pytest.raises(error, match="spatial_scale"):
        RoIPool(2, scale)(a.numpy(), r.numpy())


def test_output_beyond_the_cap_raises(monkeypatch):
    monkeypatch.setenv("FASTDET_MAX_OUTPUT_BYTES", "1000")
    a = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"roi_pool: the output of shape \(10, 4, 3, 3\)"):
        ops.roi_pool(a, torch.zeros(10, 5), 3)
