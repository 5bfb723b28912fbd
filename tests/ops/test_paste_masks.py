"""paste_masks and masks_to_labels against torchvision's paste_masks_in_image (and the threshold
and score argmax a user writes after it), against the numpy references, on constructed edge
cases (tiny, inverted, huge and outside boxes, thresholds exactly hit, tied scores) and bad
input; on the GPU, CUDA against the CPU bit for bit."""

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.ops import _reference as ref

tv_heads = pytest.importorskip("torchvision.models.detection.roi_heads")

# Probabilities differ from torchvision's by float rounding (torch's CPU resize chooses its
# kernel by size and CPU); binary masks are compared away from the threshold by this much.
NEAR = 1e-6


def make_boxes(rng, k, h, w, dtype=np.float32, huge=True):
    """[k, 4] boxes in an h x w image: a mix of ordinary boxes (some partly outside), tiny
    boxes (< 1 px), inverted boxes (x2 < x1), boxes wholly outside and (with `huge`) boxes
    larger than the image."""
    kind = rng.integers(0, 5 if huge else 4, k)
    xy = rng.uniform(-0.2, 1.0, (k, 2)) * np.array([w, h])
    wh = rng.uniform(2, 0.5 * min(h, w), (k, 2))
    wh[kind == 1] = rng.uniform(0, 1, (np.sum(kind == 1), 2))  # tiny
    wh[kind == 2] = -rng.uniform(0, 6, (np.sum(kind == 2), 2))  # inverted
    xy[kind == 3] = rng.uniform(1.05, 2, (np.sum(kind == 3), 2)) * np.array([w, h])  # outside
    flip = rng.random(k) < 0.5
    xy[(kind == 3) & flip] *= -1
    wh[kind == 4] = rng.uniform(1, 3, (np.sum(kind == 4), 2)) * np.array([w, h])  # huge
    xy[kind == 4] -= rng.uniform(0, 1, (np.sum(kind == 4), 2)) * np.array([w, h])
    return np.concatenate([xy, xy + wh], 1).astype(dtype)


def tv_paste_each(masks, boxes, h, w, padding=1):
    """torchvision's pasted probabilities [K, H, W], one box at a time, and which boxes it
    could paste (it raises for most boxes wholly outside the image; those rows are zeros)."""
    out = torch.zeros((masks.shape[0], h, w), dtype=masks.dtype)
    ok = torch.ones(masks.shape[0], dtype=torch.bool)
    for k in range(masks.shape[0]):
        try:
            out[k] = tv_heads.paste_masks_in_image(
                masks[k : k + 1, None], boxes[k : k + 1], (h, w), padding
            )[0, 0]
        except RuntimeError:
            ok[k] = False
    return out, ok


def outside(box, scale, h, w):
    x0, y0, x2, y2 = ref.paste_footprint(np.asarray(box), scale)
    return min(x2 + 1, w) <= max(x0, 0) or min(y2 + 1, h) <= max(y0, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("m", [14, 28])
def test_probabilities_match_torchvision(rng, m, padding, dtype):
    h, w = 61, 83
    masks = torch.from_numpy(rng.random((50, m, m))).to(dtype)
    boxes = torch.from_numpy(make_boxes(rng, 50, h, w)).to(dtype)
    got = ops.paste_masks(masks, boxes, (h, w), padding=padding)
    want, ok = tv_paste_each(masks, boxes, h, w, padding)
    assert got.shape == (50, h, w) and got.dtype == dtype
    assert ok.sum() >= 25  # most boxes are pasted by torchvision, so this compares something
    # the same pixels: a footprint one pixel off at an edge would differ by a mask value there
    torch.testing.assert_close(got[ok], want[ok], rtol=0, atol=1e-5)
    scale = (m + 2 * padding) / m
    for k in torch.nonzero(~ok)[:, 0].tolist():  # torchvision raised: wholly outside, zeros
        assert outside(boxes[k].numpy(), scale, h, w), boxes[k]
        assert not got[k].any()


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0])
def test_binary_masks_match_torchvision_thresholded(rng, threshold):
    h, w = 90, 70
    masks = torch.from_numpy(rng.random((60, 28, 28)).astype(np.float32))
    boxes = torch.from_numpy(make_boxes(rng, 60, h, w))
    got = ops.paste_masks(masks, boxes, (h, w), threshold=threshold)
    probs, ok = tv_paste_each(masks, boxes, h, w)
    assert got.dtype == torch.bool and got.shape == (60, h, w)
    ours = ops.paste_masks(masks, boxes, (h, w))
    assert torch.equal(got, ours > threshold)  # the same values, thresholded
    # compared: every pixel away from the threshold, and where the probabilities are equal
    far = ((probs - threshold).abs() > NEAR) | (probs == ours)
    assert far.float().mean() > 0.99
    assert torch.equal(got[ok] & far[ok], (probs[ok] > threshold) & far[ok])
    assert not got[~ok].any()


@pytest.mark.parametrize("box_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_matches_reference_exactly(rng, dtype, box_dtype, padding):
    h, w = 40, 57
    masks = rng.random((25, 14, 14)).astype(dtype)
    boxes = make_boxes(rng, 25, h, w, box_dtype)
    got = ops.paste_masks(masks, boxes, (h, w), padding=padding)
    want = ref.paste_masks(masks, boxes, (h, w), padding)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    binary = ops.paste_masks(masks, boxes, (h, w), padding=padding, threshold=0.5)
    np.testing.assert_array_equal(binary, ref.paste_masks(masks, boxes, (h, w), padding, 0.5))


def test_box_arithmetic_in_the_boxes_dtype(rng):
    """float32 masks with float64 boxes: the box grows in float64, as torchvision's does."""
    h, w = 64, 64
    masks = torch.from_numpy(rng.random((40, 28, 28)).astype(np.float32))
    boxes = torch.from_numpy(make_boxes(rng, 40, h, w, np.float64))
    got = ops.paste_masks(masks, boxes, (h, w))
    want, ok = tv_paste_each(masks, boxes, h, w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got[ok], want[ok], rtol=0, atol=1e-5)


def test_threshold_exactly_hit_is_not_above():
    """A box of exactly the padded mask's size copies the mask (no resampling): prob = 0.5
    exactly, which is not > 0.5."""
    masks = torch.full((1, 28, 28), 0.5)
    boxes = torch.tensor([[10.0, 20.0, 37.0, 47.0]])  # 28 x 28 pixels after truncation
    probs = ops.paste_masks(masks, boxes, (64, 64), padding=0)
    assert torch.equal(probs[0, 20:48, 10:38], torch.full((28, 28), 0.5))
    assert probs.sum() == 0.5 * 28 * 28
    assert not ops.paste_masks(masks, boxes, (64, 64), padding=0, threshold=0.5).any()
    assert ops.paste_masks(masks, boxes, (64, 64), padding=0, threshold=0.49).sum() == 28 * 28
    labels = ops.masks_to_labels(masks, boxes, torch.ones(1), (64, 64), 0.5, padding=0)
    assert not labels.any()


def test_tiny_inverted_and_edge_boxes():
    masks = torch.ones((4, 28, 28))
    boxes = torch.tensor(
        [
            [5.2, 5.2, 5.4, 5.4],  # < 1 px: one pixel (5, 5)
            [9.0, 9.0, 3.0, 3.0],  # inverted: x2 < x0 after truncation, nothing pasted
            [-30.0, -30.0, 2.5, 2.5],  # partly outside, top-left
            [60.0, 60.0, 200.0, 200.0],  # partly outside, bottom-right
        ]
    )
    got = ops.paste_masks(boxes=boxes, masks=masks, image_shape=(64, 64), padding=0)
    want, ok = tv_paste_each(masks, boxes, 64, 64, padding=0)
    assert ok.all()
    assert torch.equal(got, want)  # ones resample to ones exactly
    assert torch.nonzero(got[0]).tolist() == [[5, 5]]
    assert not got[1].any()


def test_box_wholly_outside_gives_zeros_where_torchvision_raises():
    masks = torch.rand(3, 28, 28)
    boxes = torch.tensor([[70.0, 10.0, 90.0, 30.0], [10.0, -50.0, 30.0, -20.0], [0, 0, 9, 9.0]])
    got = ops.paste_masks(masks, boxes, (64, 64))
    assert not got[:2].any() and got[2].any()
    with pytest.raises(RuntimeError):
        tv_heads.paste_masks_in_image(masks[:1, None], boxes[:1], (64, 64))


def test_empty_inputs():
    out = ops.paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 7))
    assert out.shape == (0, 5, 7) and out.dtype == torch.float32
    out = ops.paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), (5, 7), threshold=0.5)
    assert out.shape == (0, 5, 7) and out.dtype == np.bool_
    assert ops.paste_masks(torch.rand(2, 28, 28), torch.rand(2, 4), (0, 7)).shape == (2, 0, 7)
    labels = ops.masks_to_labels(torch.zeros(0, 28, 28), torch.zeros(0, 4), torch.zeros(0), (5, 7))
    assert labels.shape == (5, 7) and labels.dtype == torch.int32 and not labels.any()
    labels = ops.masks_to_labels(torch.zeros(0, 5, 7), None, torch.zeros(0), (5, 7))
    assert labels.shape == (5, 7) and not labels.any()


def test_four_dim_masks_and_numpy_and_half(rng):
    masks = rng.random((10, 1, 28, 28)).astype(np.float32)
    boxes = make_boxes(rng, 10, 50, 50)
    got = ops.paste_masks(masks, boxes, (50, 50))
    assert isinstance(got, np.ndarray) and got.shape == (10, 50, 50) and got.dtype == np.float32
    t = ops.paste_masks(torch.from_numpy(masks), torch.from_numpy(boxes), (50, 50))
    np.testing.assert_array_equal(got, t.numpy())
    half = ops.paste_masks(torch.from_numpy(masks).half(), torch.from_numpy(boxes), (50, 50))
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), t, atol=1e-3, rtol=0)
    assert not t.requires_grad
    grad_in = torch.from_numpy(masks).requires_grad_()
    assert not ops.paste_masks(grad_in, torch.from_numpy(boxes), (50, 50)).requires_grad


# --- masks_to_labels ----------------------------------------------------------------------


def tv_labels(masks, boxes, scores, h, w, threshold=0.5, padding=1):
    """What a user writes: torchvision's pasted masks, thresholded, then the highest score per
    pixel (ties: the lower index); and where any probability is within NEAR of the threshold."""
    probs, _ = tv_paste_each(masks, boxes, h, w, padding)
    order = torch.sort(scores, descending=True, stable=True).indices
    hit = probs[order] > threshold
    first = hit.to(torch.uint8).argmax(0)  # the first True (argmax returns the first maximum)
    labels = torch.where(hit.any(0), order[first] + 1, 0).to(torch.int32)
    near = ((probs - threshold).abs() <= NEAR) & (probs != threshold)
    return labels, near.any(0)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("threshold", [0.5, 0.2])
def test_labels_match_torchvision_argmax(rng, threshold, padding):
    h, w = 80, 96
    k = 70
    masks = torch.from_numpy(rng.random((k, 28, 28)).astype(np.float32))
    boxes = torch.from_numpy(make_boxes(rng, k, h, w, huge=False))  # huge ones would cover all
    scores = torch.from_numpy(rng.choice([0.2, 0.5, 0.9], k).astype(np.float32))  # many ties
    got = ops.masks_to_labels(masks, boxes, scores, (h, w), threshold, padding)
    want, near = tv_labels(masks, boxes, scores, h, w, threshold, padding)
    assert got.dtype == torch.int32 and got.shape == (h, w)
    assert len(torch.unique(want)) > 5  # several instances, overlapping
    assert torch.equal(got[~near], want[~near])
    np.testing.assert_array_equal(
        got.numpy(),
        ref.masks_to_labels(
            masks.numpy(), boxes.numpy(), scores.numpy(), (h, w), threshold, padding
        ),
    )


def test_labels_ties_go_to_the_lower_index():
    masks = torch.ones((4, 28, 28))
    boxes = torch.tensor(
        [[0, 0, 20, 20], [10, 10, 30, 30], [10, 10, 30, 30], [0, 0, 40, 40]], dtype=torch.float32
    )
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1])
    got = ops.masks_to_labels(masks, boxes, scores, (48, 48), padding=0)
    assert got[15, 15] == 2  # masks 1 and 2 tie at 0.9 above mask 0: the lower index, 1
    assert got[5, 5] == 1 and got[35, 35] == 4 and got[45, 45] == 0
    want, _ = tv_labels(masks, boxes, scores, 48, 48, padding=0)
    assert torch.equal(got, want)
    swapped = ops.masks_to_labels(
        masks, boxes, torch.tensor([0.5, 0.9, 0.95, 0.1]), (48, 48), 0.5, 0
    )
    assert swapped[15, 15] == 3


def test_labels_of_full_size_masks(rng):
    h, w = 33, 47
    probs = rng.random((12, h, w)).astype(np.float32)
    probs[3] = 0.5  # exactly at the threshold: claims nothing
    scores = rng.choice([0.1, 0.7], 12).astype(np.float32)
    got = ops.masks_to_labels(probs, None, scores, (h, w))
    assert isinstance(got, np.ndarray) and got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.masks_to_labels(probs, None, scores, (h, w)))
    assert not (got == 4).any()
    t = ops.masks_to_labels(torch.from_numpy(probs), None, torch.from_numpy(scores), (h, w))
    np.testing.assert_array_equal(t.numpy(), got)


def test_labels_do_not_depend_on_the_thread_count(rng):
    from fastdet import _ext

    masks = rng.random((200, 28, 28)).astype(np.float32)
    boxes = make_boxes(rng, 200, 128, 128)
    scores = rng.random(200).astype(np.float32)
    before = _ext._C.cpu.max_threads()
    try:
        _ext._C.cpu.set_num_threads(1)
        one = ops.masks_to_labels(masks, boxes, scores, (128, 128))
        p_one = ops.paste_masks(masks, boxes, (128, 128))
        _ext._C.cpu.set_num_threads(3)
        three = ops.masks_to_labels(masks, boxes, scores, (128, 128))
        p_three = ops.paste_masks(masks, boxes, (128, 128))
    finally:
        _ext._C.cpu.set_num_threads(before)
    np.testing.assert_array_equal(one, three)
    np.testing.assert_array_equal(p_one, p_three)


# --- bad input ----------------------------------------------------------------------------


def _good():
    return dict(
        masks=torch.rand(3, 28, 28),
        boxes=torch.tensor([[0, 0, 10, 10.0]] * 3),
        image_shape=(32, 32),
    )


PASTE_ERRORS = [
    (dict(masks=torch.rand(3, 28, 27)), ValueError, "masks must have shape"),
    (dict(masks=torch.rand(3, 2, 28, 28)), ValueError, "masks must have shape"),
    (dict(masks=torch.rand(2, 28, 28)), ValueError, "boxes must have shape .* K = 2"),
    (dict(boxes=torch.rand(3, 5)), ValueError, "boxes must have shape"),
    (dict(masks=torch.zeros(3, 28, 28, dtype=torch.int32)), TypeError, "masks must be float"),
    (dict(boxes=torch.zeros(3, 4, dtype=torch.int64)), TypeError, "boxes must be float"),
    (dict(boxes=np.zeros((3, 4), np.float32)), TypeError, "boxes is a numpy array"),
    (dict(masks=[[0.0]]), TypeError, "masks must be a torch.Tensor"),
    (dict(image_shape=(-1, 32)), ValueError, r"image_shape\[0\] must be >= 0"),
    (dict(image_shape=(32,)), ValueError, "image_shape must be"),
    (dict(image_shape=(32.0, 32)), TypeError, r"image_shape\[0\] must be an integer"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding=1.5), TypeError, "padding must be an integer"),
    (dict(threshold=1.5), ValueError, r"threshold must be in \[0, 1\]"),
    (dict(threshold=-0.1), ValueError, r"threshold must be in \[0, 1\]"),
    (dict(threshold=float("nan")), ValueError, "threshold must be a number"),
    (dict(threshold="0.5"), TypeError, "threshold must be a real number"),
    (dict(masks=torch.zeros(3, 0, 0)), ValueError, "at least 1 x 1"),
]


@pytest.mark.parametrize("change,exc,match", PASTE_ERRORS)
def test_paste_bad_input_raises(change, exc, match):
    with pytest.raises(exc, match=match):
        ops.paste_masks(**{**_good(), **change})


@pytest.mark.parametrize("where", ["masks", "boxes"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_raises(where, value):
    args = _good()
    args[where] = args[where].clone()
    args[where][1, 2] = value
    with pytest.raises(ValueError, match=f"{where} contains NaN or inf"):
        ops.paste_masks(**args)
    with pytest.raises(ValueError, match=f"{where} contains NaN or inf"):
        ops.masks_to_labels(scores=torch.rand(3), **args)


LABEL_ERRORS = [
    (dict(scores=torch.rand(2)), ValueError, "scores must have shape .* K = 3"),
    (dict(scores=torch.rand(3, 1)), ValueError, "scores must have shape"),
    (dict(scores=torch.tensor([1, 2, 3])), TypeError, "scores must be float"),
    (dict(scores=torch.tensor([0.5, float("nan"), 0.1])), ValueError, "scores contains NaN"),
    (dict(threshold=2.0), ValueError, r"threshold must be in \[0, 1\]"),
    (dict(threshold=None), TypeError, "threshold must be a real number"),
    (dict(boxes=torch.rand(4, 4)), ValueError, "boxes must have shape .* K = 3"),
    (dict(boxes=None), ValueError, r"masks must have shape \[K, 32, 32\]"),
    (dict(masks=torch.rand(3, 28, 29)), ValueError, "masks must have shape"),
    (dict(image_shape=(32, -2)), ValueError, r"image_shape\[1\] must be >= 0"),
    (dict(padding=-3), ValueError, "padding must be >= 0"),
]


@pytest.mark.parametrize("change,exc,match", LABEL_ERRORS)
def test_labels_bad_input_raises(change, exc, match):
    with pytest.raises(exc, match=match):
        ops.masks_to_labels(**{**_good(), "scores": torch.rand(3), **change})


# --- torch.compile ------------------------------------------------------------------------


def test_torch_compile_fullgraph(rng):
    masks = torch.from_numpy(rng.random((6, 28, 28)).astype(np.float32))
    boxes = torch.from_numpy(make_boxes(rng, 6, 40, 40))
    scores = torch.rand(6)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(m, b, s):
        return (
            ops.paste_masks(m, b, (40, 40)),
            ops.paste_masks(m, b, (40, 40), threshold=0.5),
            ops.masks_to_labels(m, b, s, (40, 40)),
        )

    for got, want in zip(
        f(masks, boxes, scores),
        (
            ops.paste_masks(masks, boxes, (40, 40)),
            ops.paste_masks(masks, boxes, (40, 40), threshold=0.5),
            ops.masks_to_labels(masks, boxes, scores, (40, 40)),
        ),
    ):
        assert got.dtype == want.dtype and torch.equal(got, want)


# --- GPU --------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu_exactly(rng, dtype):
    h, w = 300, 260
    k = 400
    masks = torch.from_numpy(rng.random((k, 28, 28))).to(dtype)
    boxes = torch.from_numpy(make_boxes(rng, k, h, w)).to(dtype)
    scores = torch.from_numpy(rng.choice([0.1, 0.5, 0.9], k)).to(dtype)
    for padding in (0, 1, 2):
        cpu = ops.paste_masks(masks, boxes, (h, w), padding=padding)
        gpu = ops.paste_masks(masks.cuda(), boxes.cuda(), (h, w), padding=padding)
        assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
        binary = ops.paste_masks(masks.cuda(), boxes.cuda(), (h, w), padding, 0.5)
        assert binary.dtype == torch.bool and torch.equal(binary.cpu(), cpu > 0.5)
        labels = ops.masks_to_labels(masks, boxes, scores, (h, w), 0.5, padding)
        gl = ops.masks_to_labels(masks.cuda(), boxes.cuda(), scores.cuda(), (h, w), 0.5, padding)
        assert gl.is_cuda and gl.dtype == torch.int32 and torch.equal(gl.cpu(), labels)
    full = torch.from_numpy(rng.random((30, h, w))).to(dtype)
    cpu = ops.masks_to_labels(full, None, scores[:30], (h, w))
    assert torch.equal(
        ops.masks_to_labels(full.cuda(), None, scores[:30].cuda(), (h, w)).cpu(), cpu
    )
    empty = ops.paste_masks(masks[:0].cuda(), boxes[:0].cuda(), (h, w))
    assert empty.shape == (0, h, w) and empty.is_cuda


@pytest.mark.gpu
def test_cupy_in_cupy_out(rng):
    cp = pytest.importorskip("cupy")
    masks = rng.random((50, 28, 28)).astype(np.float32)
    boxes = make_boxes(rng, 50, 100, 120)
    scores = rng.random(50).astype(np.float32)
    got = ops.paste_masks(cp.asarray(masks), cp.asarray(boxes), (100, 120), threshold=0.5)
    assert isinstance(got, cp.ndarray) and got.dtype == cp.bool_
    np.testing.assert_array_equal(got.get(), ops.paste_masks(masks, boxes, (100, 120), 1, 0.5))
    labels = ops.masks_to_labels(
        cp.asarray(masks), cp.asarray(boxes), cp.asarray(scores), (100, 120)
    )
    assert isinstance(labels, cp.ndarray) and labels.dtype == cp.int32
    np.testing.assert_array_equal(
        labels.get(), ops.masks_to_labels(masks, boxes, scores, (100, 120))
    )
