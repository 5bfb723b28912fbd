"""AnchorGenerator against torchvision's AnchorGenerator and the reference."""

from typing import NamedTuple

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.ops import _reference as reference


@pytest.fixture
def tv_anchors(tv):
    """torchvision's AnchorGenerator class (skips where torchvision is missing)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    return AnchorGenerator


class ImageList(NamedTuple):
    """What both generators read: a batch [B, C, H, W] and each image's size."""

    tensors: torch.Tensor
    image_sizes: list


FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5


def inputs(height, width, feature_sizes, batch=1, dtype=torch.float32, device="cpu"):
    """An ImageList of `batch` images and one [batch, 1, h, w] feature map per level."""
    images = ImageList(
        torch.zeros(batch, 1, height, width, dtype=dtype, device=device), [(height, width)] * batch
    )
    return images, [
        torch.zeros(batch, 1, h, w, dtype=dtype, device=device) for h, w in feature_sizes
    ]


def fpn_feature_sizes(height, width):
    return [(-(-height // s), -(-width // s)) for s in (4, 8, 16, 32, 64)]  # ceil, as convs give


def assert_same_as_torchvision(ours, theirs, images, features):
    got, want = ours(images, features), theirs(images, features)
    assert len(got) == len(want) == images.tensors.shape[0]
    for g, w in zip(got, want):
        assert g.device == w.device == features[0].device
        assert g.dtype == w.dtype and torch.equal(g, w)


def test_fpn_five_levels_at_800x1344_batch_2_match_torchvision(device, tv_anchors):
    ceil, floor = fpn_feature_sizes(800, 1344), [(800 // s, 1344 // s) for s in (4, 8, 16, 32, 64)]
    for sizes in (ceil, floor):  # as convolutions give, and as pooling gives
        images, features = inputs(800, 1344, sizes, batch=2, device=device)
        ours, theirs = ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS), tv_anchors(FPN_SIZES, FPN_RATIOS)
        assert_same_as_torchvision(ours, theirs, images, features)
        assert ours(images, features)[0].shape == (sum(h * w for h, w in sizes) * 3, 4)


def test_faster_rcnn_preset_gives_nine_anchors_per_position_at_stride_16(tv_anchors):
    ours = ops.AnchorGenerator.faster_rcnn()
    assert ours.num_anchors_per_location() == [9]
    images, features = inputs(608, 800, [(38, 50)])
    got = ours(images, features)[0]
    assert got.shape == (38 * 50 * 9, 4)
    theirs = tv_anchors(((128, 256, 512),), ((0.5, 1.0, 2.0),))
    assert_same_as_torchvision(ours, theirs, images, features)
    assert torch.equal(
        got[9:18] - got[:9], torch.tensor([[16.0, 0.0, 16.0, 0.0]]).expand(9, 4)
    )  # stride 16


@pytest.mark.parametrize("height,width", [(801, 1333), (799, 1001), (37, 53)])
def test_odd_image_sizes_match_torchvision(height, width, tv_anchors):
    images, features = inputs(height, width, fpn_feature_sizes(height, width))
    ours, theirs = ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS), tv_anchors(FPN_SIZES, FPN_RATIOS)
    assert_same_as_torchvision(ours, theirs, images, features)


def test_several_sizes_and_ratios_per_level_match_torchvision(tv_anchors):
    sizes = ((16, 24, 32), (48, 64), (100,))
    ratios = ((0.25, 0.5, 1.0, 2.0, 4.0), (1.0,), (0.7, 1.3))
    images, features = inputs(320, 480, [(80, 120), (40, 60), (20, 30)], batch=3)
    assert_same_as_torchvision(
        ops.AnchorGenerator(sizes, ratios), tv_anchors(sizes, ratios), images, features
    )


def test_float64_feature_maps_match_torchvision(tv_anchors):
    images, features = inputs(256, 320, fpn_feature_sizes(256, 320), dtype=torch.float64)
    got = ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS)(images, features)[0]
    assert got.dtype == torch.float64
    assert torch.equal(got, tv_anchors(FPN_SIZES, FPN_RATIOS)(images, features)[0])


def test_anchors_match_the_reference():
    sizes, ratios = ((32, 48), (64,)), ((0.5, 1.0, 2.0), (1.0, 3.0))
    images, features = inputs(96, 160, [(12, 20), (6, 10)])
    got = ops.AnchorGenerator(sizes, ratios)(images, features)[0]
    want = np.concatenate(
        [
            reference.grid_anchors(sizes[0], ratios[0], (12, 20), (8, 8)),
            reference.grid_anchors(sizes[1], ratios[1], (6, 10), (16, 16)),
        ]
    )
    np.testing.assert_array_equal(got.numpy(), want)


def test_cell_anchors_match_torchvision_and_reference(tv_anchors):
    sizes, ratios = (32, 64, 100), (0.5, 1.0, 2.0, 3.0)
    got = ops.cell_anchors(sizes, ratios)
    assert torch.equal(got, tv_anchors().generate_anchors(sizes, ratios))
    np.testing.assert_array_equal(got.numpy(), reference.cell_anchors(sizes, ratios))


def test_flat_sizes_mean_one_size_per_level(tv_anchors):
    flat = ops.AnchorGenerator((32, 64, 128), (0.5, 1.0, 2.0))
    assert flat.num_anchors_per_location() == [3, 3, 3]
    images, features = inputs(128, 128, [(32, 32), (16, 16), (8, 8)])
    theirs = tv_anchors(((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3)
    assert_same_as_torchvision(flat, theirs, images, features)


def test_repeated_calls_return_the_cached_tensor_for_every_image():
    gen = ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS)
    images, features = inputs(128, 192, fpn_feature_sizes(128, 192), batch=3)
    first = gen(images, features)
    assert first[0] is first[1] is first[2]
    assert gen(images, features)[0] is first[0]


def test_in_place_change_invalidates_the_cache(tv_anchors):
    gen, theirs = ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS), tv_anchors(FPN_SIZES, FPN_RATIOS)
    images, features = inputs(128, 192, fpn_feature_sizes(128, 192), batch=2)
    want = theirs(images, features)[0]
    first = gen(images, features)[0]
    first.add_(7.0)  # e.g. a caller shifting anchors in place
    again = gen(images, features)
    assert torch.equal(again[0], want) and torch.equal(again[1], want)


def test_in_place_change_through_a_view_invalidates_the_cache():
    gen = ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS)
    images, features = inputs(128, 192, fpn_feature_sizes(128, 192))
    first = gen(images, features)[0]
    want = first.clone()
    first[:10, 0].zero_()
    assert torch.equal(gen(images, features)[0], want)


def test_cache_keeps_configurations_apart(tv_anchors):
    gen, theirs = (
        ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS, cache_size=1),
        tv_anchors(FPN_SIZES, FPN_RATIOS),
    )
    configs = [
        inputs(128, 192, fpn_feature_sizes(128, 192)),
        inputs(192, 128, fpn_feature_sizes(192, 128)),
        inputs(128, 192, fpn_feature_sizes(128, 192), dtype=torch.float64),
        inputs(256, 384, [(h, w) for h, w in fpn_feature_sizes(128, 192)]),
    ]  # same maps, stride 2x
    for images, features in configs + configs[::-1]:
        assert_same_as_torchvision(gen, theirs, images, features)


def test_half_precision_feature_maps_are_computed_in_float32(tv_anchors):
    # torchvision does the arithmetic in float16/bfloat16 (offsets of 61 for 58 at stride 16);
    # fastdet computes in float32 and rounds once: torchvision's float32 anchors, cast.
    theirs = tv_anchors(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2)
    images, features = inputs(32, 40, [(4, 5), (2, 3)])
    want = theirs(images, features)[0]
    gen = ops.AnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2)
    for dt in (torch.float16, torch.bfloat16):
        _, features = inputs(32, 40, [(4, 5), (2, 3)], dtype=dt)
        got = gen(images, features)[0]
        assert got.dtype == dt
        assert torch.equal(got, want.to(dt))


def test_mismatched_levels_raise():
    with pytest.raises(ValueError, match="sizes has 2 levels but aspect_ratios has 3"):
        ops.AnchorGenerator(((32,), (64,)), ((1.0,),) * 3)


@pytest.mark.parametrize("sizes,ratios", [(((0,),), ((1.0,),)), (((32,),), ((-1.0,),))])
def test_non_positive_sizes_or_ratios_raise(sizes, ratios):
    with pytest.raises(ValueError, match="sizes and aspect_ratios must be positive"):
        ops.AnchorGenerator(sizes, ratios)


def test_wrong_number_of_feature_maps_raises():
    gen = ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS)
    images, features = inputs(128, 128, [(32, 32), (16, 16)])
    with pytest.raises(ValueError, match="got 2 feature maps but the generator has 5 levels"):
        gen(images, features)


def test_anchor_generation_compiles(tv_anchors):
    gen = ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS)
    images, features = inputs(128, 192, fpn_feature_sizes(128, 192), batch=2)
    compiled = torch.compile(lambda im, fm: gen(im, fm), backend="aot_eager", fullgraph=True)
    got = compiled(images, features)
    want = tv_anchors(FPN_SIZES, FPN_RATIOS)(images, features)
    assert len(got) == 2 and all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_custom_op_passes_opcheck(dtype, device):
    one = [ops.cell_anchors((32, 64), (0.5, 1.0, 2.0), dtype, device)]
    two = one + [ops.cell_anchors((128,), (1.0,), dtype, device)]
    strided = [b.t().contiguous().t() for b in two]  # same values, column-major
    for args in [
        (one, [4, 5], [8, 8]),
        (two, [4, 5, 2, 3], [8, 8, 16, 16]),
        (two, [0, 5, 2, 0], [8, 8, 16, 16]),  # empty levels
        (strided, [4, 5, 2, 3], [8, 8, 16, 16]),
    ]:
        torch.library.opcheck(torch.ops.fastdet.grid_anchors, args)
    assert torch.equal(
        torch.ops.fastdet.grid_anchors(strided, [4, 5, 2, 3], [8, 8, 16, 16]),
        torch.ops.fastdet.grid_anchors(two, [4, 5, 2, 3], [8, 8, 16, 16]),
    )
