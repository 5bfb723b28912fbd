"""Post-processing on constructed masks (2-D and 3-D) and the classical segmenter on synthetic
images with a known answer."""

import numpy as np
import pytest
import torch

from fastdet.metrics import (
    classical_segment,
    clean_mask,
    dice,
    dsb_score,
    fill_holes,
    keep_largest_component,
    label_components,
    remove_small_objects,
    split_instances,
)


def disc(shape, centre, r):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= r * r


def two_touching_discs(shape=(60, 80), r=12):
    # centres 1.6 r apart: the discs overlap in a narrow neck
    return disc(shape, (30, 25), r) | disc(shape, (30, 25 + int(1.6 * r)), r)


def ring(shape=(40, 40)):
    c = (shape[0] // 2, shape[1] // 2)
    return disc(shape, c, 12) & ~disc(shape, c, 5)


# ---------------------------------------------------------------- components


def test_keep_largest_component():
    m = np.zeros((20, 20), bool)
    m[2:5, 2:5] = True  # 9 px
    m[10:16, 10:16] = True  # 36 px
    m[0, 19] = True
    out = keep_largest_component(m)
    assert out.dtype == bool and out.sum() == 36 and out[12, 12] and not out[3, 3]
    assert not keep_largest_component(np.zeros((5, 5))).any()
    # diagonal neighbours join only with connectivity 2
    d = np.eye(6, dtype=bool)
    d[0:3, 4:6] = True
    assert keep_largest_component(d).sum() == 6  # 2x3 block beats single pixels
    assert keep_largest_component(d, connectivity=2).sum() == d.sum()


def test_keep_largest_component_3d_and_torch():
    v = np.zeros((6, 10, 10), bool)
    v[1:5, 1:5, 1:5] = True
    v[0, 9, 9] = True
    out = keep_largest_component(torch.from_numpy(v))
    assert isinstance(out, np.ndarray) and out.sum() == 64 and not out[0, 9, 9]


def test_remove_small_objects_drops_isolated_pixels():
    m = np.zeros((30, 30), bool)
    m[5:15, 5:15] = True
    rng = np.random.default_rng(0)
    specks = rng.integers(20, 30, (15, 2))
    m[specks[:, 0], specks[:, 1]] = True
    out = remove_small_objects(m, 10)
    assert out.sum() == 100 and out[5:15, 5:15].all()
    assert remove_small_objects(m, 0).sum() == m.sum()
    assert not remove_small_objects(m, 101).any()  # the square has exactly 100 px
    assert remove_small_objects(m, 100).sum() == 100  # kept: size >= min_size
    _, n = label_components(out)
    assert n == 1


def test_fill_holes():
    r = ring()
    filled = fill_holes(r)
    np.testing.assert_array_equal(filled, disc(r.shape, (20, 20), 12))
    # only small holes: a 1-px hole goes, the big one stays
    m = r.copy()
    m[20, 10] = False  # inside the ring body, a one-pixel hole
    out = fill_holes(m, max_size=1)
    assert out[20, 10] and not out[20, 20]
    # a background region that touches the border is not a hole
    c = np.zeros((10, 10), bool)
    c[:, 3] = c[:, 6] = True
    np.testing.assert_array_equal(fill_holes(c), c)


def test_fill_holes_3d_and_per_slice():
    tube = np.stack([ring((30, 30)) for _ in range(5)])  # a lumen open at both ends
    assert (fill_holes(tube) == tube).all()  # in 3-D it reaches the border
    per = fill_holes(tube, per_slice=True)
    assert per.sum() == 5 * disc((30, 30), (15, 15), 12).sum()
    closed = tube.copy()
    closed[0] = closed[-1] = disc((30, 30), (15, 15), 12)  # capped: a 3-D hole
    assert fill_holes(closed).all(axis=0)[15, 15]


def test_split_instances_two_touching_discs():
    m = two_touching_discs()
    assert label_components(m)[1] == 1
    lab = split_instances(m)
    assert lab.dtype == np.int32 and set(np.unique(lab)) == {0, 1, 2}
    assert ((lab > 0) == m).all()  # nothing lost, nothing added
    # each disc's centre is in a different instance, and each instance is mostly one disc
    assert lab[30, 25] != lab[30, 44]
    truth = np.zeros(m.shape, np.int32)
    truth[m] = 1
    truth[m & (np.arange(m.shape[1])[None] > 25 + 0.8 * 12)] = 2
    assert dsb_score(lab, truth) > 0.9


def test_split_instances_3d_and_edge_cases():
    v = disc((30, 30, 50), (15, 15, 14), 9) | disc((30, 30, 50), (15, 15, 29), 9)
    lab = split_instances(v)
    assert lab.max() == 2 and lab[15, 15, 14] != lab[15, 15, 29]
    assert not split_instances(np.zeros((8, 8))).any()
    line = np.zeros((5, 9), bool)
    line[2, :] = True  # flat, one pixel wide: still one instance, nothing lost
    out = split_instances(line)
    assert out[line].min() >= 1 and out.max() >= 1
    single = np.zeros((5, 5), bool)
    single[2, 2] = True
    assert split_instances(single).sum() == 1


def test_clean_mask_on_unet_like_output():
    rng = np.random.default_rng(1)
    truth = disc((64, 64), (32, 32), 20)
    prob = np.where(truth, 0.9, 0.1) + rng.normal(0, 0.05, truth.shape)
    prob[truth & (rng.random(truth.shape) < 0.02)] = 0.0  # pinholes
    prob[rng.integers(0, 64, 20), rng.integers(0, 64, 20)] = 1.0  # isolated false pixels
    prob[32, 32] = 0.0
    raw = prob > 0.5
    out = clean_mask(prob, threshold=0.5, min_size=10)
    assert dice(out, truth) > dice(raw, truth)
    assert (out == truth).mean() > 0.995
    assert clean_mask(raw, min_size=10, keep_largest=True).sum() <= out.sum()


def test_postprocess_errors():
    with pytest.raises(ValueError, match=r"mask must be 2-D or 3-D, got shape \(4,\)"):
        fill_holes(np.zeros(4, bool))
    with pytest.raises(ValueError, match="mask must be binary"):
        keep_largest_component(np.full((3, 3), 2))
    with pytest.raises(TypeError, match="mask must be a numpy.ndarray or torch.Tensor, got list"):
        remove_small_objects([[1]], 1)
    with pytest.raises(ValueError, match=r"connectivity must be an int in \[1, 2\], got 3"):
        keep_largest_component(np.zeros((3, 3)), connectivity=3)
    with pytest.raises(ValueError, match="min_size must be >= 0, got -1"):
        remove_small_objects(np.zeros((3, 3)), -1)
    with pytest.raises(ValueError, match="max_size must be >= 0 or None, got -2"):
        fill_holes(np.zeros((3, 3)), max_size=-2)
    with pytest.raises(ValueError, match="min_distance must be >= 1, got 0"):
        split_instances(np.ones((3, 3)), min_distance=0)


# ---------------------------------------------------------------- classical segmenter


def synthetic_image(rng, dark=False):
    m = two_touching_discs() | disc((60, 80), (10, 70), 5)
    img = np.where(m, 0.8, 0.2) + rng.normal(0, 0.08, m.shape)
    return (1 - img if dark else img), m


@pytest.mark.parametrize("dark", [False, True])
def test_classical_segment_finds_and_splits_objects(rng, dark):
    img, truth = synthetic_image(rng, dark)
    mask, labels = classical_segment(img)
    assert mask.dtype == bool and labels.dtype == np.int32 and mask.shape == img.shape
    assert dice(mask, truth) > 0.95
    assert labels.max() == 3  # two touching discs split, plus the small one
    assert ((labels > 0) == mask).all()
    explicit = classical_segment(img, polarity="dark" if dark else "bright")[0]
    np.testing.assert_array_equal(explicit, mask)
    assert classical_segment(img, split=False)[1].max() == 2


def test_classical_segment_rgb_3d_and_constant(rng):
    img, truth = synthetic_image(rng)
    rgb = np.stack([img, img, img], -1)
    assert dice(classical_segment(rgb, channel_axis=-1)[0], truth) > 0.95
    vol = np.stack([img] * 4)
    mask, labels = classical_segment(torch.from_numpy(vol), min_distance=7)
    assert mask.shape == vol.shape and dice(mask[2], truth) > 0.9
    mask, labels = classical_segment(np.full((16, 16), 3.0))
    assert not mask.any() and not labels.any()


def test_classical_segment_errors():
    with pytest.raises(ValueError, match="polarity must be one of"):
        classical_segment(np.zeros((8, 8)), polarity="up")
    with pytest.raises(ValueError, match=r"image must be 2-D or 3-D .*got shape \(8,\)"):
        classical_segment(np.zeros(8))
    with pytest.raises(ValueError, match="image must be finite"):
        classical_segment(np.full((8, 8), np.nan))
    with pytest.raises(TypeError, match="image must be a numeric array, got dtype <U1"):
        classical_segment(np.array([["a"]]))
    with pytest.raises(TypeError, match="image must be a numpy.ndarray or torch.Tensor, got list"):
        classical_segment([[0.0]])
