"""Limits and argument checks of the public ops: byte order never changes a result, every scalar
argument at a bad value raises naming it, roi_align's sampling_ratio is bounded, and outputs
whose size overflows int64 or exceeds FASTDET_MAX_OUTPUT_BYTES are refused before allocation."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.ops import _arrays

# ---------------------------------------------------------------------------- byte order


def _swapped(x):
    """x with the same values in the other byte order ('>f8' on a little-endian machine)."""
    return x.astype(x.dtype.newbyteorder("S"))


def _equal(a, b):
    if isinstance(a, tuple):
        return all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def _byte_order_arrays(make, rng):
    """The arguments of BYTE_ORDER_CASES, by name: float64 boxes, scores, classes, a feature
    map, RoIs and box codes."""
    b1, b2 = make.clustered(40, np.float64), make.boxes(30, np.float64)
    s, c = make.scores(40, np.float64), make.classes(40)
    x = rng.standard_normal((2, 3, 12, 16))
    r = np.concatenate([rng.integers(0, 2, (9, 1)), b2[:9] / 40], 1)
    codes = rng.normal(0, 1, (30, 8))
    return dict(b1=b1, b2=b2, s=s, c=c, x=x, r=r, codes=codes, b2_reversed=b2[::-1].copy())


_CODER = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
# op: (a call, the names of its arguments in _byte_order_arrays)
BYTE_ORDER_CASES = {
    "box_iou": (ops.box_iou, "b1 b2"),
    "generalized_box_iou": (ops.generalized_box_iou, "b1 b2"),
    "box_area": (ops.box_area, "b1"),
    "clip_boxes_to_image": (lambda b: ops.clip_boxes_to_image(b, (300, 400)), "b1"),
    "remove_small_boxes": (lambda b: ops.remove_small_boxes(b, 50.0), "b1"),
    "nms": (lambda b, s: ops.nms(b, s, 0.5), "b1 s"),
    "batched_nms": (lambda b, s, c: ops.batched_nms(b, s, c, 0.5), "b1 s c"),
    "soft_nms": (lambda b, s: ops.soft_nms(b, s, 0.3, method="linear"), "b1 s"),
    "roi_align": (lambda x, r: ops.roi_align(x, r, 3, 1.0, 2, True), "x r"),
    "encode_single": (_CODER.encode_single, "b2 b2_reversed"),
    "decode_single": (_CODER.decode_single, "codes b2"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("op", list(BYTE_ORDER_CASES))
def test_byte_order_does_not_change_the_result(make, rng, op, dtype):
    fn, names = BYTE_ORDER_CASES[op]
    arrays = _byte_order_arrays(make, rng)
    args = tuple(arrays[name] for name in names.split())
    native = tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in args)
    want = fn(*native)
    got = fn(*(_swapped(a) for a in native))
    assert _equal(got, want), op
    for out in got if isinstance(got, tuple) else (got,):
        assert out.dtype.isnative


def test_big_endian_float64_keeps_float64_range_and_precision():
    big = np.array([[0, 0, 1e200, 1e100], [0, 0, 1 + 2**-40, 1]], ">f8")
    np.testing.assert_array_equal(ops.box_area(big), [1e300, 1 + 2**-40])
    assert ops.box_area(big).dtype == np.float64
    iou = ops.box_iou(big[1:], np.array([[0, 0, 1, 1]], ">f8"))
    assert iou[0, 0] == 1 / (1 + 2**-40)


# ---------------------------------------------------------------------------- scalar arguments

_B = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
_S = torch.tensor([0.9, 0.8])
_X = torch.rand(1, 2, 8, 8)
_R = torch.tensor([[0.0, 1.0, 1.0, 5.0, 5.0]])


class _Images:
    tensors = torch.zeros(1, 3, 32, 32)


CALLS = {
    "nms.iou_threshold": lambda v: ops.nms(_B, _S, v),
    "batched_nms.iou_threshold": lambda v: ops.batched_nms(_B, _S, torch.tensor([0, 1]), v),
    "soft_nms.iou_threshold": lambda v: ops.soft_nms(_B, _S, iou_threshold=v, method="linear"),
    "soft_nms.sigma": lambda v: ops.soft_nms(_B, _S, sigma=v),
    "soft_nms.score_threshold": lambda v: ops.soft_nms(_B, _S, score_threshold=v),
    "roi_align.spatial_scale": lambda v: ops.roi_align(_X, _R, 2, v),
    "roi_align.sampling_ratio": lambda v: ops.roi_align(_X, _R, 2, 1.0, v),
    "roi_align.output_size": lambda v: ops.roi_align(_X, _R, v),
    "roi_align.aligned": lambda v: ops.roi_align(_X, _R, 2, 1.0, 2, v),
    "RoIAlign.output_size": lambda v: ops.RoIAlign(v, 1.0, 2)(_X, _R),
    "remove_small_boxes.min_size": lambda v: ops.remove_small_boxes(_B, v),
    "clip_boxes_to_image.size": lambda v: ops.clip_boxes_to_image(_B, (v, 10)),
    "BoxCoder.weights": lambda v: ops.BoxCoder((1.0, v, 1.0, 1.0)),
    "BoxCoder.bbox_xform_clip": lambda v: ops.BoxCoder(bbox_xform_clip=v),
    "AnchorGenerator.sizes": lambda v: ops.AnchorGenerator(((v,),), ((1.0,),)),
    "AnchorGenerator.aspect_ratios": lambda v: ops.AnchorGenerator(((32,),), ((v,),)),
    "AnchorGenerator.cache_size": lambda v: ops.AnchorGenerator(cache_size=v),
}
# Values each argument refuses; every argument refuses None, a string and a list.
NAN, INF = float("nan"), float("inf")
REFUSED = {
    "nms.iou_threshold": [NAN, True, 2**2000],
    "batched_nms.iou_threshold": [NAN, np.bool_(False), 1j],
    "soft_nms.iou_threshold": [NAN, True],
    "soft_nms.sigma": [NAN, 0.0, -1.0, False],
    "soft_nms.score_threshold": [NAN, True],
    "roi_align.spatial_scale": [NAN, INF, -INF, 0.0, -0.25, True, 2**2000],
    "roi_align.sampling_ratio": [2.5, 2.0, NAN, True, 1025, 2**31, 2**63, 2**100],
    "roi_align.output_size": [2.5, 0, -3, True, (2, 2, 2), (2,), 2**31, 2**63],
    "roi_align.aligned": [1, 0, "False", 1.0],
    "RoIAlign.output_size": [2.5, 0],
    "remove_small_boxes.min_size": [NAN, True],
    "clip_boxes_to_image.size": [NAN, -1, True],
    "BoxCoder.weights": [NAN, INF, 0.0, True],
    "BoxCoder.bbox_xform_clip": [NAN, True],
    "AnchorGenerator.sizes": [NAN, INF, 0, -32, True],
    "AnchorGenerator.aspect_ratios": [NAN, INF, 0.0, -1.0, True],
    "AnchorGenerator.cache_size": [-1, 2.5, True],
}
CASES = [
    pytest.param(call, v, id=f"{call}={v!r:.20}")
    for call, values in REFUSED.items()
    for v in [None, "0.5", [1]] + values
]


@pytest.mark.parametrize("call,value", CASES)
def test_bad_scalar_arguments_raise_naming_them(call, value):
    name = call.split(".")[1]
    with pytest.raises((ValueError, TypeError), match=name):
        CALLS[call](value)


def test_roi_align_refuses_non_finite_spatial_scale():
    for v in (NAN, INF, -INF):
        with pytest.raises(ValueError, match="spatial_scale must be a"):
            ops.roi_align(_X, _R, 2, v)


def test_roi_align_every_non_positive_sampling_ratio_is_adaptive():
    want = ops.roi_align(_X, _R * 3, 2, 0.5, -1)
    for v in (0, -7, -(2**63), -(2**100)):
        assert torch.equal(ops.roi_align(_X, _R * 3, 2, 0.5, v), want)


def test_roi_align_sampling_ratio_bound_is_quick():
    rois = _R.repeat(8, 1)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"sampling_ratio must be <= 1024, got 2147483648"):
        ops.roi_align(_X, rois, 7, 1.0, 2**31)
    assert time.perf_counter() - start < 1
    got = ops.roi_align(_X, rois, 7, 1.0, 1024)  # the bound itself runs
    assert got.shape == (8, 2, 7, 7) and torch.isfinite(got).all()


def test_anchor_generator_refuses_empty_feature_maps():
    gen = ops.AnchorGenerator(((32,), (64,)), ((1.0,),) * 2)
    fm = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 0, 2)]
    with pytest.raises(ValueError, match=r"feature_maps\[1\] must be a tensor"):
        gen(_Images(), fm)
    with pytest.raises(TypeError, match="feature_maps must be a non-empty list"):
        gen(_Images(), [])
    with pytest.raises(TypeError, match="image_list must have .tensors"):
        gen(object(), fm[:1])


# ---------------------------------------------------------------------------- output sizes


@pytest.fixture
def cap(monkeypatch):
    """Sets FASTDET_MAX_OUTPUT_BYTES for one test (read at call time)."""
    return lambda v: monkeypatch.setenv("FASTDET_MAX_OUTPUT_BYTES", str(v))


@pytest.mark.skipif(not hasattr(os, "sysconf"), reason="no os.sysconf (Windows): no default cap")
def test_default_cap_is_physical_memory(monkeypatch):
    monkeypatch.delenv("FASTDET_MAX_OUTPUT_BYTES", raising=False)
    assert _arrays.max_output_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@pytest.mark.parametrize("kind", ["torch", "numpy"])
@pytest.mark.parametrize("op", ["box_iou", "generalized_box_iou"])
def test_pairwise_output_over_the_cap_raises(cap, kind, op):
    b = torch.zeros(100, 4) if kind == "torch" else np.zeros((100, 4), np.float32)
    cap(100 * 100 * 4 - 1)
    msg = rf"{op}: the output of shape \(100, 100\) would take 40000 bytes, more than the 39999"
    with pytest.raises(ValueError, match=msg + ".*FASTDET_MAX_OUTPUT_BYTES"):
        getattr(ops, op)(b, b)
    cap(100 * 100 * 4)
    assert getattr(ops, op)(b, b).shape == (100, 100)


def test_pairwise_output_the_size_of_memory_raises_before_allocating(monkeypatch):
    monkeypatch.delenv("FASTDET_MAX_OUTPUT_BYTES", raising=False)
    b = torch.zeros(1, 4).expand(2**22, 4)  # 16 MiB once contiguous; the output 64 TiB
    with pytest.raises(ValueError, match=r"box_iou: the output of shape \(4194304, 4194304\)"):
        ops.box_iou(b, b)


def test_roi_align_output_over_the_cap_or_int64_raises(cap):
    x = torch.zeros(1, 4, 1, 1)
    with pytest.raises(ValueError, match="more than int64 can count"):
        ops.roi_align(x, _R, (2**31 - 1, 2**31 - 1))
    cap(2 * 4 * 7 * 7 * 4 - 1)
    with pytest.raises(ValueError, match=r"roi_align: the output of shape \(2, 4, 7, 7\)"):
        ops.roi_align(x, _R.repeat(2, 1), 7)
    with pytest.raises(ValueError, match=r"roi_align: the output of shape \(2, 4, 7, 7\)"):
        ops.roi_align(x.numpy(), _R.repeat(2, 1).numpy(), 7)
    cap(2 * 4 * 7 * 7 * 4)
    assert ops.roi_align(x, _R.repeat(2, 1), 7).shape == (2, 4, 7, 7)


def test_anchor_output_over_the_cap_raises(cap):
    gen = ops.AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),))
    huge = torch.zeros(1, 1, 1, 1).expand(1, 1, 2**20, 2**20)  # no memory behind it
    images = type("I", (), {"tensors": torch.zeros(1, 1, 1, 1).expand(1, 3, 2**20, 2**20)})
    with pytest.raises(
        ValueError, match=r"AnchorGenerator: the output of shape \(3298534883328, 4\)"
    ):
        gen(images, [huge])
    cap(10 * 10 * 3 * 16 - 1)
    small = torch.zeros(1, 1, 10, 10)
    with pytest.raises(ValueError, match="AnchorGenerator"):
        gen(images, [small])


def test_bad_cap_value_raises_naming_the_variable(cap):
    cap("lots")
    with pytest.raises(ValueError, match="FASTDET_MAX_OUTPUT_BYTES must be a number of bytes"):
        ops.box_iou(_B, _B)


def test_check_output_size_counts_in_python_ints():
    like = np.zeros(1, np.float64)
    with pytest.raises(ValueError, match="more than int64 can count"):
        _arrays.check_output_size("op", (2**32, 2**32), like)
    with pytest.raises(ValueError, match=r"op: the output of shape \(3, 2305843009213693952\)"):
        _arrays.check_output_size("op", (3, 2**61), like)  # fits int64, its bytes do not
    _arrays.check_output_size("op", (0, 2**62), like)  # empty: nothing to refuse


# ---------------------------------------------------------------------------- coordinate range


@pytest.mark.parametrize("dtype,limit", [(np.float32, 2.0**62), (np.float64, 2.0**510)])
@pytest.mark.parametrize("op", ["box_iou", "generalized_box_iou", "nms", "soft_nms"])
def test_coordinates_whose_areas_overflow_raise(op, dtype, limit):
    def run(b):
        if op in ("nms", "soft_nms"):
            return getattr(ops, op)(b, np.ones(len(b), dtype), 0.5)
        return getattr(ops, op)(b, b)

    at = np.array([[-limit, -limit, limit, limit], [0, 0, 1, 1]], dtype)
    run(at)  # the limit itself: areas and unions still fit
    if op == "box_iou":
        np.testing.assert_allclose(
            ops.box_iou(at, at), [[1, 0.25 / limit**2], [0.25 / limit**2, 1]]
        )
    beyond = at.copy()
    beyond[0, 2] = np.nextafter(dtype(limit), dtype(np.inf))
    with pytest.raises(ValueError, match=r"boxes1? has coordinates beyond \+-"):
        run(beyond)
    beyond[0, 2] = np.nan
    with pytest.raises(ValueError, match=r"boxes1? contains NaN or inf"):
        run(beyond)


def test_batched_nms_refuses_coordinates_whose_areas_overflow():
    b = np.array([[0, 0, 1e20, 1e20], [0, 0, 1e20, 1e20]], np.float32)
    with pytest.raises(ValueError, match="boxes has coordinates beyond"):
        ops.batched_nms(b, np.ones(2, np.float32), np.zeros(2, np.int64), 0.5)
    keep = ops.batched_nms(b.astype(np.float64), np.ones(2), np.zeros(2, np.int64), 0.5)
    assert keep.tolist() == [0]  # in float64 the same boxes are fine: IoU 1
