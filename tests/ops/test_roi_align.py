"""roi_align against torchvision.ops.roi_align and a direct reference, forward and backward;
on the GPU also its three backwards (shared, atomic, deterministic) against each other."""

import sys

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.ops import RoIAlign

tv = pytest.importorskip("torchvision")
_ra = sys.modules["fastdet.ops.roi_align"]  # the module (fastdet.ops.roi_align is the function)


def rois(rng, k, n, h, w, scale=1.0):
    """[k, 5] rois in input-image coordinates, some partly or wholly outside the map."""
    xy = rng.uniform(-0.2, 1.0, (k, 2)) * np.array([w, h]) / scale
    wh = rng.uniform(0.05, 0.7, (k, 2)) * np.array([w, h]) / scale
    idx = rng.integers(0, n, (k, 1))
    return torch.from_numpy(np.concatenate([idx, xy, xy + wh], 1).astype(np.float32))


def features(rng, shape, dtype=torch.float32):
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype)


def image_rois(rng, k, n, h, w):
    """[k, 5] rois in an h x w image (not scaled to a map), batch indices in [0, n); some reach
    10 px past the top-left edges and up to 0.6 of the image past the others."""
    xy = rng.uniform(0, 1, (k, 2)) * np.array([w, h]) - 10
    wh = rng.uniform(0, 1, (k, 2)) * np.array([w, h]) * 0.6 + 0.5
    idx = rng.integers(0, n, (k, 1))
    return torch.from_numpy(np.concatenate([idx, xy, xy + wh], 1).astype(np.float32))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("output_size", [7, (3, 5)])
def test_forward_matches_torchvision(rng, aligned, sampling_ratio, output_size):
    x = features(rng, (2, 6, 19, 23))
    r = rois(rng, 40, 2, 19, 23, scale=0.25)
    got = ops.roi_align(x, r, output_size, 0.25, sampling_ratio, aligned)
    want = tv.ops.roi_align(x, r, output_size, 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# Per device: features, rois, output size and scale; tolerances against torchvision, whose CUDA
# build contracts to FMA: sample positions near x = 50 differ by an ulp (4e-6), values by that
# times the local gradient (we build with -fmad=false, as the CPU).
BACKWARD_CASES = {
    "cpu": dict(
        shape=(2, 5, 17, 21),
        rois=lambda rng: rois(rng, 60, 2, 17, 21, scale=0.5),
        output_size=(4, 6),
        scale=0.5,
        forward=dict(rtol=1e-5, atol=1e-6),
        backward=dict(rtol=1e-5, atol=1e-5),
    ),
    "cuda": dict(
        shape=(2, 16, 40, 52),
        rois=lambda rng: image_rois(rng, 300, 2, 160, 208),
        output_size=(7, 5),
        scale=0.25,
        forward=dict(rtol=1e-5, atol=5e-5),
        backward=dict(rtol=1e-4, atol=5e-5),
    ),
}


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_forward_and_backward_match_torchvision(rng, aligned, sampling_ratio, device):
    case = BACKWARD_CASES[device]
    x, r = features(rng, case["shape"]), case["rois"](rng)
    args = (r.to(device), case["output_size"], case["scale"], sampling_ratio, aligned)
    a, b = x.to(device).requires_grad_(), x.to(device).requires_grad_()
    y, want = ops.roi_align(a, *args), tv.ops.roi_align(b, *args)
    torch.testing.assert_close(y, want, **case["forward"])
    if device != "cpu":  # and the CPU kernel's values
        cpu = ops.roi_align(x, r, *args[1:])
        torch.testing.assert_close(y.cpu(), cpu, rtol=1e-5, atol=1e-5)
    g = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32)).to(device)
    y.backward(g)
    want.backward(g)
    torch.testing.assert_close(a.grad, b.grad, **case["backward"])


def test_float64_and_benchmark_shape(rng):
    x = features(rng, (1, 64, 38, 50), torch.float64)
    r = rois(rng, 128, 1, 38, 50, scale=1 / 16).double()
    torch.testing.assert_close(
        ops.roi_align(x, r, 7, 1 / 16, 2, True),
        tv.ops.roi_align(x, r, 7, 1 / 16, 2, True),
        rtol=1e-12,
        atol=1e-12,
    )


def test_gradcheck_float64(rng, device):
    x = features(rng, (2, 3, 9, 11), torch.float64).to(device).requires_grad_()
    r = rois(rng, 5, 2, 9, 11).double().to(device)
    for aligned in (False, True):
        assert torch.autograd.gradcheck(
            lambda t, a=aligned: ops.roi_align(t, r, (2, 3), 1.0, 2, a), (x,)
        )
    fixed = torch.tensor(  # the second reaches past the map's top-left and bottom edges
        [[0, 1.3, 0.7, 6.2, 7.9], [0, -2, 3, 4.5, 12]], dtype=torch.float64, device=device
    )
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, fixed, 3, 1.0, 2, True), (x,))


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_custom_ops_pass_opcheck(rng, dtype, device):
    x = features(rng, (2, 3, 10, 12), dtype).to(device)
    r = rois(rng, 6, 2, 10, 12, scale=0.5).to(device, dtype)
    strided = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    args = (0.5, 3, 2, 2, True)
    for inputs in [(x, r), (x.clone().requires_grad_(), r), (x, r[:0]), (strided, r)]:
        torch.library.opcheck(torch.ops.fastdet.roi_align, (*inputs, *args))
    assert torch.equal(
        torch.ops.fastdet.roi_align(strided, r, *args), torch.ops.fastdet.roi_align(x, r, *args)
    )
    g = torch.from_numpy(rng.standard_normal((6, 3, 3, 2))).to(device, dtype)
    back = (0.5, 3, 2, 2, 3, 10, 12, 2, True)
    for grad, boxes in [
        (g, r),
        (g.transpose(2, 3).contiguous().transpose(2, 3), r),
        (g[:0], r[:0]),
    ]:
        torch.library.opcheck(torch.ops.fastdet.roi_align_backward, (grad, boxes, *back))


def test_shape_errors_are_torchvisions_exception_types():
    # torchvision asserts on the boxes' shape (AssertionError) and its kernel checks the input's
    # (RuntimeError); fastdet's errors are both that and ValueError.
    a = torch.linspace(1, 8 * 8, 8 * 8).reshape(1, 1, 8, 8)
    with pytest.raises(AssertionError, match=r"boxes must have shape \[K, 5\]"):
        ops.roi_align(a, torch.tensor([[0, 0, 3, 3]], dtype=a.dtype), output_size=(2, 2))
    with pytest.raises(AssertionError, match=r"boxes\[0\] must have shape \[Ki, 4\]"):
        ops.roi_align(a, [torch.tensor([[0, 0, 3]], dtype=a.dtype)], output_size=(2, 2))
    assert issubclass(ops.RoIBoxesError, ValueError)
    with pytest.raises(RuntimeError, match="input must have shape"):
        ops.roi_align(a[0], torch.zeros(1, 5), 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_registered_op_takes_half_types(rng, dtype, device):
    # torch.ops.fastdet.roi_align takes every dtype roi_align does, computing in float32
    x = features(rng, (2, 3, 10, 12)).to(device, dtype)
    r = rois(rng, 6, 2, 10, 12, scale=0.5).to(device, dtype)
    args = (0.5, 3, 2, 2, True)
    got = torch.ops.fastdet.roi_align(x, r, *args)
    assert got.dtype == dtype
    assert torch.equal(got, ops.roi_align(x, r, (3, 2), 0.5, 2, True))
    torch.library.opcheck(torch.ops.fastdet.roi_align, (x, r.float(), *args))
    g = torch.ones(6, 3, 3, 2, dtype=dtype, device=device)
    back = (0.5, 3, 2, 2, 3, 10, 12, 2, True)
    gin = torch.ops.fastdet.roi_align_backward(g, r, *back)
    assert gin.dtype == dtype
    want = torch.ops.fastdet.roi_align_backward(g.float(), r.float(), *back)
    assert torch.equal(gin, want.to(dtype))


def test_module_is_a_torch_fx_leaf(rng):
    from torchvision.models.feature_extraction import get_graph_node_names

    m = RoIAlign(5, 0.5, -1, aligned=True)
    traced = torch.fx.symbolic_trace(m)
    calls = [n for n in traced.graph.nodes if n.op == "call_function"]
    assert [n.target for n in calls] == [ops.roi_align]
    x, r = features(rng, (2, 3, 10, 12)), rois(rng, 6, 2, 10, 12, scale=0.5)
    assert torch.equal(traced(x, r), m(x, r))

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = m

        def forward(self, a, b):
            return self.layer(a, b)

    train, evaluation = get_graph_node_names(Wrapper())
    assert train == evaluation and len(train) == 3  # a, b and the one leaf call


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


# --- the GPU's backwards ----------------------------------------------------------------


@pytest.mark.gpu
def test_backward_deterministic_mode_and_atomic_mode_agree(rng):
    x = features(rng, (2, 32, 50, 60)).cuda()
    r = image_rois(rng, 2000, 2, 200, 240).cuda()  # many overlapping rois: atomics race
    # and both are right: checked against the CPU backward in float64 at the end
    gout = features(rng, (2000, 32, 7, 7)).cuda()

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


@pytest.mark.gpu
@pytest.mark.parametrize(
    "aligned,sr,out", [(True, 2, (7, 7)), (False, 0, (7, 5)), (True, 0, (5, 7)), (False, 2, (3, 6))]
)
def test_shared_backward_matches_atomic_and_cpu(aligned, sr, out, rng):
    # Footprints up to the whole 260 x 300 map: past the shared tables' 24 KiB (a square of about
    # 227 px in float32, 128 px in float64) a roi takes the per-tap fallback; wide float64 rois
    # need several channel passes per tile (tiles of 10 channels here: 12 makes a partial one).
    # image_rois puts some partly outside the map; the last three rois span it all.
    shape = (2, 12, 260, 300)
    r = torch.cat(
        [
            image_rois(rng, 300, 2, 1040, 1200),
            torch.tensor(
                [[0, -50, -40, 1300, 1100], [1, 0, 0, 1199, 1039], [1, 4, 900, 1196, 1100]]
            ),
        ]
    )
    gout = features(rng, (len(r), 12, *out), torch.float64)
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


@pytest.mark.gpu
@pytest.mark.parametrize("aligned,sr", [(True, 2), (False, 0), (False, 2), (True, 0)])
def test_shared_backward_edges(aligned, sr, rng):
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
        gout = features(rng, (len(r), 3, 4, 3), torch.float64)
        cpu = torch.ops.fastdet.roi_align_backward(gout, r.double(), 1.0, 4, 3, *shape, sr, aligned)
        args = (gout.cuda(), r.double().cuda(), 1.0, (4, 3), shape, sr, aligned)
        shared = _roi_backward("shared", *args)
        torch.testing.assert_close(
            shared, _roi_backward("atomic", *args), rtol=1e-12, atol=1e-12, msg=name
        )
        torch.testing.assert_close(shared.cpu(), cpu, rtol=1e-12, atol=1e-12, msg=name)
    # a batch index outside [0, N) (the GPU does not check): nothing flows back, as the atomic path
    r = torch.tensor([[2, 1, 1, 9, 9], [-1, 1, 1, 9, 9]], dtype=torch.float64, device="cuda")
    gout = features(rng, (2, 3, 4, 3), torch.float64).cuda()
    assert not _roi_backward("shared", gout, r, 1.0, (4, 3), shape, sr, aligned).any()


@pytest.mark.gpu
def test_shared_backward_half(rng, monkeypatch):
    for dt in (torch.float16, torch.bfloat16):
        x = features(rng, (2, 8, 40, 52)).cuda().to(dt)
        r = image_rois(rng, 200, 2, 160, 208).cuda().to(dt)
        gout = features(rng, (200, 8, 7, 7)).cuda().to(dt)

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


@pytest.mark.gpu
def test_shared_gradcheck_float64(shared_backward, rng):
    x = features(rng, (1, 2, 8, 9), torch.float64).cuda().requires_grad_()
    r = torch.tensor(
        [[0, 1.3, 0.7, 6.2, 7.9], [0, -2, 3, 4.5, 12], [0, 5, 5, 5.2, 5.1]],
        dtype=torch.float64,
        device="cuda",
    )
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, r, 3, 1.0, 2, True), (x,))
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, r, (2, 3), 1.0, 0, False), (x,))


@pytest.mark.gpu
def test_deterministic_wins_over_shared(rng, monkeypatch):
    x = features(rng, (2, 16, 50, 60)).cuda()
    r = image_rois(rng, 1000, 2, 200, 240).cuda()
    gout = features(rng, (1000, 16, 7, 7)).cuda()

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
