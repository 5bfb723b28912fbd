"""Transforms keep the image, boxes and masks consistent: every box is drawn into the mask as
its own instance, so after a transform each box must still be its instance's extent."""

import numpy as np
import pytest
import torch

from fastdet.data import transforms


def sample(rng, h=120, w=170, k=5, channels=1):
    """Random image; k boxes on the integer grid, each painted as instance i + 1."""
    image = torch.from_numpy(rng.random((channels, h, w), dtype=np.float32))
    inst = torch.zeros(h, w, dtype=torch.int32)
    boxes = []
    for i in range(k):
        x1, y1 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x2, y2 = x1 + int(rng.integers(4, 20)), y1 + int(rng.integers(4, 20))
        inst[y1:y2, x1:x2] = i + 1  # may overlap earlier ones: extents are checked with k = 1
        boxes.append([x1, y1, x2, y2])
    return {
        "image": image,
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.arange(1, k + 1),
        "mask": (inst > 0).to(torch.uint8),
        "instances": inst,
        "id": "x",
        "meta": {},
    }


def extent(inst, i):
    ys, xs = torch.nonzero(inst == i, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def single_box(rng, h=100, w=140):
    return sample(rng, h, w, k=1)


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print("seed", seed)
    return np.random.default_rng(seed)


def test_flips_move_boxes_with_the_masks_and_twice_is_identity(rng):
    s = single_box(rng)
    for flip in (transforms.RandomHorizontalFlip(p=1.0), transforms.RandomVerticalFlip(p=1.0)):
        f = flip(s)
        assert extent(f["instances"], 1) == f["boxes"][0].tolist()
        assert torch.equal(f["mask"], (f["instances"] > 0).to(torch.uint8))
        back = flip(f)
        for k in ("image", "boxes", "mask", "instances"):
            assert torch.equal(back[k], s[k]), k
    assert s["meta"] == {}  # the input is not modified


def test_flip_probability_zero_is_a_no_op_and_generator_reproduces(rng):
    s = sample(rng)
    assert transforms.RandomHorizontalFlip(p=0.0)(s) is s
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = [transforms.RandomHorizontalFlip(0.5, g1)(s)["meta"].get("flipped") for _ in range(20)]
    b = [transforms.RandomHorizontalFlip(0.5, g2)(s)["meta"].get("flipped") for _ in range(20)]
    assert a == b and None in a and ("x",) in a


@pytest.mark.parametrize("h,w", [(120, 170), (300, 90), (50, 50)])
def test_resize_follows_the_shorter_and_longer_side_rule(rng, h, w):
    r = transforms.Resize(60, 100)
    out = r(sample(rng, h, w, k=1))
    nh, nw = out["image"].shape[-2:]
    assert min(nh, nw) == 60 or max(nh, nw) == 100
    assert max(nh, nw) <= 100 and min(nh, nw) <= 60
    assert out["mask"].shape == out["instances"].shape == (nh, nw)
    assert out["mask"].dtype == torch.uint8 and out["instances"].dtype == torch.int32
    # the box scales with the instance it outlines (nearest-neighbour masks: within a pixel)
    assert np.allclose(extent(out["instances"], 1), out["boxes"][0].tolist(), atol=1.0)
    assert out["meta"]["scale"] == pytest.approx((nh / h, nw / w))


def test_resize_is_exact_for_an_integer_factor(rng):
    s = single_box(rng, 50, 70)
    out = transforms.Resize(100, 1000)(s)
    assert out["image"].shape[-2:] == (100, 140)
    assert torch.equal(out["boxes"], s["boxes"] * 2)
    assert extent(out["instances"], 1) == out["boxes"][0].tolist()


def test_random_crop_clips_drops_and_keeps_labels_aligned(rng):
    s = sample(rng, 120, 170, k=8)
    out = transforms.RandomCrop(
        (60, 80), torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    )(s)
    y0, x0, ch, cw = out["meta"]["crop"]
    assert out["image"].shape[-2:] == (60, 80) == (ch, cw)
    assert torch.equal(out["image"], s["image"][:, y0 : y0 + 60, x0 : x0 + 80])
    want = []
    for b, lab in zip(s["boxes"].tolist(), s["labels"].tolist()):
        c = [
            min(max(b[0] - x0, 0), 80),
            min(max(b[1] - y0, 0), 60),
            min(max(b[2] - x0, 0), 80),
            min(max(b[3] - y0, 0), 60),
        ]
        if c[2] > c[0] and c[3] > c[1]:
            want.append((c, lab))
    assert out["boxes"].tolist() == [c for c, _ in want]
    assert out["labels"].tolist() == [lab for _, lab in want]
    assert out["meta"]["dropped_boxes"] == len(s["boxes"]) - len(want)


def test_random_crop_never_exceeds_the_image(rng):
    s = sample(rng, 40, 30, k=2)
    out = transforms.RandomCrop(100)(s)
    assert out["image"].shape[-2:] == (40, 30) and torch.equal(out["boxes"], s["boxes"])


def test_window_maps_center_and_edges():
    s = {"image": torch.tensor([[[-1000.0, -600.0, -1350.0, 150.0, 400.0]]]), "meta": {}}
    out = transforms.Window(-600, 1500)(s)["image"].flatten().tolist()
    assert out == pytest.approx([350 / 1500, 0.5, 0.0, 1.0, 1.0])  # lower edge: -1350
    with pytest.raises(ValueError, match="window width must be a finite number > 0"):
        transforms.Window(40, 0)


def test_histogram_equalization_spreads_and_keeps_order(rng):
    img = torch.from_numpy(rng.beta(8, 2, size=(1, 64, 64)).astype(np.float32))  # bunched near 1
    out = transforms.HistogramEqualization()({"image": img, "meta": {}})["image"]
    assert out.shape == img.shape and 0 <= out.min() and out.max() <= 1
    order = torch.argsort(img.flatten())
    assert (out.flatten()[order].diff() >= 0).all()  # monotonic mapping
    assert abs(float(out.mean()) - 0.5) < 0.05 and float(img.mean()) > 0.7


def test_caffe_normalize_bgr_means():
    rgb = torch.tensor([10.0, 20.0, 30.0])[:, None, None].expand(3, 2, 2)
    out = transforms.CaffeNormalize()({"image": rgb, "meta": {}})["image"]
    assert out[:, 0, 0].tolist() == pytest.approx([30 - 102.9801, 20 - 115.9465, 10 - 122.7717])
    gray = transforms.CaffeNormalize(input_max=1.0)(
        {"image": torch.full((1, 2, 2), 0.5), "meta": {}}
    )["image"]
    assert gray.shape == (3, 2, 2)
    assert gray[:, 1, 1].tolist() == pytest.approx([127.5 - m for m in transforms.CAFFE_BGR_MEANS])
    with pytest.raises(ValueError, match="needs 1 or 3 channels, got 2"):
        transforms.CaffeNormalize()({"image": torch.zeros(2, 2, 2), "meta": {}})


def test_compose_and_argument_errors(rng):
    s = sample(rng)
    out = transforms.Compose(
        [
            transforms.Resize(60, 90),
            transforms.RandomHorizontalFlip(1.0),
            transforms.Window(0.5, 1.0),
        ]
    )(s)
    assert out["meta"]["flipped"] == ("x",) and "scale" in out["meta"]
    with pytest.raises(ValueError, match="need 0 < min_size <= max_size"):
        transforms.Resize(800, 600)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        transforms.RandomVerticalFlip(1.5)
    with pytest.raises(ValueError, match="size must be a positive int"):
        transforms.RandomCrop((0, 5))
    with pytest.raises(
        ValueError, match=r"sample\['image'\] must be a \[C, H, W\] tensor, got \(4, 4\)"
    ):
        transforms.Resize()({"image": torch.zeros(4, 4)})
