"""box_area and the pairwise IoU family (box_iou, generalized_box_iou, distance_box_iou,
complete_box_iou) against the reference and torchvision.ops: formats, integer and half dtypes,
batched (broadcast) boxes, edge cases, custom-op checks."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdet import ops
from fastdet.ops import _reference as reference

PAIRWISE = ["box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-6, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-15)}
# CIoU's atan comes from different libraries (libm, torch's vectorised one, the reference's
# float64 one rounded): a few ulps of the angle.
CIOU_TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-13)}


def tol(op, dtype):
    return (CIOU_TOL if op == "complete_box_iou" else TOL)[dtype]


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# [N, M] per device: on the GPU, several tiles with ragged edges.
PAIRWISE_SIZES = {"cpu": (57, 83), "cuda": (777, 1001)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", PAIRWISE)
def test_pairwise_matches_reference_and_torchvision(op, dtype, device, make, tv):
    n, m = PAIRWISE_SIZES[device]
    a, b = make.boxes(n, dtype), make.boxes(m, dtype)
    got = getattr(ops, op)(t(a).to(device), t(b).to(device))
    assert got.device.type == device and got.shape == (n, m) and got.dtype == t(a).dtype
    want = getattr(tv.ops, op)(t(a).to(device), t(b).to(device))
    if device == "cpu":
        np.testing.assert_allclose(got.numpy(), getattr(reference, op)(a, b), **tol(op, dtype))
        torch.testing.assert_close(got, want, **tol(op, dtype))
    else:  # the CPU kernel's values; torchvision's CUDA build contracts to FMA (we do not)
        cpu = getattr(ops, op)(t(a), t(b))
        torch.testing.assert_close(got.cpu(), cpu, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_matches_torchvision_on_clustered_boxes(dtype, make, tv):
    a = make.clustered(300, dtype)
    for op in PAIRWISE:
        torch.testing.assert_close(
            getattr(ops, op)(t(a), t(a)), getattr(tv.ops, op)(t(a), t(a)), **tol(op, dtype)
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_area_matches_reference_and_torchvision(dtype, make, tv):
    b = make.boxes(101, dtype)
    got = ops.box_area(t(b))
    assert got.shape == (101,) and got.dtype == t(b).dtype
    np.testing.assert_array_equal(got.numpy(), reference.box_area(b))
    assert torch.equal(got, tv.ops.box_area(t(b)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", PAIRWISE)
def test_numpy_in_numpy_out(op, dtype, make):
    a, b = make.boxes(20, dtype), make.boxes(30, dtype)
    got = getattr(ops, op)(a, b)
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == (20, 30)
    np.testing.assert_array_equal(got, getattr(ops, op)(t(a), t(b)).numpy())


def test_box_area_numpy_in_numpy_out(make):
    b = make.boxes(10, np.float64)
    got = ops.box_area(b)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_array_equal(got, reference.box_area(b))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", PAIRWISE + ["box_area"])
def test_half_precision_computed_in_float32(op, dtype, make):
    args = [t(make.boxes(15)).to(dtype)] + (
        [t(make.boxes(9)).to(dtype)] if op != "box_area" else []
    )
    got = getattr(ops, op)(*args)
    assert got.dtype == dtype
    assert torch.equal(got, getattr(ops, op)(*[a.float() for a in args]).to(dtype))


def test_numpy_float16_gives_float16(make):
    a, b = make.boxes(6, np.float16), make.boxes(7, np.float16)
    got = ops.box_iou(a, b)
    assert got.dtype == np.float16
    want = ops.box_iou(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(got, want)


def test_mixed_float32_float64_computes_in_float64(make):
    a, b = make.boxes(5, np.float32), make.boxes(6, np.float64)
    got = ops.box_iou(t(a), t(b))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), reference.box_iou(a.astype(np.float64), b), rtol=1e-12)


@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (0, 0)])
@pytest.mark.parametrize("op", PAIRWISE)
def test_empty_inputs_give_empty_outputs(op, n, m, make):
    a, b = make.boxes(n), make.boxes(m)
    got = getattr(ops, op)(t(a), t(b))
    assert got.shape == (n, m) and got.dtype == torch.float32
    got = getattr(ops, op)(a.astype(np.float64), b.astype(np.float64))
    assert isinstance(got, np.ndarray) and got.shape == (n, m) and got.dtype == np.float64


@pytest.mark.gpu
def test_box_area_half_precision_on_gpu_matches_cpu(make):
    b = t(make.boxes(100))
    for dt in (torch.float16, torch.bfloat16):
        got = ops.box_area(b.to(dt).cuda())
        assert got.dtype == dt
        torch.testing.assert_close(got.float().cpu(), ops.box_area(b.to(dt).float()).to(dt).float())


def test_box_area_of_no_boxes():
    assert ops.box_area(torch.zeros(0, 4)).shape == (0,)
    got = ops.box_area(np.zeros((0, 4), np.float16))
    assert got.shape == (0,) and got.dtype == np.float16


def test_one_box():
    a = torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 1.0, 6.0, 2.0]], dtype=torch.float64)
    assert ops.box_iou(a, b).tolist() == [[2 / 10]]  # inter 2, union 8 + 4 - 2
    assert ops.generalized_box_iou(a, b).tolist() == [[2 / 10 - (12 - 10) / 12]]
    assert ops.box_area(a).tolist() == [8.0]


def test_identical_boxes_have_iou_exactly_one(make):
    b = t(make.boxes(40))
    assert torch.equal(ops.box_iou(b, b).diagonal(), torch.ones(40))
    assert torch.equal(ops.generalized_box_iou(b, b).diagonal(), torch.ones(40))


def test_disjoint_boxes_have_iou_zero_and_negative_giou():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert ops.box_iou(a, b).item() == 0.0
    assert ops.generalized_box_iou(a, b).item() == pytest.approx(0 - (3 - 2) / 3)


DEGENERATE = torch.tensor(
    [
        [5.0, 5.0, 5.0, 5.0],  # a point
        [1.0, 1.0, 9.0, 1.0],  # a horizontal segment
        [8.0, 8.0, 2.0, 2.0],  # inverted in both axes (torchvision: positive signed area 36)
        [8.0, 2.0, 2.0, 9.0],  # inverted in x only (torchvision: negative area)
    ]
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_boxes_have_area_and_iou_zero_not_nan(dtype):
    # Documented difference: torchvision gives NaN for two empty boxes and counts inverted
    # boxes' signed areas; fastdet gives area 0 and IoU 0.
    d = DEGENERATE.to(dtype)
    full = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=dtype)
    assert torch.equal(ops.box_area(d), torch.zeros(4, dtype=dtype))
    assert torch.equal(ops.box_iou(d, d), torch.zeros(4, 4, dtype=dtype))
    assert torch.equal(ops.box_iou(d, full), torch.zeros(4, 1, dtype=dtype))
    np.testing.assert_array_equal(
        ops.box_iou(d, full).numpy(), reference.box_iou(d.numpy(), full.numpy())
    )


@pytest.mark.gpu
def test_box_iou_edges_and_tails_on_gpu_match_cpu(make):
    a = torch.tensor([[0, 0, 0, 0], [5, 5, 1, 1], [0, 0, 10, 10]], dtype=torch.float32)
    got = ops.box_iou(a.cuda(), a.cuda()).cpu()
    assert torch.equal(got, ops.box_iou(a, a))
    assert not got.isnan().any()
    for n, m in [(0, 5), (5, 0), (1, 1), (3, 7)]:  # tails of the vectorised stores
        x, y = t(make.boxes(n)), t(make.boxes(m))
        torch.testing.assert_close(ops.box_iou(x.cuda(), y.cuda()).cpu(), ops.box_iou(x, y))


def test_giou_of_degenerate_boxes_is_finite_and_matches_reference():
    d = DEGENERATE
    got = ops.generalized_box_iou(d, d)
    assert torch.isfinite(got).all()
    assert got[0, 0].item() == 0.0  # same point: no hull, GIoU 0
    assert got[0, 1].item() == -1.0  # two empty boxes whose hull has area
    np.testing.assert_allclose(
        got.numpy(), reference.generalized_box_iou(d.numpy(), d.numpy()), rtol=1e-6
    )


@pytest.mark.parametrize("op", PAIRWISE)
def test_huge_coordinates_match_reference_and_torchvision(op, make, tv):
    a = make.boxes(50, np.float64, image=1e8, lo=1e6, hi=1e7) + 1e6
    near = a[:25] + make.rng.uniform(-1e5, 1e5, (25, 1))
    b = np.concatenate([near, make.boxes(25, np.float64, image=1e8, lo=1e6, hi=1e7)])
    got = getattr(ops, op)(t(a), t(b))
    np.testing.assert_allclose(got.numpy(), getattr(reference, op)(a, b), **tol(op, np.float64))
    torch.testing.assert_close(got, getattr(tv.ops, op)(t(a), t(b)), **tol(op, np.float64))
    got32 = getattr(ops, op)(t(a).float(), t(b).float())
    want32 = getattr(reference, op)(a.astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(got32.numpy(), want32, **tol(op, np.float32))


@pytest.mark.parametrize("op", PAIRWISE)
def test_negative_coordinates_match_reference_and_torchvision(op, make, tv):
    a = make.boxes(40, np.float64) - 2000.0
    b = np.concatenate([a[:20] + 1.0, make.boxes(20, np.float64) - 2000.0])
    assert (reference.box_iou(a[:20], b[:20]).diagonal() > 0).all()  # overlapping pairs
    got = getattr(ops, op)(t(a), t(b))
    np.testing.assert_allclose(got.numpy(), getattr(reference, op)(a, b), **tol(op, np.float64))
    torch.testing.assert_close(got, getattr(tv.ops, op)(t(a), t(b)), **tol(op, np.float64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("op", PAIRWISE)
def test_non_finite_coordinates_raise_naming_the_argument(op, bad, make):
    good = make.boxes(3)
    worse = good.copy()
    worse[1, 2] = bad
    with pytest.raises(ValueError, match="boxes2 contains NaN or inf"):
        getattr(ops, op)(t(good), t(worse))
    with pytest.raises(ValueError, match="boxes1 contains NaN or inf"):
        getattr(ops, op)(worse, good)


def test_box_area_non_finite_raises(make):
    b = make.boxes(3)
    b[0, 0] = np.nan
    with pytest.raises(ValueError, match="boxes contains NaN or inf"):
        ops.box_area(t(b))


def test_non_finite_in_half_precision_raises():
    b = torch.tensor([[0.0, 0.0, float("inf"), 1.0]], dtype=torch.float16)
    with pytest.raises(ValueError, match="boxes1"):
        ops.box_iou(b, b)


@pytest.mark.parametrize("op", PAIRWISE)
def test_non_contiguous_inputs_give_the_same_result(op, make):
    a, b = make.boxes(30), make.boxes(20)
    at = t(a.T.copy()).T  # a transposed view, column-major
    bs = t(np.concatenate([b, b], 1))[:, 4:]  # a sliced view with a row stride of 8
    assert not at.is_contiguous() and not bs.is_contiguous()
    want = getattr(ops, op)(t(a), t(b))
    assert torch.equal(getattr(ops, op)(at, bs), want)
    got = getattr(ops, op)(np.asfortranarray(a), np.concatenate([b, b], 1)[:, 4:])
    assert np.array_equal(got, want.numpy())


def test_box_area_non_contiguous(make):
    b = make.boxes(30)
    assert torch.equal(ops.box_area(t(b.T.copy()).T), ops.box_area(t(b)))


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_non_numeric_boxes_raise_type_error(dtype):
    b = torch.zeros(2, 4, dtype=dtype)
    expected = "must be float16, bfloat16, float32, float64 or an integer type"
    with pytest.raises(TypeError, match="boxes1 " + expected):
        ops.box_iou(b, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="boxes2 " + expected):
        ops.generalized_box_iou(torch.zeros(2, 4), b)
    with pytest.raises(TypeError, match="boxes " + expected):
        ops.box_area(b)


@pytest.mark.parametrize("shape", [(3, 5), (4,), (3, 3), ()])
def test_wrong_shape_raises_naming_argument_and_shape(shape):
    bad = torch.zeros(shape)
    expected = re.escape(f"must have shape [..., N, 4], got {shape}")
    for op in PAIRWISE:
        with pytest.raises(ValueError, match="boxes2 " + expected):
            getattr(ops, op)(torch.zeros(2, 4), bad)
        with pytest.raises(RuntimeError, match="boxes1 " + expected):  # torchvision's type too
            getattr(ops, op)(bad, torch.zeros(2, 4))
    if shape != (4,):  # one box [4] has an area (a scalar), as in torchvision
        with pytest.raises(
            ops.ShapeError, match=re.escape(f"boxes must have shape [..., 4], got {shape}")
        ):
            ops.box_area(bad)


def test_shape_error_is_value_error_and_runtime_error():
    assert issubclass(ops.ShapeError, ValueError) and issubclass(ops.ShapeError, RuntimeError)


def test_mixing_torch_and_numpy_raises_type_error():
    with pytest.raises(TypeError, match="boxes2 is a numpy array but boxes1 is a torch array"):
        ops.box_iou(torch.zeros(1, 4), np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="boxes2 is a torch array but boxes1 is a numpy array"):
        ops.generalized_box_iou(np.zeros((1, 4), np.float32), torch.zeros(1, 4))


def test_non_array_input_raises_type_error():
    with pytest.raises(
        TypeError, match="boxes1 must be a torch.Tensor, numpy.ndarray or cupy.*got list"
    ):
        ops.box_iou([[0.0, 0.0, 1.0, 1.0]], torch.zeros(1, 4))
    with pytest.raises(TypeError, match="boxes must be a torch.Tensor"):
        ops.box_area([[0.0, 0.0, 1.0, 1.0]])


@pytest.mark.parametrize("op", PAIRWISE + ["box_area"])
def test_compiled_aot_eager_matches_eager(op, make):
    args = (t(make.boxes(31)), t(make.boxes(17)))[: 1 if op == "box_area" else 2]
    f = getattr(ops, op)
    compiled = torch.compile(lambda *x: f(*x), backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(*args), f(*args))


def test_box_iou_compiled_with_inductor_matches_eager(make):
    a, b = t(make.boxes(40)), t(make.boxes(25))
    compiled = torch.compile(lambda x, y: ops.box_iou(x, y), fullgraph=True)
    assert torch.equal(compiled(a, b), ops.box_iou(a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_custom_ops_pass_opcheck(dtype, device, make):
    a = t(make.boxes(20)).to(device, dtype)
    b = t(make.boxes(7)).to(device, dtype)
    strided = a.t().contiguous().t()  # same values, column-major
    batched = (t(make.boxes(30)).to(device, dtype).view(2, 15, 4), b.expand(2, 7, 4))
    for name in PAIRWISE:
        op = getattr(torch.ops.fastdet, name)
        eps = (1e-7,) if name in ("distance_box_iou", "complete_box_iou") else ()
        for args in [(a, b), (b, a), (a[:0], b), (strided, b), batched]:
            torch.library.opcheck(op, args + eps)
        assert torch.equal(op(strided, b, *eps), op(a, b, *eps))
    for args in [(a,), (a[:0],), (strided,), (batched[0],)]:
        torch.library.opcheck(torch.ops.fastdet.box_area, args)
    assert torch.equal(torch.ops.fastdet.box_area(strided), torch.ops.fastdet.box_area(a))


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.int16, torch.int32, torch.int64], ids=str
)
def test_custom_ops_take_every_dtype_the_public_functions_take(dtype, device, make):
    a = t(make.boxes(9, np.float64)).to(device, dtype)
    b = t(make.boxes(5, np.float64)).to(device, dtype)
    for name in PAIRWISE:
        eps = (1e-7,) if name in ("distance_box_iou", "complete_box_iou") else ()
        op = getattr(torch.ops.fastdet, name)
        torch.library.opcheck(op, (a, b) + eps)
        assert torch.equal(op(a, b, *eps), getattr(ops, name)(a, b))
    torch.library.opcheck(torch.ops.fastdet.box_area, (a,))
    assert torch.equal(torch.ops.fastdet.box_area(a), ops.box_area(a))


def test_concurrent_threads_match_sequential_calls(make, concurrently):
    inputs = [(t(make.boxes(400 + 37 * i)), t(make.clustered(300 + 11 * i))) for i in range(8)]
    want = [ops.box_iou(a, b) for a, b in inputs]
    got = concurrently(ops.box_iou, inputs)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


coord = st.integers(-20, 20).map(float)
box = st.tuples(coord, coord, coord, coord).map(list)  # includes inverted and zero-area boxes
box_lists = st.lists(box, min_size=0, max_size=12)


@settings(max_examples=80, deadline=None)
@given(box_lists, box_lists)
def test_iou_properties_hold_for_any_boxes(a, b):
    a = np.array(a, np.float64).reshape(-1, 4)
    b = np.array(b, np.float64).reshape(-1, 4)
    iou = ops.box_iou(a, b)
    np.testing.assert_allclose(iou, reference.box_iou(a, b), rtol=1e-12, atol=0)
    assert np.isfinite(iou).all() and (iou >= 0).all() and (iou <= 1).all()
    np.testing.assert_array_equal(iou, ops.box_iou(b, a).T)
    giou = ops.generalized_box_iou(a, b)
    np.testing.assert_allclose(giou, reference.generalized_box_iou(a, b), rtol=1e-12, atol=1e-15)
    assert np.isfinite(giou).all() and (giou >= -1).all() and (giou <= iou + 1e-12).all()


# --- torchvision 0.29's API: integer boxes, fmt=, batched boxes -------------------------------

INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


def int_boxes(make, n, dtype, hi=100):
    """[n, 4] integer boxes (some inverted, some empty) that fit every integer dtype."""
    b = make.rng.integers(0, hi, (n, 4))
    b[: n // 2, 2:] = b[: n // 2, :2] + make.rng.integers(0, hi // 2, (n // 2, 2))
    return torch.from_numpy(b % 127).to(dtype)


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("op", PAIRWISE)
def test_integer_boxes_give_torchvisions_dtype_and_values(op, dtype, device, make, tv):
    a, b = int_boxes(make, 23, dtype).to(device), int_boxes(make, 17, dtype).to(device)
    got = getattr(ops, op)(a, b)
    assert got.dtype == torch.float32 and got.device.type == device  # torchvision's dtype
    # The integers computed in float64, rounded once; torchvision's (signed areas, NaN for
    # empty pairs) agrees wherever both boxes are proper.
    want = getattr(ops, op)(a.double(), b.double()).float()
    assert torch.equal(got, want)
    proper_a = ((a[:, 2:] > a[:, :2]).all(1)).cpu()
    proper_b = ((b[:, 2:] > b[:, :2]).all(1)).cpu()
    theirs = getattr(tv.ops, op)(a.cpu().to(torch.int64), b.cpu().to(torch.int64))
    torch.testing.assert_close(
        got.cpu()[proper_a][:, proper_b], theirs[proper_a][:, proper_b], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_box_area_of_integer_boxes_has_torchvisions_dtype(dtype, device, make, tv):
    b = int_boxes(make, 31, dtype).to(device)
    got = ops.box_area(b)
    want = tv.ops.box_area(b.cpu())
    assert got.dtype == want.dtype  # int32, or int64 for int64 boxes
    proper = (b[:, 2:] >= b[:, :2]).all(1).cpu()
    assert torch.equal(got.cpu()[proper], want[proper])
    assert (got.cpu()[~proper] == 0).all()  # inverted: 0 (torchvision: signed)


def test_torchvisions_own_integer_cases(tv):
    # test_ops.py's INT_BOXES / INT_BOXES2 and the expected values it lists for each op.
    boxes1 = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300], [0, 0, 25, 25]]
    boxes2 = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300]]
    for dtype in (torch.int16, torch.int32, torch.int64):
        a, b = torch.tensor(boxes1, dtype=dtype), torch.tensor(boxes2, dtype=dtype)
        for op in PAIRWISE:
            torch.testing.assert_close(getattr(ops, op)(a, b), getattr(tv.ops, op)(a, b))
        assert torch.equal(ops.box_area(a), tv.ops.box_area(a))


def test_numpy_integer_boxes():
    a = np.array([[0, 0, 4, 2], [1, 1, 3, 3]], np.int32)
    got = ops.box_iou(a, a)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, [[1.0, 2 / 10], [2 / 10, 1.0]], rtol=1e-7)
    area = ops.box_area(a.astype(np.int16))
    assert area.dtype == np.int32 and area.tolist() == [8, 4]
    assert ops.box_area(a.astype(np.int64)).dtype == np.int64


@pytest.mark.parametrize(
    "d1,d2,want",
    [
        (torch.int64, torch.float64, torch.float64),
        (torch.int32, torch.float32, torch.float32),
        (torch.int16, torch.float16, torch.float32),
        (torch.float16, torch.float32, torch.float32),
        (torch.float16, torch.float16, torch.float16),  # fastdet: the boxes' dtype
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
    ],
    ids=str,
)
def test_result_dtype_of_mixed_inputs(d1, d2, want, make):
    a, b = t(make.boxes(4)).to(d1), t(make.boxes(3)).to(d2)
    for op in PAIRWISE:
        assert getattr(ops, op)(a, b).dtype == want
        assert getattr(ops, op)(b, a).dtype == want


@pytest.mark.parametrize(
    "shape1,shape2",
    [
        ((3, 7, 4), (3, 5, 4)),
        ((3, 7, 4), (5, 4)),
        ((6, 4), (2, 3, 5, 4)),
        ((2, 1, 7, 4), (3, 5, 4)),
    ],
)
@pytest.mark.parametrize("op", PAIRWISE)
def test_batched_boxes_broadcast_as_torchvision(op, shape1, shape2, device, make, tv):
    a = t(make.boxes(int(np.prod(shape1[:-1])), np.float64).reshape(shape1)).to(device)
    b = t(make.boxes(int(np.prod(shape2[:-1])), np.float64).reshape(shape2)).to(device)
    got = getattr(ops, op)(a, b)
    want = getattr(tv.ops, op)(a, b)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **tol(op, np.float64))
    # each batch element is the unbatched op on its pair
    lead = got.shape[:-2]
    aa, bb = a.expand(lead + a.shape[-2:]), b.expand(lead + b.shape[-2:])
    for i in np.ndindex(*lead):
        assert torch.equal(got[i], getattr(ops, op)(aa[i], bb[i]))


@pytest.mark.parametrize("op", PAIRWISE)
def test_batched_numpy_boxes(op, make):
    a = make.boxes(2 * 3 * 6).reshape(2, 3, 6, 4)
    b = make.boxes(5).reshape(5, 4)
    got = getattr(ops, op)(a, b)
    assert isinstance(got, np.ndarray) and got.shape == (2, 3, 6, 5)
    assert np.array_equal(got[1, 2], getattr(ops, op)(a[1, 2], b))


def test_batched_boxes_that_do_not_broadcast_raise():
    with pytest.raises(ops.ShapeError, match="leading dimensions do not broadcast"):
        ops.box_iou(torch.zeros(2, 3, 4), torch.zeros(3, 5, 4))


def test_batched_empty_dimensions(make):
    a = t(make.boxes(6)).view(2, 3, 4)
    assert ops.box_iou(a[:0], a[:1]).shape == (0, 3, 3)
    assert ops.complete_box_iou(a, a[:, :0]).shape == (2, 3, 0)
    assert ops.box_area(a[:, :0]).shape == (2, 0)


FORMATS = ["xyxy", "xywh", "cxcywh"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64], ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
def test_fmt_matches_torchvision(fmt, dtype, device, make, tv):
    xyxy = t(make.boxes(40, np.float64)).round()
    a = tv.ops.box_convert(xyxy, "xyxy", fmt).to(device, dtype)
    b = tv.ops.box_convert(xyxy.flip(0), "xyxy", fmt).to(device, dtype)
    got = ops.box_iou(a, b, fmt=fmt)
    torch.testing.assert_close(got, tv.ops.box_iou(a, b, fmt=fmt), rtol=1e-6, atol=1e-7)
    assert got.dtype == tv.ops.box_iou(a.cpu(), b.cpu(), fmt=fmt).dtype
    area = ops.box_area(a, fmt=fmt)
    want = tv.ops.box_area(a, fmt=fmt)
    assert area.dtype == want.dtype
    torch.testing.assert_close(area, want, rtol=1e-12, atol=0)


def test_fmt_on_numpy_and_batched(make):
    a = make.boxes(12).reshape(3, 4, 4)
    for fmt in FORMATS:
        conv = ops.box_convert(a, "xyxy", fmt)
        np.testing.assert_allclose(ops.box_iou(conv, conv, fmt=fmt), ops.box_iou(a, a), atol=1e-5)


def test_area_in_wh_formats_clamps_negative_sides():
    b = torch.tensor([[5.0, 5.0, -2.0, 3.0], [0.0, 0.0, 2.0, 3.0]])
    assert ops.box_area(b, fmt="xywh").tolist() == [0.0, 6.0]
    assert ops.box_area(b, fmt="cxcywh").tolist() == [0.0, 6.0]
    assert ops.box_area(b.half(), fmt="xywh").dtype == torch.float16


@pytest.mark.parametrize("fmt", ["xxyy", "XYXY", ""])
def test_unknown_fmt_raises_value_error(fmt):
    with pytest.raises(ValueError, match="Unsupported format"):
        ops.box_iou(torch.zeros(1, 4), torch.zeros(1, 4), fmt=fmt)
    with pytest.raises(ValueError, match="Unsupported format"):
        ops.box_area(torch.zeros(1, 4), fmt=fmt)


@pytest.mark.parametrize("fmt", ["xywhr", "cxcywhr", "xyxyxyxy"])
def test_rotated_fmt_is_box_iou_rotateds(fmt):
    from fastdet.ops.box_iou import IOU_BY_FORMAT

    if fmt in IOU_BY_FORMAT:
        pytest.skip("rotated boxes are present in this build (fastdet.ops.rotated)")
    with pytest.raises(ValueError, match="rotated-box format.*box_iou_rotated"):
        ops.box_iou(torch.zeros(1, 5), torch.zeros(1, 5), fmt=fmt)


# --- DIoU and CIoU ---------------------------------------------------------------------------


def test_diou_and_ciou_of_one_pair():
    a = torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 1.0, 6.0, 2.0]], dtype=torch.float64)
    iou = 2 / 10
    # centres (2, 1) and (4, 1.5); hull 6 x 2
    d2, c2 = 2.0**2 + 0.5**2, 6.0**2 + 2.0**2
    diou = iou - d2 / (c2 + 1e-7)
    assert ops.distance_box_iou(a, b).item() == pytest.approx(diou, rel=1e-15)
    v = 4 / np.pi**2 * (np.arctan(4 / 2) - np.arctan(4 / 1)) ** 2
    ciou = diou - v / (1 - iou + v + 1e-7) * v
    assert ops.complete_box_iou(a, b).item() == pytest.approx(ciou, rel=1e-14)
    assert ops.distance_box_iou(a, b, eps=0.5).item() == pytest.approx(iou - d2 / (c2 + 0.5))


@pytest.mark.parametrize("op", ["distance_box_iou", "complete_box_iou"])
def test_diou_ciou_of_degenerate_boxes_are_finite_and_match_reference(op):
    d = torch.cat([DEGENERATE, torch.tensor([[0.0, 0.0, 10.0, 10.0], [3.0, 3.0, 3.0, 9.0]])])
    for eps in (1e-7, 0.0):
        got = getattr(ops, op)(d, d, eps=eps)
        assert torch.isfinite(got).all()
        np.testing.assert_allclose(
            got.numpy(), getattr(reference, op)(d.numpy(), d.numpy(), eps), rtol=1e-6, atol=1e-7
        )


@pytest.mark.parametrize("op", ["distance_box_iou", "complete_box_iou"])
def test_diou_ciou_bounds(op, make):
    a, b = t(make.clustered(200, np.float64)), t(make.boxes(150, np.float64))
    got = getattr(ops, op)(a, b)
    low = -1 if op == "distance_box_iou" else -2  # CIoU subtracts alpha v <= 1 more
    assert (got >= low).all() and (got <= ops.box_iou(a, b) + 1e-12).all()


# --- GPU ------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", PAIRWISE)
def test_batched_and_narrow_on_gpu_match_cpu(op, dtype, make):
    # m <= 256 takes the flat path, m > 256 the register path; odd sizes leave n * m unaligned
    # across batch elements (scalar stores), even ones keep it aligned.
    for lead, n, m in [
        ((), 33, 7),
        ((3,), 33, 7),
        ((2, 2), 12, 8),
        ((3,), 5, 300),
        ((2,), 64, 256),
    ]:
        a = t(make.boxes(int(np.prod(lead, dtype=int)) * n, np.float64)).view(*lead, n, 4)
        b = t(make.boxes(int(np.prod(lead, dtype=int)) * m, np.float64)).view(*lead, m, 4)
        a, b = a.to(dtype), b.to(dtype)
        got = getattr(ops, op)(a.cuda(), b.cuda()).cpu()
        want = getattr(ops, op)(a, b)
        rel = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(got, want, rtol=rel, atol=rel)


@pytest.mark.gpu
@pytest.mark.parametrize("op", PAIRWISE)
def test_integer_and_half_boxes_on_gpu(op, make):
    for dtype in (torch.int32, torch.float16):
        a = int_boxes(make, 40, dtype) if dtype == torch.int32 else t(make.boxes(40)).half()
        got = getattr(ops, op)(a.cuda(), a.cuda())
        assert got.dtype == getattr(ops, op)(a, a).dtype
        torch.testing.assert_close(got.cpu(), getattr(ops, op)(a, a), rtol=1e-3, atol=1e-3)


# --- found by tests/ops/test_fuzz.py ----------------------------------------------------------


@pytest.mark.parametrize("fmt", [None, ["xyxy"], 3, "XYXY"])
def test_bad_fmt_names_fmt(fmt):
    b = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="box_iou: fmt: Unsupported format"):
        ops.box_iou(b, b, fmt=fmt)
    with pytest.raises(ValueError, match="box_area: fmt: Unsupported format"):
        ops.box_area(b, fmt=fmt)


def test_rotated_fmt_in_box_area_names_the_rotated_ops():
    with pytest.raises(ValueError, match="fmt 'xywhr' is a rotated-box format.*box_iou_rotated"):
        ops.box_area(torch.zeros(1, 5), fmt="xywhr")


def test_converted_boxes_errors_name_boxes1_and_boxes2():
    good, bad = torch.zeros(1, 4), torch.tensor([[0.0, 0.0, float("nan"), 1.0]])
    with pytest.raises(ValueError, match="boxes2 contains NaN or inf"):
        ops.box_iou(good, bad, fmt="xywh")
    with pytest.raises(ValueError, match="boxes1 contains NaN or inf"):
        ops.box_iou(bad, good, fmt="cxcywh")


@pytest.mark.parametrize("op", ["distance_box_iou", "complete_box_iou"])
def test_bad_eps_raises_naming_eps(op, bad_eps, make):
    eps, error = bad_eps
    b = make.boxes(3, np.float32)
    for x in (torch.from_numpy(b), b):  # torch: was float()'s bare TypeError; numpy: pybind's
        with pytest.raises(error, match="eps"):
            getattr(ops, op)(x, x, eps=eps)


@pytest.mark.parametrize("fmt", ["xyxy", "xywh"])
def test_integer_areas_beyond_their_dtype_raise(fmt):
    # torchvision's int32 area of this box wraps around to 1410065408
    b = torch.tensor([[0, 0, 100_000, 100_000]], dtype=torch.int32)
    with pytest.raises(ValueError, match="boxes has an area of 1e\\+10, beyond int32"):
        ops.box_area(b, fmt=fmt)
    with pytest.raises(ValueError, match="beyond int32"):
        ops.box_area(b.numpy(), fmt=fmt)
    assert ops.box_area(b.long(), fmt=fmt).tolist() == [10_000_000_000]
    big = torch.tensor([[-(2**62), 0, 2**62, 2]], dtype=torch.int64)  # 2^64: beyond int64
    with pytest.raises(ValueError, match="beyond int64"):
        ops.box_area(big)
    # the largest int32 area is exact
    edge = torch.tensor([[0, 0, 2**31 - 1, 1]], dtype=torch.int32)
    assert ops.box_area(edge).tolist() == [2**31 - 1]
