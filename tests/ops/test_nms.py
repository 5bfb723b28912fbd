"""nms and batched_nms against the reference and torchvision.ops."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdet import _C, ops
from fastdet.ops import _arrays as arrays
from fastdet.ops import _reference as reference

DTYPES = [np.float32, np.float64]


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def both_kept(boxes, threshold, dtype):
    """How many of two boxes nms keeps (fastdet, torchvision, reference must agree)."""
    tv = pytest.importorskip("torchvision")
    b = np.asarray(boxes, dtype)
    s = np.array([0.9, 0.8], dtype)
    got = ops.nms(t(b), t(s), threshold)
    assert torch.equal(got, tv.ops.nms(t(b), t(s), threshold))
    assert np.array_equal(got.numpy(), reference.nms(b, s, threshold))
    return len(got)


# --- nms: random inputs -------------------------------------------------------------------


# (device, n, dtype): on the GPU also sizes around its 64-box tiles, and float32 only
# (torchvision's CUDA nms compares float64 IoUs with a float32 threshold).
NMS_AGAINST_TORCHVISION = [("cpu", n, dtype) for n in (1000, 6000) for dtype in DTYPES] + [
    pytest.param("cuda", n, np.float32, marks=pytest.mark.gpu)
    for n in (1, 63, 64, 65, 1000, 6000, 20000)
]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("device,n,dtype", NMS_AGAINST_TORCHVISION)
def test_nms_keeps_exactly_torchvisions_indices(device, n, dtype, threshold, make, tv):
    b, s = t(make.boxes(n, dtype)).to(device), t(make.scores(n, dtype)).to(device)
    got = ops.nms(b, s, threshold)
    assert got.device.type == device and got.dtype == torch.int64
    assert torch.equal(got.cpu(), tv.ops.nms(b, s, threshold).cpu())
    if device != "cpu":  # and as the CPU kernel
        assert torch.equal(got.cpu(), ops.nms(b.cpu(), s.cpu(), threshold))


@pytest.mark.gpu
@pytest.mark.parametrize("n", [100_000, 200_000])
def test_nms_large_on_gpu_matches_cpu(n, make):
    b, s = t(make.boxes(n, image=3000.0)), t(make.scores(n))
    assert torch.equal(ops.nms(b.cuda(), s.cuda(), 0.7).cpu(), ops.nms(b, s, 0.7))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_on_clustered_boxes_matches_torchvision_and_reference(threshold, dtype, make, tv):
    b, s = make.clustered(2000, dtype), make.scores(2000, dtype)
    got = ops.nms(t(b), t(s), threshold)
    assert torch.equal(got, tv.ops.nms(t(b), t(s), threshold))
    assert np.array_equal(got.numpy(), reference.nms(b, s, threshold))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_matches_reference_on_boxes_of_many_scales(dtype, make):
    rng = make.rng
    xy = rng.uniform(0, 1000, (800, 2))
    wh = np.exp(rng.uniform(np.log(0.01), np.log(1000), (800, 2)))  # tiny to image-sized
    b = np.concatenate([xy, xy + wh], 1).astype(dtype)
    s = make.scores(800, dtype)
    for threshold in (0.0, 0.05, 0.5, 0.95):
        assert np.array_equal(ops.nms(b, s, threshold), reference.nms(b, s, threshold))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_numpy_in_numpy_out(dtype, make):
    b, s = make.clustered(300, dtype), make.scores(300, dtype)
    got = ops.nms(b, s, 0.5)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, reference.nms(b, s, 0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nms_half_precision_is_computed_in_float32(dtype, make):
    b = t(make.clustered(200)).to(dtype)
    s = t(make.scores(200)).to(dtype)  # distinct in bfloat16 too (k / 256)
    got = ops.nms(b, s, 0.5)
    assert got.dtype == torch.int64
    assert torch.equal(got, ops.nms(b.float(), s.float(), 0.5))
    assert np.array_equal(got.numpy(), reference.nms(b.float().numpy(), s.float().numpy(), 0.5))


def test_nms_numpy_float16(make):
    b, s = make.clustered(100, np.float16), make.scores(100, np.float16)
    np.testing.assert_array_equal(
        ops.nms(b, s, 0.5), reference.nms(b.astype(np.float32), s.astype(np.float32), 0.5)
    )


def test_nms_mixed_precision_scores(make):
    b, s = make.clustered(100, np.float32), make.scores(100, np.float64)
    np.testing.assert_array_equal(
        ops.nms(t(b), t(s), 0.5).numpy(), reference.nms(b.astype(np.float64), s, 0.5)
    )


# --- nms: constructed cases ---------------------------------------------------------------


def test_nms_empty_input_gives_empty_int64():
    got = ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert got.shape == (0,) and got.dtype == torch.int64
    got = ops.nms(np.zeros((0, 4), np.float64), np.zeros(0, np.float64), 0.5)
    assert isinstance(got, np.ndarray) and got.shape == (0,) and got.dtype == np.int64


def test_float64_ties_keep_the_lower_index_and_no_boxes_give_none(device):
    b = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float64)
    s = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    assert ops.nms(b.to(device), s.to(device), 0.5).tolist() == [0, 2]
    e = ops.nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5)
    assert e.shape == (0,) and e.device.type == device


def test_nms_one_box_is_kept():
    assert ops.nms(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.3]), 0.5).tolist() == [0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_iou_exactly_at_threshold_is_not_suppressed(dtype):
    boxes = [[0, 0, 3, 1], [1, 0, 4, 1]]  # inter 2, union 4: IoU exactly 0.5 in binary
    assert both_kept(boxes, 0.5, dtype) == 2  # 0.5 > 0.5 is false
    assert both_kept(boxes, np.nextafter(0.5, 0), dtype) == 1
    assert both_kept(boxes, np.nextafter(0.5, 1), dtype) == 2


def test_threshold_is_compared_in_double_against_the_rounded_iou():
    boxes = [[0, 0, 2, 1], [1, 0, 3, 1]]  # IoU 1/3
    # float32(1/3) = 0.3333333432... > 1/3: suppressed; in float64 IoU == 1/3: kept.
    assert both_kept(boxes, 1 / 3, np.float32) == 1
    assert both_kept(boxes, 1 / 3, np.float64) == 2
    boxes = [[0, 0, 8.5, 1], [1.5, 0, 10, 1]]  # inter 7, union 10: IoU 0.7
    # float32(0.7) = 0.6999999881... < 0.7: kept.
    assert both_kept(boxes, 0.7, np.float32) == 2
    assert both_kept(boxes, 0.7, np.float64) == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_decisions_at_the_threshold_are_bit_identical_to_torchvision(dtype, make):
    # Random overlapping pairs with non-integer coordinates; the threshold is set to their IoU
    # as torchvision computes it (kept) and to the next value below (suppressed).
    rng = make.rng
    for _ in range(100):
        a = rng.uniform(0, 100, 2)
        wa = rng.uniform(5, 50, 2)
        b = a + rng.uniform(-2, 2, 2)
        wb = wa * rng.uniform(0.8, 1.2, 2)  # >= 4: the boxes overlap
        pair = np.array([np.r_[a, a + wa], np.r_[b, b + wb]], dtype)
        iou = reference.ious_with(pair[:1], pair[1])[0]
        assert iou > 0
        assert both_kept(pair, float(iou), dtype) == 2
        assert both_kept(pair, float(np.nextafter(iou, dtype(0))), dtype) == 1


def test_identical_boxes_keep_only_the_best():
    b = torch.tensor([[10.0, 10.0, 20.0, 20.0]] * 5)
    s = torch.tensor([0.1, 0.5, 0.9, 0.3, 0.2])
    assert ops.nms(b, s, 0.5).tolist() == [2]
    assert ops.nms(b, s, 0.99).tolist() == [2]


def test_tied_scores_keep_the_lower_index_first():
    b = torch.tensor([[10.0, 10.0, 20.0, 20.0]] * 4 + [[100.0, 100.0, 110.0, 110.0]] * 2)
    s = torch.tensor([0.5, 0.7, 0.7, 0.7, 0.7, 0.7])
    assert ops.nms(b, s, 0.5).tolist() == [1, 4]
    disjoint = torch.arange(6.0)[:, None] * 20 + torch.tensor([0.0, 0.0, 10.0, 10.0])
    assert ops.nms(disjoint, torch.ones(6), 0.5).tolist() == [0, 1, 2, 3, 4, 5]


def test_tied_scores_match_the_stable_reference(make):
    b = make.clustered(1000)
    s = make.rng.integers(0, 4, 1000).astype(np.float32)  # four score values, many ties
    np.testing.assert_array_equal(ops.nms(b, s, 0.5), reference.nms(b, s, 0.5))


def test_signed_zero_scores_tie():
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert ops.nms(b, torch.tensor([0.0, -0.0]), 0.5).tolist() == [0]
    assert ops.nms(b, torch.tensor([-0.0, 0.0]), 0.5).tolist() == [0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_area_and_inverted_boxes_never_suppress_or_get_suppressed(dtype):
    # Documented difference: IoU with a degenerate box is 0, so all are kept (torchvision's
    # NaN / signed areas may suppress some).
    b = np.array(
        [
            [0, 0, 10, 10],
            [0, 0, 10, 10],  # suppressed by box 0
            [5, 5, 5, 5],  # a point inside box 0
            [0, 0, 10, 0],  # a segment
            [10, 10, 0, 0],  # box 0 inverted
            [10, 10, 0, 0],
            [0, 10, 10, 0],  # inverted in y only
        ],
        dtype,
    )
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], dtype)
    got = ops.nms(t(b), t(s), 0.5)
    assert got.tolist() == [0, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(got.numpy(), reference.nms(b, s, 0.5))


@pytest.mark.parametrize("threshold", [-1e-9, -0.5, -np.inf])
def test_negative_threshold_keeps_only_the_top_box(threshold, make, tv):
    b, s = make.boxes(50), make.scores(50)
    got = ops.nms(t(b), t(s), threshold)
    assert got.tolist() == [int(np.argmax(s))]
    np.testing.assert_array_equal(got.numpy(), reference.nms(b, s, threshold))
    assert torch.equal(got, tv.ops.nms(t(b), t(s), threshold))


@pytest.mark.parametrize("threshold", [1.0, 1.5, np.inf])
def test_threshold_at_least_one_keeps_every_box_in_score_order(threshold, make, tv):
    b = np.concatenate([make.clustered(60), make.clustered(1).repeat(5, 0)])  # duplicates too
    s = make.scores(65)
    got = ops.nms(t(b), t(s), threshold)
    assert got.tolist() == np.argsort(-s, kind="stable").tolist()
    assert torch.equal(got, tv.ops.nms(t(b), t(s), threshold))


def test_zero_threshold_suppresses_any_overlap(make, tv):
    b, s = make.boxes(500), make.scores(500)
    got = ops.nms(t(b), t(s), 0.0)
    assert torch.equal(got, tv.ops.nms(t(b), t(s), 0.0))
    kept = b[got.numpy()]
    iou = reference.box_iou(kept, kept)
    assert (iou[~np.eye(len(kept), dtype=bool)] == 0).all()


@pytest.mark.parametrize("offset", [1e6, 1e7, 1e8])
def test_huge_coordinates_match_reference_and_torchvision(offset, make, tv):
    b = make.clustered(500, np.float64) * (offset / 1000) + offset
    s = make.scores(500, np.float64)
    got = ops.nms(t(b), t(s), 0.5)
    assert torch.equal(got, tv.ops.nms(t(b), t(s), 0.5))
    np.testing.assert_array_equal(got.numpy(), reference.nms(b, s, 0.5))
    b32, s32 = b.astype(np.float32), s.astype(np.float32)
    np.testing.assert_array_equal(ops.nms(b32, s32, 0.5), reference.nms(b32, s32, 0.5))


def test_small_boxes_far_from_the_origin_match_torchvision(make, tv):
    b = make.clustered(500, np.float64) + 1e7  # sides ~10..200 at 1e7: float32 rounds to 1
    s = make.scores(500, np.float64)
    for dtype in DTYPES:
        bb, ss = t(b.astype(dtype)), t(s.astype(dtype))
        assert torch.equal(ops.nms(bb, ss, 0.5), tv.ops.nms(bb, ss, 0.5))


def test_negative_coordinates_match_reference_and_torchvision(make, tv):
    b = make.clustered(800) - 5000.0
    s = make.scores(800)
    got = ops.nms(t(b), t(s), 0.5)
    assert torch.equal(got, tv.ops.nms(t(b), t(s), 0.5))
    np.testing.assert_array_equal(got.numpy(), reference.nms(b, s, 0.5))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_boxes_or_scores_raise(bad, device, make):
    b, s = make.boxes(5), make.scores(5)
    worse_b, worse_s = b.copy(), s.copy()
    worse_b[3, 1] = bad
    worse_s[2] = bad
    if device == "cpu":  # each argument is checked before the kernel, and named
        boxes_error, scores_error = "boxes contains NaN or inf", "scores contains NaN or inf"
    else:  # the kernel finds either (a check before it would cost a sync)
        boxes_error = scores_error = r"boxes and scores must be finite: found NaN or inf"
    with pytest.raises(ValueError, match=boxes_error):
        ops.nms(t(worse_b).to(device), t(s).to(device), 0.5)
    with pytest.raises(ValueError, match=scores_error):
        ops.nms(t(b).to(device), t(worse_s).to(device), 0.5)
    if device == "cpu":
        with pytest.raises(ValueError, match=scores_error):
            ops.nms(b, worse_s, 0.5)  # numpy


def test_negative_kernel_counts_raise_the_error_of_their_status():
    # kernels return a count or a negative _C.Status (the GPU's NaN check, a short workspace)
    err = arrays.status_error(int(_C.Status.non_finite), "nms")
    assert isinstance(err, ValueError) and "must be finite: found NaN or inf" in str(err)
    err = arrays.status_error(int(_C.Status.workspace_too_small), "batched_nms")
    assert isinstance(err, RuntimeError)
    assert "fastdet batched_nms: workspace too small (status -2)" in str(err)


def test_nan_threshold_raises():
    with pytest.raises(ValueError, match="iou_threshold must be a number, got NaN"):
        ops.nms(torch.zeros(1, 4), torch.zeros(1), float("nan"))


def test_non_contiguous_inputs_give_the_same_result(make):
    b, s = make.clustered(500), make.scores(500)
    want = ops.nms(t(b), t(s), 0.5)
    bt = t(b.T.copy()).T
    st_ = t(np.stack([s, s], 1))[:, 1]
    assert not bt.is_contiguous() and not st_.is_contiguous()
    assert torch.equal(ops.nms(bt, st_, 0.5), want)
    np.testing.assert_array_equal(ops.nms(np.asfortranarray(b), s, 0.5), want.numpy())
    reversed_keep = ops.nms(b[::-1], s[::-1], 0.5)  # negative strides
    np.testing.assert_array_equal(len(b) - 1 - reversed_keep, want.numpy())
    big = np.concatenate([b, b], 1)
    np.testing.assert_array_equal(ops.nms(big[:, 4:], np.repeat(s, 2)[::2], 0.5), want.numpy())


def test_wrong_dtype_raises_type_error():
    with pytest.raises(
        TypeError, match="boxes must be float16, bfloat16, float32 or float64, got torch.int32"
    ):
        ops.nms(torch.zeros(2, 4, dtype=torch.int32), torch.zeros(2), 0.5)
    with pytest.raises(TypeError, match="scores must be float16.*int64"):
        ops.nms(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match="boxes must be float16.*int64"):
        ops.nms(np.zeros((2, 4), np.int64), np.zeros(2, np.float32), 0.5)


def test_wrong_shape_raises_naming_argument_and_shape():
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \(2, 5\)"):
        ops.nms(torch.zeros(2, 5), torch.zeros(2), 0.5)
    with pytest.raises(
        ValueError, match=r"scores must have shape \[N\] with N = 2 \(boxes\), got \(3,\)"
    ):
        ops.nms(torch.zeros(2, 4), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \[N\].*got \(2, 1\)"):
        ops.nms(torch.zeros(2, 4), torch.zeros(2, 1), 0.5)


def test_mixing_torch_and_numpy_raises_type_error():
    with pytest.raises(TypeError, match="scores is a numpy array but boxes is a torch array"):
        ops.nms(torch.zeros(2, 4), np.zeros(2, np.float32), 0.5)
    with pytest.raises(TypeError, match="scores is a torch array but boxes is a numpy array"):
        ops.nms(np.zeros((2, 4), np.float32), torch.zeros(2), 0.5)


# --- batched_nms --------------------------------------------------------------------------


def assert_same_as_torchvision(got, boxes, scores, idxs, threshold):
    """Same kept set and the same score sequence (torchvision's unstable sort may order tied
    scores differently)."""
    tv = pytest.importorskip("torchvision")
    want = tv.ops.batched_nms(boxes, scores, idxs, threshold)
    assert sorted(got.tolist()) == sorted(want.tolist())
    assert torch.equal(scores[got], scores[want])


def sixteenths(boxes):
    """Boxes on a 1/16 px grid: torchvision's class offsets (multiples of max + 1) then shift
    them exactly in float32, so its IoUs are bit-identical to unshifted ones (otherwise an IoU
    within ~1e-5 of the threshold can go either way, about once in 500 calls)."""
    return np.round(boxes * 16) / 16


@pytest.mark.parametrize("n", [500, 3000])  # torchvision's offset trick, then its per-class loop
@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_matches_torchvision(n, dtype, make):
    b, s, c = sixteenths(make.clustered(n, dtype)), make.scores(n, dtype), make.classes(n, 7)
    for threshold in (0.3, 0.5, 0.7):
        got = ops.batched_nms(t(b), t(s), t(c), threshold)
        assert got.dtype == torch.int64
        assert_same_as_torchvision(got, t(b), t(s), t(c), threshold)


def test_batched_nms_with_tied_scores_matches_torchvision_as_sets(make):
    b, c = sixteenths(make.clustered(600)), make.classes(600, 3)
    s = make.rng.integers(0, 5, 600).astype(np.float32)
    got = ops.batched_nms(t(b), t(s), t(c), 0.5)
    assert_same_as_torchvision(got, t(b), t(s), t(c), 0.5)
    np.testing.assert_array_equal(got.numpy(), reference.batched_nms(b, s, c, 0.5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_matches_reference(dtype, make):
    b, s, c = make.clustered(700, dtype), make.scores(700, dtype), make.classes(700, 5)
    for threshold in (0.3, 0.7):
        got = ops.batched_nms(b, s, c, threshold)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64
        np.testing.assert_array_equal(got, reference.batched_nms(b, s, c, threshold))


def test_batched_nms_is_nms_per_class(make):
    b, s, c = make.clustered(400), make.scores(400), make.classes(400, 3)
    got = ops.batched_nms(b, s, c, 0.5)
    for k in range(3):
        members = np.flatnonzero(c == k)
        np.testing.assert_array_equal(
            got[c[got] == k], members[ops.nms(b[members], s[members], 0.5)]
        )


def test_batched_nms_with_one_class_is_nms(make):
    b, s = make.clustered(500), make.scores(500)
    np.testing.assert_array_equal(ops.batched_nms(b, s, np.full(500, 3), 0.5), ops.nms(b, s, 0.5))


def test_batched_nms_identical_boxes_in_different_classes_are_all_kept():
    b = torch.tensor([[10.0, 10.0, 20.0, 20.0]] * 4)
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert ops.batched_nms(b, s, torch.tensor([0, 1, 1, 2]), 0.5).tolist() == [0, 1, 3]


def print_torchvision_keeps(boxes, scores, idxs, right):
    """Shows (not asserts) torchvision's count: its class offsets mix classes here."""
    try:
        import torchvision
    except ImportError:
        return
    kept = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    print(f"torchvision keeps {len(kept)}, per-class NMS {right}")


def test_batched_nms_keeps_classes_apart_for_negative_coordinates():
    # torchvision shifts each class by idx * (max coordinate + 1); with every coordinate <= -1
    # the shift is <= 0, so classes overlap and suppress each other. fastdet must not.
    b = torch.tensor(
        [[-100.0, -100.0, -1.0, -1.0], [-100.0, -100.0, -1.0, -1.0], [-99.0, -99.0, -2.0, -2.0]]
    )
    s = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.tensor([0, 1, 2])
    got = ops.batched_nms(b, s, idxs, 0.5)
    assert got.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(
        got.numpy(), reference.batched_nms(b.numpy(), s.numpy(), idxs.numpy(), 0.5)
    )
    print_torchvision_keeps(b, s, idxs, len(got))


def test_batched_nms_negative_coordinates_match_the_per_class_reference(make):
    b = make.clustered(600)
    b -= b.max() + 1.0  # every coordinate <= -1: torchvision's class offsets are all 0
    s, c = make.scores(600), make.classes(600, 4)
    got = ops.batched_nms(t(b), t(s), t(c), 0.5)
    want = reference.batched_nms(b, s, c, 0.5)
    np.testing.assert_array_equal(got.numpy(), want)
    print_torchvision_keeps(t(b), t(s), t(c), len(want))


@pytest.mark.gpu
def test_batched_nms_negative_coordinates_on_gpu_match_cpu(make):
    n = 5000
    b, s = t(make.boxes(n, lo=4, hi=60)) - 500, t(make.scores(n))
    idx = t(make.rng.integers(-3, 40, n))
    got = ops.batched_nms(b.cuda(), s.cuda(), idx.cuda(), 0.5).cpu()
    assert torch.equal(got, ops.batched_nms(b, s, idx, 0.5))


@pytest.mark.gpu
def test_batched_nms_100k_on_gpu_matches_cpu(make):
    n = 100_000
    b, s, idx = t(make.boxes(n)), t(make.scores(n)), t(make.classes(n, 80))
    assert torch.equal(
        ops.batched_nms(b.cuda(), s.cuda(), idx.cuda(), 0.7).cpu(), ops.batched_nms(b, s, idx, 0.7)
    )


def test_batched_nms_with_negative_and_huge_class_ids(make):
    b, s = make.clustered(300), make.scores(300)
    c = make.rng.choice(np.array([-(2**62), -1, 0, 2**40], np.int64), 300)
    np.testing.assert_array_equal(
        ops.batched_nms(b, s, c, 0.5), reference.batched_nms(b, s, c, 0.5)
    )


def test_batched_nms_empty_input():
    got = ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert got.shape == (0,) and got.dtype == torch.int64
    got = ops.batched_nms(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), 0.5
    )
    assert isinstance(got, np.ndarray) and got.shape == (0,) and got.dtype == np.int64


def test_batched_nms_of_no_boxes_returns_at_once_as_torchvision(tv):
    # torchvision's test: boxes empty, the other arguments unused
    empty = torch.empty((0,), dtype=torch.int64)
    got = ops.batched_nms(empty, None, None, None)
    assert torch.equal(got, tv.ops.batched_nms(empty, None, None, None))
    assert got.dtype == torch.int64 and got.shape == (0,)
    got = ops.batched_nms(np.zeros((0, 4), np.float32), None, None, None)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64 and got.shape == (0,)


def test_input_errors_are_runtime_errors_as_in_torchvision():
    # torchvision's test_nms_input_errors; fastdet's errors are ValueErrors as well
    for boxes, scores in [
        (torch.rand(4), torch.rand(3)),
        (torch.rand(3, 5), torch.rand(3)),
        (torch.rand(3, 4), torch.rand(3, 2)),
        (torch.rand(3, 4), torch.rand(4)),
    ]:
        with pytest.raises(RuntimeError):
            ops.nms(boxes, scores, 0.5)
        with pytest.raises(ops.ShapeError):
            ops.batched_nms(boxes, scores, torch.zeros(3, dtype=torch.int64), 0.5)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_batched_nms_accepts_any_integer_idxs(dtype, make):
    b, s, c = make.clustered(200), make.scores(200), make.classes(200, 4)
    want = ops.batched_nms(t(b), t(s), t(c), 0.5)
    assert torch.equal(ops.batched_nms(t(b), t(s), t(c).to(dtype), 0.5), want)


def test_batched_nms_numpy_unsigned_idxs(make):
    b, s, c = make.clustered(200), make.scores(200), make.classes(200, 4)
    np.testing.assert_array_equal(
        ops.batched_nms(b, s, c.astype(np.uint8), 0.5), ops.batched_nms(b, s, c, 0.5)
    )


def test_batched_nms_half_precision(make):
    b, s, c = make.clustered(200), make.scores(200), make.classes(200, 3)
    got = ops.batched_nms(t(b).half(), t(s).half(), t(c), 0.5)
    assert torch.equal(got, ops.batched_nms(t(b).half().float(), t(s).half().float(), t(c), 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool, torch.complex64])
def test_batched_nms_non_integer_idxs_raise_type_error(dtype):
    with pytest.raises(TypeError, match="idxs must be an integer tensor"):
        ops.batched_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, dtype=dtype), 0.5)


def test_batched_nms_numpy_float_idxs_raise_type_error():
    with pytest.raises(TypeError, match="idxs must be an integer array, got float64"):
        ops.batched_nms(np.zeros((2, 4)), np.zeros(2), np.zeros(2), 0.5)


@pytest.mark.parametrize("shape", [(3,), (2, 1), ()])
def test_batched_nms_wrong_idxs_shape_raises(shape):
    expected = re.escape(f"idxs must have shape [N] with N = 2 (boxes), got {shape}")
    with pytest.raises(ValueError, match=expected):
        ops.batched_nms(
            torch.zeros(2, 4), torch.zeros(2), torch.zeros(shape, dtype=torch.int64), 0.5
        )


def test_batched_nms_idxs_of_another_kind_raise_type_error():
    with pytest.raises(TypeError, match="idxs is a numpy array but boxes is a torch array"):
        ops.batched_nms(torch.zeros(2, 4), torch.zeros(2), np.zeros(2, np.int64), 0.5)


def test_batched_nms_non_finite_raises(make):
    b, s, c = make.boxes(4), make.scores(4), make.classes(4)
    b[0, 0] = np.inf
    with pytest.raises(ValueError, match="boxes contains NaN or inf"):
        ops.batched_nms(b, s, c, 0.5)


def test_batched_nms_non_contiguous(make):
    b, s, c = make.clustered(300), make.scores(300), make.classes(300)
    want = ops.batched_nms(t(b), t(s), t(c), 0.5)
    got = ops.batched_nms(t(b.T.copy()).T, t(s), t(np.stack([c, c], 1))[:, 0], 0.5)
    assert torch.equal(got, want)


# --- properties ---------------------------------------------------------------------------

coord = st.integers(0, 30).map(float)
boxes_and_scores = st.integers(0, 25).flatmap(
    lambda n: st.tuples(
        st.lists(
            st.tuples(coord, coord, st.integers(1, 15), st.integers(1, 15)), min_size=n, max_size=n
        ),
        st.lists(st.integers(0, 6).map(float), min_size=n, max_size=n),  # few values: many ties
    )
)


@settings(max_examples=100, deadline=None)
@given(boxes_and_scores, st.sampled_from([0.0, 0.2, 0.5, 0.7, 0.9]))
def test_nms_greedy_properties(data, threshold):
    raw, scores = data
    b = np.array([[x, y, x + w, y + h] for x, y, w, h in raw], np.float64).reshape(-1, 4)
    s = np.array(scores, np.float64)
    keep = ops.nms(b, s, threshold)
    np.testing.assert_array_equal(keep, reference.nms(b, s, threshold))
    order = reference.descending_order(s)  # the stable processing order
    pos = {i: p for p, i in enumerate(order)}
    assert [pos[i] for i in keep] == sorted(pos[i] for i in keep)  # decreasing score
    iou = reference.box_iou(b, b)
    for a in range(len(keep)):  # every kept pair has IoU <= t
        for c in range(a + 1, len(keep)):
            assert iou[keep[a], keep[c]] <= threshold
    kept = set(keep.tolist())
    for i in set(range(len(b))) - kept:  # every dropped box overlaps an earlier kept box
        assert any(iou[k, i] > threshold and pos[k] < pos[i] for k in kept)


@settings(max_examples=60, deadline=None)
@given(boxes_and_scores, st.lists(st.integers(0, 2), min_size=25, max_size=25))
def test_batched_nms_properties(data, classes):
    raw, scores = data
    b = np.array([[x, y, x + w, y + h] for x, y, w, h in raw], np.float64).reshape(-1, 4)
    s = np.array(scores, np.float64)
    c = np.array(classes[: len(b)], np.int64)
    keep = ops.batched_nms(b, s, c, 0.5)
    np.testing.assert_array_equal(keep, reference.batched_nms(b, s, c, 0.5))
    assert list(s[keep]) == sorted(s[keep], reverse=True)


# --- torch.compile and threads ------------------------------------------------------------


def test_nms_compiles_with_a_data_dependent_output_size(make):
    b, s = t(make.clustered(300)), t(make.scores(300))

    def f(boxes, scores):
        keep = ops.nms(boxes, scores, 0.5)
        return keep, boxes[keep], scores[keep].sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(b, s), f(b, s)):
        assert torch.equal(got, want)
    b2, s2 = t(make.boxes(200)), t(make.scores(200))  # another size and another kept count
    for got, want in zip(compiled(b2, s2), f(b2, s2)):
        assert torch.equal(got, want)


def test_batched_nms_compiles(make):
    b, s, c = t(make.clustered(300)), t(make.scores(300)), t(make.classes(300))
    f = lambda boxes, scores, idxs: ops.batched_nms(boxes, scores, idxs, 0.5)  # noqa: E731
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(b, s, c), f(b, s, c))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_custom_ops_pass_opcheck(dtype, device, make):
    b = t(make.clustered(200)).to(device, dtype)
    s = t(make.scores(200)).to(device, dtype)
    c = t(make.classes(200, 4)).to(device)
    strided = b.t().contiguous().t()  # same values, column-major
    for args in [(b, s, 0.5), (b, s, 0.0), (b[:0], s[:0], 0.5), (strided, s, 0.5)]:
        torch.library.opcheck(torch.ops.fastdet.nms, args)
    for args in [(b, s, c, 0.5), (b[:0], s[:0], c[:0], 0.5), (strided, s, c, 0.5)]:
        torch.library.opcheck(torch.ops.fastdet.batched_nms, args)
    assert torch.equal(torch.ops.fastdet.nms(strided, s, 0.5), torch.ops.fastdet.nms(b, s, 0.5))


def test_concurrent_threads_match_sequential_calls(make, concurrently):
    inputs = [(t(make.clustered(2000 + 100 * i)), t(make.scores(2000 + 100 * i))) for i in range(8)]
    want = [ops.nms(b, s, 0.5) for b, s in inputs]
    got = concurrently(lambda b, s: ops.nms(b, s, 0.5), inputs)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
