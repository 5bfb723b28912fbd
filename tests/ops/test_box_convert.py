"""box_convert against torchvision.ops.box_convert: every pair of axis-aligned formats, round
trips, dtypes, batched boxes, numpy, and the format errors (rotated formats named as such)."""

import itertools
import re

import numpy as np
import pytest
import torch

from fastdet import ops

FORMATS = ["xyxy", "xywh", "cxcywh"]


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.float32, torch.float64, torch.int32, torch.int64], ids=str
)
@pytest.mark.parametrize("in_fmt,out_fmt", list(itertools.product(FORMATS, FORMATS)))
def test_matches_torchvision(in_fmt, out_fmt, dtype, make, device, tv):
    b = torch.from_numpy(make.boxes(50, np.float64)).round().to(device, dtype)
    got = ops.box_convert(b, in_fmt, out_fmt)
    want = tv.ops.box_convert(b, in_fmt, out_fmt)
    assert got.dtype == want.dtype and got.device == want.device
    assert torch.equal(got, want)
    if in_fmt == out_fmt:
        assert got is not b and got.data_ptr() != b.data_ptr()  # a copy, as torchvision
    if dtype.is_floating_point:  # unrounded coordinates: the same rounding, bit for bit
        b = torch.from_numpy(make.boxes(50, np.float64)).to(device, dtype)
        assert torch.equal(
            ops.box_convert(b, in_fmt, out_fmt), tv.ops.box_convert(b, in_fmt, out_fmt)
        )


@pytest.mark.parametrize("in_fmt,out_fmt", list(itertools.product(FORMATS, FORMATS)))
def test_gradients_match_torchvision(in_fmt, out_fmt, make, tv):
    b = torch.from_numpy(make.boxes(20, np.float64)).requires_grad_()
    w = torch.randn(20, 4, dtype=torch.float64)
    (got,) = torch.autograd.grad((ops.box_convert(b, in_fmt, out_fmt) * w).sum(), b)
    (want,) = torch.autograd.grad((tv.ops.box_convert(b, in_fmt, out_fmt) * w).sum(), b)
    assert torch.equal(got, want)


@pytest.mark.parametrize("fmt", FORMATS[1:])
def test_round_trip(fmt, make):
    b = torch.from_numpy(make.boxes(100, np.float64))
    back = ops.box_convert(ops.box_convert(b, "xyxy", fmt), fmt, "xyxy")
    torch.testing.assert_close(back, b, rtol=1e-12, atol=1e-9)


def test_batched_and_numpy(make, tv):
    b = make.boxes(24).reshape(2, 3, 4, 4)
    for in_fmt, out_fmt in itertools.permutations(FORMATS, 2):
        got = ops.box_convert(b, in_fmt, out_fmt)
        assert isinstance(got, np.ndarray) and got.shape == b.shape and got.dtype == b.dtype
        want = tv.ops.box_convert(torch.from_numpy(b), in_fmt, out_fmt).numpy()
        np.testing.assert_array_equal(got, want)
    same = ops.box_convert(b, "xywh", "xywh")
    assert np.array_equal(same, b) and not np.shares_memory(same, b)


def test_the_known_values():
    b = torch.tensor([[10.0, 15.0, 30.0, 35.0], [23.0, 35.0, 93.0, 95.0]])
    assert ops.box_convert(b, "xyxy", "xywh").tolist() == [[10, 15, 20, 20], [23, 35, 70, 60]]
    assert ops.box_convert(b, "xyxy", "cxcywh").tolist() == [[20, 25, 20, 20], [58, 65, 70, 60]]


@pytest.mark.parametrize("bad", ["xwyh", "cxwyh", "XYXY", ""])
def test_unknown_formats_raise_value_error(bad):
    with pytest.raises(ValueError, match=f"Unsupported format {bad!r}"):
        ops.box_convert(torch.zeros(1, 4), bad, "xyxy")
    with pytest.raises(ValueError, match=f"Unsupported format {bad!r}"):
        ops.box_convert(torch.zeros(1, 4), "xyxy", bad)


@pytest.mark.parametrize("fmt", ["xywhr", "cxcywhr", "xyxyxyxy"])
def test_rotated_formats_name_fastdet_ops_rotated(fmt):
    from fastdet.ops.box_convert import CONVERTERS

    if any(fmt in pair for pair in CONVERTERS):
        pytest.skip("rotated boxes are present in this build (fastdet.ops.rotated)")
    with pytest.raises(ValueError, match="rotated-box format.*fastdet.ops.rotated"):
        ops.box_convert(torch.zeros(1, 5), fmt, "cxcywhr")


def test_non_array_raises_type_error():
    with pytest.raises(TypeError, match="boxes must be a torch.Tensor"):
        ops.box_convert([[0, 0, 1, 1]], "xyxy", "xywh")


def test_compiles():
    b = torch.rand(10, 4)
    f = torch.compile(
        lambda x: ops.box_convert(x, "cxcywh", "xyxy"), fullgraph=True, backend="aot_eager"
    )
    assert torch.equal(f(b), ops.box_convert(b, "cxcywh", "xyxy"))


def test_numpy_views_torch_cannot_share(make, recwarn):
    # negative strides, read-only broadcasts and big-endian arrays are copied, silently
    b = make.boxes(6, np.float64)
    want = ops.box_convert(b, "xyxy", "cxcywh")
    np.testing.assert_array_equal(ops.box_convert(b[::-1], "xyxy", "cxcywh"), want[::-1])
    wide = ops.box_convert(np.broadcast_to(b, (2, 6, 4)), "xyxy", "cxcywh")
    np.testing.assert_array_equal(wide, np.broadcast_to(want, (2, 6, 4)))
    np.testing.assert_array_equal(ops.box_convert(b.astype(">f8"), "xyxy", "cxcywh"), want)
    assert not [w for w in recwarn if "not writable" in str(w.message)]


# --- found by tests/ops/test_fuzz.py ----------------------------------------------------------


@pytest.mark.parametrize("bad", ["XYXY", None, ["xyxy"], 3])
def test_bad_formats_name_the_argument(bad):
    b = torch.zeros(1, 4)
    with pytest.raises(ValueError, match=f"in_fmt: Unsupported format {re.escape(repr(bad))}"):
        ops.box_convert(b, bad, "xyxy")
    with pytest.raises(ValueError, match="out_fmt: Unsupported format"):
        ops.box_convert(b, "xyxy", bad)


def test_axis_aligned_to_rotated_names_both_formats():
    with pytest.raises(ValueError, match="in_fmt 'xyxy' to out_fmt 'xywhr'"):
        ops.box_convert(torch.zeros(1, 4), "xyxy", "xywhr")


@pytest.mark.parametrize("in_fmt,out_fmt", [("xyxy", "xywh"), ("xyxy", "xyxy"), ("xywhr", "xywhr")])
def test_malformed_boxes_raise_naming_boxes(in_fmt, out_fmt):
    k = 5 if in_fmt == "xywhr" else 4
    # the wrong last dimension, even where the formats are equal (torchvision copies)
    with pytest.raises(
        ValueError, match=rf"boxes in format '{in_fmt}' must have shape \[\.\.\., {k}\]"
    ):
        ops.box_convert(torch.zeros(2, 3), in_fmt, out_fmt)
    for dtype in (torch.bool, torch.complex64):  # was a NotImplementedError from torch's `-`
        with pytest.raises(TypeError, match="boxes must be float16"):
            ops.box_convert(torch.zeros(2, k, dtype=dtype), in_fmt, out_fmt)
    for bad in (float("nan"), float("inf")):
        b = torch.zeros(2, k)
        b[1, 2] = bad
        with pytest.raises(ValueError, match="boxes contains NaN or inf"):
            ops.box_convert(b, in_fmt, out_fmt)
        with pytest.raises(ValueError, match="boxes contains NaN or inf"):
            ops.box_convert(b.numpy(), in_fmt, out_fmt)


def test_equal_formats_give_a_native_byte_order_copy():
    b = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=">f8" if np.little_endian else "<f8")
    got = ops.box_convert(b, "xyxy", "xyxy")
    assert got.dtype == np.float64 and got.dtype.isnative
    assert got.tolist() == b.tolist() and not np.shares_memory(got, b)
