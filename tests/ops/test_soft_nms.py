"""soft_nms against the reference (torchvision has no soft_nms; its hard nms is the limit)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdet import _C, ops
from fastdet.ops import _reference as reference

DTYPES = [np.float32, np.float64]
SETTINGS = [  # (iou_threshold, sigma, score_threshold)
    (0.3, 0.5, 0.001),
    (0.5, 0.1, 0.05),
    (0.0, 2.0, 0.0),
]


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


PAIR = np.array([[0, 0, 3, 1], [1, 0, 4, 1]], np.float64)  # IoU exactly 0.5


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", SETTINGS)
def test_soft_nms_matches_reference_exactly(params, dtype, method, make):
    b, s = make.clustered(250, dtype), make.scores(250, dtype)
    keep, scores = ops.soft_nms(t(b), t(s), *params, method=method)
    want_keep, want_scores = reference.soft_nms(b, s, *params, method=method)
    assert keep.dtype == torch.int64 and scores.dtype == t(s).dtype
    np.testing.assert_array_equal(keep.numpy(), want_keep)
    np.testing.assert_array_equal(scores.numpy(), want_scores)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_matches_reference_on_uniform_boxes(method, make):
    b, s = make.boxes(400), make.scores(400)
    keep, scores = ops.soft_nms(b, s, method=method)
    want_keep, want_scores = reference.soft_nms(b, s, method=method)
    np.testing.assert_array_equal(keep, want_keep)
    np.testing.assert_array_equal(scores, want_scores)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_on_gpu_matches_cpu(method, make):
    b, s = t(make.boxes(800, image=300.0)), t(make.scores(800))
    k1, s1 = ops.soft_nms(b.cuda(), s.cuda(), 0.3, 0.5, 0.01, method)
    k2, s2 = ops.soft_nms(b, s, 0.3, 0.5, 0.01, method)
    assert torch.equal(k1.cpu(), k2)
    torch.testing.assert_close(s1.cpu(), s2, rtol=1e-5, atol=1e-6)


def test_soft_nms_defaults_are_gaussian_sigma_half(make):
    b, s = make.clustered(100), make.scores(100)
    keep, scores = ops.soft_nms(t(b), t(s))
    want = ops.soft_nms(t(b), t(s), 0.3, 0.5, 0.001, "gaussian")
    assert torch.equal(keep, want[0]) and torch.equal(scores, want[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_nms_numpy_in_numpy_out(dtype, make):
    b, s = make.clustered(100, dtype), make.scores(100, dtype)
    keep, scores = ops.soft_nms(b, s, method="linear")
    assert isinstance(keep, np.ndarray) and keep.dtype == np.int64
    assert isinstance(scores, np.ndarray) and scores.dtype == dtype
    tk, ts = ops.soft_nms(t(b), t(s), method="linear")
    np.testing.assert_array_equal(keep, tk.numpy())
    np.testing.assert_array_equal(scores, ts.numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_soft_nms_half_precision_returns_scores_of_the_input_dtype(dtype, make):
    b, s = t(make.clustered(100)).to(dtype), t(make.scores(100)).to(dtype)
    keep, scores = ops.soft_nms(b, s)
    assert keep.dtype == torch.int64 and scores.dtype == dtype
    want_keep, want_scores = ops.soft_nms(b.float(), s.float())
    assert torch.equal(keep, want_keep)
    assert torch.equal(scores, want_scores.to(dtype))


def test_soft_nms_numpy_float16(make):
    b, s = make.clustered(50, np.float16), make.scores(50, np.float16)
    keep, scores = ops.soft_nms(b, s)
    assert scores.dtype == np.float16
    want_keep, want_scores = reference.soft_nms(b.astype(np.float32), s.astype(np.float32))
    np.testing.assert_array_equal(keep, want_keep)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float16))


def test_soft_nms_empty_input():
    keep, scores = ops.soft_nms(
        torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    )
    assert keep.shape == (0,) and keep.dtype == torch.int64
    assert scores.shape == (0,) and scores.dtype == torch.float64
    keep, scores = ops.soft_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    assert keep.shape == (0,) and keep.dtype == np.int64 and scores.dtype == np.float32


def test_soft_nms_one_box():
    keep, scores = ops.soft_nms(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([0.25]))
    assert keep.tolist() == [0] and scores.tolist() == [0.25]


def test_soft_nms_all_below_score_threshold_gives_empty(make):
    b = make.boxes(10)
    keep, scores = ops.soft_nms(b, np.full(10, 0.01, np.float32), score_threshold=0.5)
    assert keep.shape == (0,) and scores.shape == (0,)


def test_soft_nms_score_equal_to_threshold_survives():
    keep, _ = ops.soft_nms(
        np.array([[0, 0, 1, 1]], np.float64), np.array([0.5]), score_threshold=0.5
    )
    assert keep.tolist() == [0]


def test_soft_nms_linear_iou_at_threshold_does_not_decay():
    s = np.array([0.9, 0.8])
    keep, scores = ops.soft_nms(PAIR, s, iou_threshold=0.5, method="linear")
    assert keep.tolist() == [0, 1] and scores.tolist() == [0.9, 0.8]  # 0.5 > 0.5 is false
    keep, scores = ops.soft_nms(PAIR, s, iou_threshold=np.nextafter(0.5, 0), method="linear")
    assert keep.tolist() == [0, 1] and scores.tolist() == [0.9, 0.8 * (1 - 0.5)]


def test_soft_nms_gaussian_decay_value():
    keep, scores = ops.soft_nms(PAIR, np.array([0.9, 0.8]), sigma=0.5, method="gaussian")
    assert keep.tolist() == [0, 1]
    assert scores.tolist() == [0.9, 0.8 * math.exp(-(0.5 * 0.5) / 0.5)]


def test_soft_nms_decay_can_reorder_selection():
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]], np.float64)  # 1 duplicates 0
    keep, scores = ops.soft_nms(b, np.array([0.9, 0.8, 0.5]), method="linear", iou_threshold=0.3)
    assert keep.tolist() == [0, 2]  # box 1 decays to 0 and dies
    assert scores.tolist() == [0.9, 0.5]
    keep, scores = ops.soft_nms(b, np.array([0.9, 0.8, 0.5]), method="gaussian", sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    assert scores[2] == pytest.approx(0.8 * math.exp(-2.0))


def test_soft_nms_tied_scores_select_the_lower_index_first():
    b = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11], [20, 20, 21, 21]], np.float32)
    keep, scores = ops.soft_nms(b, np.array([0.5, 0.7, 0.7, 0.7], np.float32))
    assert keep.tolist() == [1, 2, 3, 0]


def test_soft_nms_tied_scores_match_reference(make):
    b = make.clustered(200)
    s = (make.rng.integers(1, 5, 200) / 4).astype(np.float32)
    keep, scores = ops.soft_nms(b, s, method="linear", iou_threshold=0.5)
    want_keep, want_scores = reference.soft_nms(b, s, method="linear", iou_threshold=0.5)
    np.testing.assert_array_equal(keep, want_keep)
    np.testing.assert_array_equal(scores, want_scores)


def test_soft_nms_disjoint_boxes_keep_their_scores(make):
    b = np.arange(20.0)[:, None] * 10 + np.array([0, 0, 5, 5])
    s = make.scores(20, np.float64)
    keep, scores = ops.soft_nms(b, s)
    np.testing.assert_array_equal(keep, np.argsort(-s))
    np.testing.assert_array_equal(scores, np.sort(s)[::-1])


def test_soft_nms_degenerate_boxes_do_not_decay_anything():
    b = np.array([[0, 0, 10, 10], [5, 5, 5, 5], [10, 10, 0, 0], [0, 0, 10, 10]], np.float32)
    s = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    keep, scores = ops.soft_nms(b, s, method="linear", iou_threshold=0.1)
    assert keep.tolist() == [0, 1, 2]  # box 3 duplicates box 0: decays to 0
    assert scores.tolist() == s[:3].tolist()
    assert np.isfinite(scores).all()


def test_linear_soft_nms_with_zero_score_threshold_keeps_every_box(make):
    b, s = make.clustered(150), make.scores(150)
    keep, scores = ops.soft_nms(b, s, iou_threshold=1.0, score_threshold=0.0, method="linear")
    np.testing.assert_array_equal(keep, np.argsort(-s))
    np.testing.assert_array_equal(scores, s[keep])


def test_linear_soft_nms_is_hard_nms_when_every_decay_kills(make, tv):
    # Scores in [0.5, 0.8] with score_threshold 0.5: a decay (IoU > 0.5, factor < 0.5) always
    # kills, and undecayed boxes keep their order, so the selection is exactly hard NMS's.
    b = make.clustered(300)
    s = (0.5 + make.scores(300) / 2).astype(np.float32)
    keep, scores = ops.soft_nms(t(b), t(s), iou_threshold=0.5, score_threshold=0.5, method="linear")
    assert torch.equal(keep, tv.ops.nms(t(b), t(s), 0.5))
    assert torch.equal(scores, t(s)[keep])


def test_soft_nms_huge_and_negative_coordinates_match_reference(make):
    for b in (make.clustered(150, np.float64) * 1e5 + 1e7, make.clustered(150, np.float64) - 1e4):
        s = make.scores(150, np.float64)
        keep, scores = ops.soft_nms(t(b), t(s))
        want_keep, want_scores = reference.soft_nms(b, s)
        np.testing.assert_array_equal(keep.numpy(), want_keep)
        np.testing.assert_array_equal(scores.numpy(), want_scores)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_soft_nms_non_finite_inputs_raise_naming_the_argument(bad, make):
    b, s = make.boxes(4), make.scores(4)
    wb, ws = b.copy(), s.copy()
    wb[1, 3] = bad
    ws[0] = bad
    with pytest.raises(ValueError, match="boxes contains NaN or inf"):
        ops.soft_nms(t(wb), t(s))
    with pytest.raises(ValueError, match="scores contains NaN or inf"):
        ops.soft_nms(b, ws)


def test_soft_nms_bad_arguments_raise():
    b, s = torch.zeros(1, 4), torch.zeros(1)
    with pytest.raises(ValueError, match="method must be 'linear' or 'gaussian', got 'hard'"):
        ops.soft_nms(b, s, method="hard")
    with pytest.raises(ValueError, match="sigma must be > 0 for the gaussian method, got 0.0"):
        ops.soft_nms(b, s, sigma=0.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        ops.soft_nms(b, s, sigma=float("nan"))
    with pytest.raises(ValueError, match="score_threshold must be a number, got NaN"):
        ops.soft_nms(b, s, score_threshold=float("nan"))
    with pytest.raises(ValueError, match="iou_threshold must be a number, got NaN"):
        ops.soft_nms(b, s, iou_threshold=float("nan"), method="linear")


def test_soft_nms_linear_ignores_sigma():
    keep, scores = ops.soft_nms(
        PAIR, np.array([0.9, 0.8]), iou_threshold=0.1, sigma=0.0, method="linear"
    )
    assert scores.tolist() == [0.9, 0.8 * 0.5]


def test_soft_nms_wrong_dtype_shape_and_kind_raise():
    with pytest.raises(TypeError, match="boxes must be float16.*int64"):
        ops.soft_nms(torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2))
    with pytest.raises(TypeError, match="scores must be float16.*int32"):
        ops.soft_nms(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \(2, 3\)"):
        ops.soft_nms(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(
        ValueError, match=r"scores must have shape \[N\] with N = 2 \(boxes\), got \(1,\)"
    ):
        ops.soft_nms(torch.zeros(2, 4), torch.zeros(1))
    with pytest.raises(TypeError, match="scores is a numpy array but boxes is a torch array"):
        ops.soft_nms(torch.zeros(2, 4), np.zeros(2, np.float32))


def test_soft_nms_non_contiguous(make):
    b, s = make.clustered(200), make.scores(200)
    want = ops.soft_nms(t(b), t(s))
    got = ops.soft_nms(t(b.T.copy()).T, t(np.stack([s, s], 1))[:, 1])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_soft_nms_compiles(make):
    b, s = t(make.clustered(200)), t(make.scores(200))

    def f(boxes, scores):
        keep, new_scores = ops.soft_nms(boxes, scores, method="linear", iou_threshold=0.5)
        return boxes[keep], new_scores

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(b, s), f(b, s)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_custom_op_passes_opcheck(dtype, device, make):
    b = t(make.clustered(150)).to(device, dtype)
    s = t(make.scores(150)).to(device, dtype)
    strided = b.t().contiguous().t()  # same values, column-major
    linear, gaussian = int(_C.SoftNmsMethod.linear), int(_C.SoftNmsMethod.gaussian)
    for args in [
        (b, s, 0.3, 0.5, 0.001, gaussian),
        (b, s, 0.5, 0.5, 0.05, linear),
        (b[:0], s[:0], 0.3, 0.5, 0.001, gaussian),
        (strided, s, 0.3, 0.5, 0.001, gaussian),
    ]:
        torch.library.opcheck(torch.ops.fastdet.soft_nms, args)
    got = torch.ops.fastdet.soft_nms(strided, s, 0.3, 0.5, 0.001, gaussian)
    want = torch.ops.fastdet.soft_nms(b, s, 0.3, 0.5, 0.001, gaussian)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(ValueError, match=r"method must be one of \[0, 1\], got 7"):
        torch.ops.fastdet.soft_nms(b, s, 0.3, 0.5, 0.001, 7)


coord = st.integers(0, 30).map(float)
inputs = st.integers(0, 20).flatmap(
    lambda n: st.tuples(
        st.lists(
            st.tuples(coord, coord, st.integers(0, 15), st.integers(0, 15)), min_size=n, max_size=n
        ),
        st.lists(st.floats(0, 1), min_size=n, max_size=n),
    )
)


@settings(max_examples=80, deadline=None)
@given(
    inputs,
    st.sampled_from(["linear", "gaussian"]),
    st.sampled_from([0.0, 0.3, 0.7]),
    st.sampled_from([0.0, 0.001, 0.3]),
)
def test_soft_nms_properties(data, method, iou_threshold, score_threshold):
    raw, scores = data
    b = np.array([[x, y, x + w, y + h] for x, y, w, h in raw], np.float64).reshape(-1, 4)
    s = np.array(scores, np.float64)
    keep, out = ops.soft_nms(b, s, iou_threshold, 0.5, score_threshold, method)
    want_keep, want_out = reference.soft_nms(b, s, iou_threshold, 0.5, score_threshold, method)
    np.testing.assert_array_equal(keep, want_keep)
    np.testing.assert_array_equal(out, want_out)
    assert len(set(keep.tolist())) == len(keep)  # each box selected at most once
    assert (np.diff(out) <= 0).all()  # selection in non-increasing decayed score
    assert (out >= score_threshold).all() and (out <= s[keep]).all()
    assert set(np.flatnonzero(s >= score_threshold).tolist()) >= set(keep.tolist())
