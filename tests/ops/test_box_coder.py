"""BoxCoder against torchvision.models.detection._utils.BoxCoder and the reference."""

import math

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.ops import _reference as reference


@pytest.fixture
def tv_coder(tv):
    """torchvision's BoxCoder class (skips where torchvision is missing)."""
    from torchvision.models.detection._utils import BoxCoder

    return BoxCoder


DTYPES = [np.float32, np.float64]
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (0.5, 2.0, 3.0, 0.25)]
# 1e-5 relative in float32, 1e-12 in float64; atol for values that cancel to ~0 (encode: O(1)
# targets; decode: coordinates up to ~1e4).
ENC = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
DEC = {np.float32: dict(rtol=1e-5, atol=1e-3), np.float64: dict(rtol=1e-12, atol=1e-9)}


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def gt_near(make, proposals):
    """Ground-truth boxes near the proposals (shifted and rescaled), as RPN targets are."""
    rng = make.rng
    p = proposals.astype(np.float64)
    w, h = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    cx, cy = (
        p[:, 0] + w / 2 + rng.normal(0, 0.2, len(p)) * w,
        p[:, 1] + h / 2 + rng.normal(0, 0.2, len(p)) * h,
    )
    w, h = w * np.exp(rng.normal(0, 0.3, len(p))), h * np.exp(rng.normal(0, 0.3, len(p)))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(proposals.dtype)


def codes(make, n, k, dtype, scale=1.0):
    return (make.rng.normal(0, scale, (n, 4 * k))).astype(dtype)


def _mag(b):
    """Per box, the largest |coordinate| along x and along y."""
    b = np.abs(np.asarray(b, np.float64))
    return np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3])


def assert_encode_near_reference(got, g, p, weights, dtype):
    """got within rounding of the float64 reference: centres and sizes computed in `dtype`
    carry ~eps * |coordinate| each, divided by the box sizes (cancellation in gx - px)."""
    want = reference.encode(g, p, weights)
    eps = np.finfo(dtype).eps
    (gmx, gmy), (pmx, pmy) = _mag(g), _mag(p)
    g64, p64 = np.asarray(g, np.float64), np.asarray(p, np.float64)
    gw, gh = g64[:, 2] - g64[:, 0], g64[:, 3] - g64[:, 1]
    pw, ph = p64[:, 2] - p64[:, 0], p64[:, 3] - p64[:, 1]
    sx, sy = (gmx + pmx) * (1 / pw + 1 / gw), (gmy + pmy) * (1 / ph + 1 / gh)
    bound = 8 * eps * np.stack([sx, sy, sx, sy], 1) * (np.array(weights) + np.abs(want))
    assert np.all(np.abs(np.asarray(got, np.float64) - want) <= 1e-5 * np.abs(want) + bound)


def assert_decode_near_reference(got, c, p, weights, dtype, clip=reference.DEFAULT_CLIP):
    """got within rounding of the float64 reference: each output sums terms of magnitude up to
    |coordinate| * (1 + |dx| + exp(dw)), each carrying a few eps."""
    want = reference.decode(c, p, weights, clip)
    eps = np.finfo(dtype).eps
    mx, my = _mag(p)
    d = np.asarray(c, np.float64).reshape(len(p), -1, 4) / np.array(weights)
    sx = mx[:, None] * (2 + np.abs(d[..., 0]) + np.exp(np.minimum(d[..., 2], clip)))
    sy = my[:, None] * (2 + np.abs(d[..., 1]) + np.exp(np.minimum(d[..., 3], clip)))
    bound = 8 * eps * np.stack([sx, sy, sx, sy], -1).reshape(want.shape)
    assert np.all(np.abs(np.asarray(got, np.float64) - want) <= 1e-5 * np.abs(want) + bound)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_encode_single_matches_torchvision(dtype, weights, make, tv_coder):
    p = make.boxes(500, dtype)
    g = gt_near(make, p)
    got = ops.BoxCoder(weights).encode_single(t(g), t(p))
    assert got.shape == (500, 4) and got.dtype == t(p).dtype
    torch.testing.assert_close(got, tv_coder(weights).encode_single(t(g), t(p)), **ENC[dtype])


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_encode_single_matches_reference(dtype, weights, make):
    p = make.boxes(300, dtype)
    g = make.boxes(300, dtype)  # unrelated boxes: large targets
    got = ops.BoxCoder(weights).encode_single(g, p)
    assert_encode_near_reference(got, g, p, weights, dtype)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_single_matches_torchvision_with_class_specific_codes(
    dtype, weights, k, make, tv_coder
):
    p = make.boxes(400, dtype)
    c = codes(make, 400, k, dtype)
    got = ops.BoxCoder(weights).decode_single(t(c), t(p))
    assert got.shape == (400, 4 * k) and got.dtype == t(c).dtype
    torch.testing.assert_close(got, tv_coder(weights).decode_single(t(c), t(p)), **DEC[dtype])
    assert_decode_near_reference(got.numpy(), c, p, weights, dtype)


@pytest.mark.gpu
def test_encode_and_decode_on_gpu_match_torchvision(make, tv_coder):
    # Unrelated ground truth (large targets) and two classes' codes; 5000 boxes fill many blocks.
    a, gt = t(make.boxes(5000)).cuda(), t(make.boxes(5000)).cuda()
    c = t(codes(make, 5000, 2, np.float32)).cuda()
    ours, theirs = ops.BoxCoder((10, 10, 5, 5)), tv_coder((10, 10, 5, 5))
    torch.testing.assert_close(
        ours.encode_single(gt, a), theirs.encode_single(gt, a), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        ours.decode_single(c, a), theirs.decode_single(c, a), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_clamps_dw_and_dh_at_bbox_xform_clip(dtype, make, tv_coder):
    p = make.boxes(200, dtype)
    c = codes(make, 200, 2, dtype, scale=4.0)  # many |dw|, |dh| beyond log(1000 / 16) = 4.135
    c[:5, 2:4] = 50.0  # exp(50) would overflow float32 without the clamp
    coder = ops.BoxCoder()
    got = coder.decode_single(t(c), t(p))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(
        got, tv_coder((1.0, 1.0, 1.0, 1.0)).decode_single(t(c), t(p)), **DEC[dtype]
    )
    assert_decode_near_reference(got.numpy(), c, p, (1.0, 1.0, 1.0, 1.0), dtype)
    w = p[:5, 2] - p[:5, 0]
    np.testing.assert_allclose(got[:5, 2] - got[:5, 0], w * (1000.0 / 16), rtol=1e-5)


def test_decode_clamp_applies_after_dividing_by_the_weights(make, tv_coder):
    p = make.boxes(50, np.float64)
    c = codes(make, 50, 1, np.float64, scale=10.0)
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0), bbox_xform_clip=1.5)
    got = coder.decode_single(c, p)
    want = tv_coder((10.0, 10.0, 5.0, 5.0), bbox_xform_clip=1.5).decode_single(t(c), t(p))
    np.testing.assert_allclose(got, want.numpy(), **DEC[np.float64])
    assert_decode_near_reference(got, c, p, (10.0, 10.0, 5.0, 5.0), np.float64, clip=1.5)


def test_default_clip_is_torchvisions():
    assert ops.BoxCoder().bbox_xform_clip == math.log(1000.0 / 16)
    assert ops.BoxCoder().weights == (1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_encode_and_decode_on_per_image_lists_match_torchvision(dtype, make, tv_coder):
    sizes = [5, 0, 7, 1]
    props = [t(make.boxes(n, dtype)) for n in sizes]
    gts = [t(gt_near(make, p.numpy())) for p in props]
    ours, theirs = ops.BoxCoder((10.0, 10.0, 5.0, 5.0)), tv_coder((10.0, 10.0, 5.0, 5.0))
    got = ours.encode(gts, props)
    want = theirs.encode(gts, props)
    assert isinstance(got, tuple) and [g.shape[0] for g in got] == sizes
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **ENC[dtype])
    c = t(codes(make, sum(sizes), 3, dtype))
    got = ours.decode(c, props)
    assert got.shape == (sum(sizes), 3, 4)
    torch.testing.assert_close(got, theirs.decode(c, props), **DEC[dtype])


def test_decode_reshapes_flat_codes_like_torchvision(make, tv_coder):
    props = [t(make.boxes(4)), t(make.boxes(6))]
    c = t(codes(make, 10 * 2, 1, np.float32)).reshape(-1)  # [10 * 2 * 4]: reshaped to [10, 8]
    got = ops.BoxCoder().decode(c, props)
    assert got.shape == (10, 2, 4)
    torch.testing.assert_close(
        got, tv_coder((1.0, 1.0, 1.0, 1.0)).decode(c, props), **DEC[np.float32]
    )


def test_decode_requires_a_list_of_boxes(make):
    with pytest.raises(TypeError, match="boxes must be a list of \\[Ni, 4\\] arrays, got Tensor"):
        ops.BoxCoder().decode(torch.zeros(2, 4), torch.zeros(2, 4))


def test_encode_lists_of_numpy_arrays(make):
    props = [make.boxes(3, np.float64), make.boxes(4, np.float64)]
    gts = [gt_near(make, p) for p in props]
    got = ops.BoxCoder().encode(gts, props)
    assert len(got) == 2 and all(isinstance(g, np.ndarray) for g in got)
    g, p = np.concatenate(gts), np.concatenate(props)
    assert_encode_near_reference(np.concatenate(got), g, p, (1.0,) * 4, np.float64)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_decode_inverts_encode(weights, make):
    p = make.boxes(300, np.float64)
    g = gt_near(make, p)
    coder = ops.BoxCoder(weights)
    np.testing.assert_allclose(
        coder.decode_single(coder.encode_single(g, p), p), g, rtol=1e-12, atol=1e-9
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_in_numpy_out(dtype, make):
    p = make.boxes(50, dtype)
    g = gt_near(make, p)
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
    enc = coder.encode_single(g, p)
    assert isinstance(enc, np.ndarray) and enc.dtype == dtype
    np.testing.assert_array_equal(enc, coder.encode_single(t(g), t(p)).numpy())
    dec = coder.decode_single(enc, p)
    assert isinstance(dec, np.ndarray) and dec.dtype == dtype
    np.testing.assert_array_equal(dec, coder.decode_single(t(enc), t(p)).numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype, make):
    p = t(make.boxes(40)).to(dtype)
    g = t(gt_near(make, p.float().numpy())).to(dtype)
    coder = ops.BoxCoder()
    enc = coder.encode_single(g, p)
    assert enc.dtype == dtype
    assert torch.equal(enc, coder.encode_single(g.float(), p.float()).to(dtype))
    c = t(codes(make, 40, 2, np.float32)).to(dtype)
    dec = coder.decode_single(c, p)
    assert dec.dtype == dtype
    assert torch.equal(dec, coder.decode_single(c.float(), p.float()).to(dtype))


def test_numpy_float16(make):
    p = make.boxes(10, np.float16)
    g = gt_near(make, p.astype(np.float32)).astype(np.float16)
    enc = ops.BoxCoder().encode_single(g, p)
    assert enc.dtype == np.float16
    want = ops.BoxCoder().encode_single(g.astype(np.float32), p.astype(np.float32))
    np.testing.assert_array_equal(enc, want.astype(np.float16))


def test_decode_float64_codes_on_float32_boxes(make, tv_coder):
    p = make.boxes(20, np.float32)
    c = codes(make, 20, 1, np.float64)
    got = ops.BoxCoder().decode_single(t(c), t(p))
    assert got.dtype == torch.float64
    torch.testing.assert_close(
        got, tv_coder((1.0, 1.0, 1.0, 1.0)).decode_single(t(c), t(p)), **DEC[np.float64]
    )


def test_empty_inputs():
    coder = ops.BoxCoder()
    enc = coder.encode_single(torch.zeros(0, 4), torch.zeros(0, 4))
    assert enc.shape == (0, 4) and enc.dtype == torch.float32
    dec = coder.decode_single(
        torch.zeros(0, 8, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.float64)
    )
    assert dec.shape == (0, 8) and dec.dtype == torch.float64
    enc = coder.encode_single(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert isinstance(enc, np.ndarray) and enc.shape == (0, 4) and enc.dtype == np.float32
    assert coder.decode(torch.zeros(0, 4), [torch.zeros(0, 4)]).shape == (0, 4)


def test_one_box():
    coder = ops.BoxCoder()
    p = torch.tensor([[0.0, 0.0, 10.0, 20.0]], dtype=torch.float64)
    g = torch.tensor([[5.0, 0.0, 15.0, 40.0]], dtype=torch.float64)
    assert coder.encode_single(g, p).tolist() == [[0.5, 0.5, 0.0, math.log(2.0)]]
    assert coder.decode_single(torch.zeros(1, 4, dtype=torch.float64), p).tolist() == p.tolist()


def test_huge_and_negative_coordinates_match_reference(make):
    for p in (
        make.boxes(100, np.float64, image=1e8, lo=1e6, hi=1e7),
        make.boxes(100, np.float64) - 1e4,
    ):
        g = gt_near(make, p)
        coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
        assert_encode_near_reference(coder.encode_single(g, p), g, p, coder.weights, np.float64)
        c = codes(make, 100, 2, np.float64)
        assert_decode_near_reference(coder.decode_single(c, p), c, p, coder.weights, np.float64)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("argument", ["reference_boxes", "proposals"])
def test_encode_non_finite_coordinates_raise_naming_the_argument(argument, bad, make):
    boxes = {"reference_boxes": make.boxes(3), "proposals": make.boxes(3)}
    boxes[argument][1, 2] = bad
    with pytest.raises(ValueError, match=argument):
        ops.BoxCoder().encode_single(t(boxes["reference_boxes"]), t(boxes["proposals"]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_decode_non_finite_boxes_raise_naming_the_argument(bad, make):
    p = make.boxes(3)
    p[0, 0] = bad
    with pytest.raises(ValueError, match="boxes"):
        ops.BoxCoder().decode_single(t(codes(make, 3, 1, np.float32)), t(p))


def test_wrong_dtypes_raise_type_error():
    coder = ops.BoxCoder()
    f, i = torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.int64)
    with pytest.raises(TypeError, match="reference_boxes must be float16.*int64"):
        coder.encode_single(i, f)
    with pytest.raises(TypeError, match="proposals must be float16.*int64"):
        coder.encode_single(f, i)
    with pytest.raises(TypeError, match="rel_codes must be float16.*int64"):
        coder.decode_single(i, f)
    with pytest.raises(TypeError, match="boxes must be float16.*int64"):
        coder.decode_single(f, i)


def test_wrong_shapes_raise_value_error():
    coder = ops.BoxCoder()
    with pytest.raises(ValueError, match=r"reference_boxes has 3 boxes but proposals has 2"):
        coder.encode_single(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"proposals must have shape \[N, 4\], got \(2, 5\)"):
        coder.encode_single(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(
        ValueError, match=r"rel_codes must have shape \[N, 4k\] with N = 2 .*got \(2, 6\)"
    ):
        coder.decode_single(torch.zeros(2, 6), torch.zeros(2, 4))
    with pytest.raises(
        ValueError, match=r"rel_codes must have shape \[N, 4k\] with N = 2 .*got \(3, 4\)"
    ):
        coder.decode_single(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \(2, 8\)"):
        coder.decode_single(torch.zeros(2, 8), torch.zeros(2, 8))


def test_mixing_torch_and_numpy_raises_type_error():
    coder = ops.BoxCoder()
    with pytest.raises(
        TypeError, match="proposals is a numpy array but reference_boxes is a torch array"
    ):
        coder.encode_single(torch.zeros(1, 4), np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="boxes is a torch array but rel_codes is a numpy array"):
        coder.decode_single(np.zeros((1, 4), np.float32), torch.zeros(1, 4))


@pytest.mark.parametrize(
    "weights", [(1.0, 1.0, 1.0), (1.0, 0.0, 1.0, 1.0), (1.0, float("nan"), 1.0, 1.0)]
)
def test_bad_weights_raise(weights):
    with pytest.raises(ValueError, match="weights must be 4 finite non-zero numbers"):
        ops.BoxCoder(weights)


def test_non_contiguous_inputs_give_the_same_result(make):
    p = make.boxes(100)
    g = gt_near(make, p)
    c = codes(make, 100, 2, np.float32)
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
    gt_view, p_view = t(g.T.copy()).T, t(np.concatenate([p, p], 1))[:, 4:]
    c_view = t(c.T.copy()).T
    assert not (gt_view.is_contiguous() or p_view.is_contiguous() or c_view.is_contiguous())
    assert torch.equal(coder.encode_single(gt_view, p_view), coder.encode_single(t(g), t(p)))
    assert torch.equal(coder.decode_single(c_view, p_view), coder.decode_single(t(c), t(p)))


def test_encode_and_decode_compile(make):
    p = t(make.boxes(100))
    g = t(gt_near(make, p.numpy()))
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))

    def f(gt, proposals):
        targets = coder.encode_single(gt, proposals)
        return targets, coder.decode_single(targets * 0.5, proposals)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(g, p), f(g, p)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_custom_ops_pass_opcheck(dtype, device, make):
    p = make.boxes(50)
    g = t(gt_near(make, p)).to(device, dtype)
    p = t(p).to(device, dtype)
    c = t(codes(make, 50, 3, np.float32)).to(device, dtype)
    weights = [10.0, 10.0, 5.0, 5.0]
    strided = p.t().contiguous().t()  # same values, column-major
    for args in [(g, p, weights), (g[:0], p[:0], weights), (g, strided, weights)]:
        torch.library.opcheck(torch.ops.fastdet.encode_boxes, args)
    for args in [
        (c, p, weights, 4.135),
        (c[:, :4], p, weights, 1.5),
        (c[:0], p[:0], weights, 4.135),
        (c.t().contiguous().t(), strided, weights, 4.135),
    ]:
        torch.library.opcheck(torch.ops.fastdet.decode_boxes, args)
    F = torch.ops.fastdet
    assert torch.equal(F.encode_boxes(g, strided, weights), F.encode_boxes(g, p, weights))
    assert torch.equal(
        F.decode_boxes(c.t().contiguous().t(), strided, weights, 4.135),
        F.decode_boxes(c, p, weights, 4.135),
    )
