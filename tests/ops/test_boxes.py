"""clip_boxes_to_image and remove_small_boxes against the reference and torchvision.ops."""

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.ops import _reference as reference

DTYPES = [np.float32, np.float64]


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def spilling_boxes(make, n, dtype=np.float32):
    """Boxes of which many reach past every edge of an 800 x 600 (h x w) image."""
    return make.boxes(n, dtype, image=1000.0, lo=4.0, hi=400.0) - 200.0


# --- clip_boxes_to_image ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_matches_torchvision_and_reference(dtype, device, make, tv):
    b = spilling_boxes(make, 500, dtype)
    got = ops.clip_boxes_to_image(t(b).to(device), (800, 600))
    assert got.shape == (500, 4) and got.dtype == t(b).dtype and got.device.type == device
    assert torch.equal(got, tv.ops.clip_boxes_to_image(t(b).to(device), (800, 600)))
    np.testing.assert_array_equal(got.cpu().numpy(), reference.clip_boxes_to_image(b, (800, 600)))


def test_clip_uses_height_then_width():
    b = torch.tensor([[-5.0, -5.0, 1000.0, 1000.0]])
    assert ops.clip_boxes_to_image(b, (30, 70)).tolist() == [[0.0, 0.0, 70.0, 30.0]]


def test_clip_boxes_of_any_leading_shape(make, tv):
    b = spilling_boxes(make, 24).reshape(2, 3, 4, 4)
    got = ops.clip_boxes_to_image(t(b), (800, 600))
    assert got.shape == (2, 3, 4, 4)
    assert torch.equal(got, tv.ops.clip_boxes_to_image(t(b), (800, 600)))


def test_clip_one_box_of_shape_4():
    got = ops.clip_boxes_to_image(torch.tensor([-1.0, 2.0, 50.0, 60.0]), (40, 30))
    assert got.tolist() == [0.0, 2.0, 30.0, 40.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_numpy_in_numpy_out(dtype, make):
    b = spilling_boxes(make, 50, dtype)
    got = ops.clip_boxes_to_image(b, (800, 600))
    assert isinstance(got, np.ndarray) and got.dtype == dtype
    np.testing.assert_array_equal(got, reference.clip_boxes_to_image(b, (800, 600)))


def test_clip_does_not_modify_its_input(make):
    b = t(spilling_boxes(make, 50))
    before = b.clone()
    ops.clip_boxes_to_image(b, (800, 600))
    assert torch.equal(b, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_clip_half_precision(dtype, make, tv):
    b = t(spilling_boxes(make, 50)).to(dtype)
    got = ops.clip_boxes_to_image(b, (800, 600))
    assert got.dtype == dtype
    assert torch.equal(got, tv.ops.clip_boxes_to_image(b, (800, 600)))


def test_clip_empty():
    got = ops.clip_boxes_to_image(torch.zeros(0, 4, dtype=torch.float64), (10, 10))
    assert got.shape == (0, 4) and got.dtype == torch.float64
    got = ops.clip_boxes_to_image(np.zeros((0, 4), np.float32), (10, 10))
    assert isinstance(got, np.ndarray) and got.shape == (0, 4) and got.dtype == np.float32


def test_clip_huge_and_negative_coordinates():
    b = np.array([[-1e8, -1e7, 1e8, 1e6], [-3.0, -4.0, -1.0, -2.0]], np.float64)
    got = ops.clip_boxes_to_image(b, (512.5, 256.25))
    np.testing.assert_array_equal(got, [[0, 0, 256.25, 512.5], [0, 0, 0, 0]])


def test_clip_non_contiguous(make):
    b = spilling_boxes(make, 60)
    want = ops.clip_boxes_to_image(t(b), (800, 600))
    assert torch.equal(ops.clip_boxes_to_image(t(b.T.copy()).T, (800, 600)), want)
    sliced = np.concatenate([b, b], 1)[:, 4:]
    np.testing.assert_array_equal(ops.clip_boxes_to_image(sliced, (800, 600)), want.numpy())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_clip_non_finite_coordinates_raise(bad, make):
    b = make.boxes(3)
    b[1, 1] = bad
    with pytest.raises(ValueError, match="boxes"):
        ops.clip_boxes_to_image(t(b), (800, 600))


def test_clip_wrong_dtype_shape_and_size_raise():
    with pytest.raises(TypeError, match="boxes must be float16.*int64"):
        ops.clip_boxes_to_image(torch.zeros(2, 4, dtype=torch.int64), (10, 10))
    with pytest.raises(ValueError, match=r"boxes must have shape \[\.\.\., 4\], got \(2, 5\)"):
        ops.clip_boxes_to_image(torch.zeros(2, 5), (10, 10))
    with pytest.raises(ValueError, match=r"size must be \(height, width\), got \(10, 10, 3\)"):
        ops.clip_boxes_to_image(torch.zeros(2, 4), (10, 10, 3))
    with pytest.raises(
        TypeError, match="boxes must be a torch.Tensor, numpy.ndarray or cupy.*got list"
    ):
        ops.clip_boxes_to_image([[0.0, 0.0, 1.0, 1.0]], (10, 10))


def test_clip_compiles(make):
    b = t(spilling_boxes(make, 100))
    f = lambda x: ops.clip_boxes_to_image(x, (800, 600))  # noqa: E731
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(b), f(b))


# --- remove_small_boxes -------------------------------------------------------------------


@pytest.mark.parametrize("min_size", [1.0, 20.0, 40.0, 60.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_remove_small_matches_torchvision_and_reference(dtype, min_size, device, make, tv):
    b = make.boxes(500, dtype, lo=0.0, hi=100.0)
    got = ops.remove_small_boxes(t(b).to(device), min_size)
    assert got.dtype == torch.int64 and got.device.type == device
    assert torch.equal(got, tv.ops.remove_small_boxes(t(b).to(device), min_size))
    np.testing.assert_array_equal(got.cpu().numpy(), reference.remove_small_boxes(b, min_size))


def test_remove_small_keeps_sides_equal_to_min_size(tv):
    b = torch.tensor(
        [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 1.5], [0.0, 0.0, 1.5, 2.0], [1.0, 1.0, 4.0, 3.0]]
    )
    assert ops.remove_small_boxes(b, 2.0).tolist() == [0, 3]
    assert torch.equal(ops.remove_small_boxes(b, 2.0), tv.ops.remove_small_boxes(b, 2.0))


def test_remove_small_drops_inverted_and_empty_boxes():
    b = np.array([[5, 5, 1, 1], [0, 0, 0, 0], [0, 0, 3, 3]], np.float32)
    np.testing.assert_array_equal(ops.remove_small_boxes(b, 0.5), [2])
    np.testing.assert_array_equal(ops.remove_small_boxes(b, 0.0), [1, 2])  # 0 >= 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_remove_small_numpy_in_numpy_out(dtype, make):
    b = make.boxes(100, dtype, lo=0.0, hi=50.0)
    got = ops.remove_small_boxes(b, 25.0)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, reference.remove_small_boxes(b, 25.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_remove_small_half_precision_is_computed_in_float32(dtype, make):
    b = t(make.boxes(100, lo=0.0, hi=50.0)).to(dtype)
    got = ops.remove_small_boxes(b, 25.0)
    assert torch.equal(got, ops.remove_small_boxes(b.float(), 25.0))
    np.testing.assert_array_equal(
        got.numpy(), reference.remove_small_boxes(b.float().numpy(), 25.0)
    )


def test_remove_small_empty():
    got = ops.remove_small_boxes(torch.zeros(0, 4), 1.0)
    assert got.shape == (0,) and got.dtype == torch.int64
    got = ops.remove_small_boxes(np.zeros((0, 4), np.float64), 1.0)
    assert isinstance(got, np.ndarray) and got.shape == (0,) and got.dtype == np.int64


def test_remove_small_huge_and_negative_coordinates(make, tv):
    huge = make.boxes(50, np.float64, image=1e8, lo=1e5, hi=1e7)
    b = np.concatenate([huge, make.boxes(50, np.float64) - 1e4])
    got = ops.remove_small_boxes(b, 50.0)
    np.testing.assert_array_equal(got, reference.remove_small_boxes(b, 50.0))
    assert torch.equal(t(got), tv.ops.remove_small_boxes(t(b), 50.0))


def test_remove_small_non_contiguous(make):
    b = make.boxes(100, lo=0.0, hi=50.0)
    want = ops.remove_small_boxes(t(b), 25.0)
    assert torch.equal(ops.remove_small_boxes(t(b.T.copy()).T, 25.0), want)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_remove_small_non_finite_coordinates_raise(bad, make):
    b = make.boxes(3)
    b[0, 2] = bad
    with pytest.raises(ValueError, match="boxes"):
        ops.remove_small_boxes(t(b), 1.0)


def test_remove_small_wrong_dtype_and_shape_raise():
    with pytest.raises(TypeError, match="boxes must be float16.*int32"):
        ops.remove_small_boxes(torch.zeros(2, 4, dtype=torch.int32), 1.0)
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \(2, 2, 4\)"):
        ops.remove_small_boxes(torch.zeros(2, 2, 4), 1.0)


def test_remove_small_compiles_with_a_data_dependent_output_size(make):
    b = t(make.boxes(200, lo=0.0, hi=50.0))

    def f(boxes):
        keep = ops.remove_small_boxes(boxes, 25.0)
        return keep, boxes[keep]

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(b), f(b)):
        assert torch.equal(got, want)


def test_detection_postprocess_compiles(make):
    # decode -> clip -> remove small -> batched_nms, as a detector's head does, in one graph.
    anchors = t(make.boxes(300))
    deltas = t(make.rng.normal(0, 0.5, (300, 4)).astype(np.float32))
    scores, labels = t(make.scores(300)), t(make.classes(300, 3))
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))

    def post(deltas, anchors, scores, labels):
        boxes = ops.clip_boxes_to_image(coder.decode_single(deltas, anchors), (800, 800))
        keep = ops.remove_small_boxes(boxes, 8.0)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = ops.batched_nms(boxes, scores, labels, 0.5)
        return boxes[keep], scores[keep], labels[keep], ops.box_area(boxes[keep])

    compiled = torch.compile(post, backend="aot_eager", fullgraph=True)
    for got, want in zip(
        compiled(deltas, anchors, scores, labels), post(deltas, anchors, scores, labels)
    ):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_custom_ops_pass_opcheck(dtype, device, make):
    b = t(spilling_boxes(make, 60)).to(device, dtype)
    strided = b.t().contiguous().t()  # same values, column-major
    for args in [(b, 800.0, 600.0), (b.reshape(3, 5, 4, 4), 800.0, 600.0), (b[:0], 8.0, 6.0)]:
        torch.library.opcheck(torch.ops.fastdet.clip_boxes_to_image, args)
    torch.library.opcheck(torch.ops.fastdet.clip_boxes_to_image, (strided, 800.0, 600.0))
    for args in [(b, 40.0), (b, 0.0), (b[:0], 1.0), (strided, 40.0)]:
        torch.library.opcheck(torch.ops.fastdet.remove_small_boxes, args)
    F = torch.ops.fastdet
    assert torch.equal(
        F.clip_boxes_to_image(strided, 800.0, 600.0), F.clip_boxes_to_image(b, 800.0, 600.0)
    )
    assert torch.equal(F.remove_small_boxes(strided, 40.0), F.remove_small_boxes(b, 40.0))


# --- masks_to_boxes ---------------------------------------------------------------------------


def random_masks(rng, n, h, w):
    """[n, h, w] bool masks: a random blob per mask, some empty, one a single pixel."""
    m = np.zeros((n, h, w), bool)
    for i in range(n):
        if i % 5 == 4:
            continue  # empty
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
        m[i, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.3
    m[0] = False
    m[0, rng.integers(0, h), rng.integers(0, w)] = True
    return m


@pytest.mark.parametrize(
    "dtype", [torch.bool, torch.uint8, torch.int64, torch.float16, torch.float32], ids=str
)
def test_masks_to_boxes_matches_torchvision(dtype, rng, device, tv):
    m = torch.from_numpy(random_masks(rng, 23, 37, 51)).to(device, dtype)
    got = ops.masks_to_boxes(m)
    assert got.dtype == torch.float32 and got.device.type == device
    assert torch.equal(got, tv.ops.masks_to_boxes(m))


def test_masks_to_boxes_edges(tv):
    m = torch.zeros(3, 4, 6)
    m[1, 3, 5] = 1  # the last pixel
    m[2, :, 2] = float("nan")  # NaN counts as set, as torchvision's masks.bool()
    got = ops.masks_to_boxes(m)
    assert got.tolist() == [[0, 0, 0, 0], [5, 3, 5, 3], [2, 0, 2, 3]]
    assert torch.equal(got, tv.ops.masks_to_boxes(m))
    assert ops.masks_to_boxes(torch.zeros(0, 4, 6)).shape == (0, 4)
    # no pixels: one zero box per mask (torchvision returns none)
    assert torch.equal(ops.masks_to_boxes(torch.zeros(3, 0, 6)), torch.zeros(3, 4))


def test_masks_to_boxes_numpy_and_errors(rng):
    m = random_masks(rng, 6, 9, 7)
    got = ops.masks_to_boxes(m)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, ops.masks_to_boxes(torch.from_numpy(m)).numpy())
    with pytest.raises(ops.ShapeError, match=r"masks must have shape \[N, H, W\], got \(9, 7\)"):
        ops.masks_to_boxes(m[0])
    with pytest.raises(TypeError, match="masks must be a torch.Tensor"):
        ops.masks_to_boxes([[0, 1]])


def test_masks_to_boxes_compiles(rng):
    m = torch.from_numpy(random_masks(rng, 5, 8, 8))
    f = torch.compile(ops.masks_to_boxes, fullgraph=True, backend="aot_eager")
    assert torch.equal(f(m), ops.masks_to_boxes(m))
