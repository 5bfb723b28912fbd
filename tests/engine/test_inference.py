"""Sliding-window inference, input reading and mask writing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastdet.engine import SegConfig
from fastdet.engine.inputs import read_input
from fastdet.engine.tasks.seg.data import match_channels, standardize
from fastdet.engine.tasks.seg.predict import (
    _starts,
    predict_logits,
    sliding_window,
    write_png_mask,
    write_volume_mask,
)


class Pointwise(nn.Module):
    """A 1x1 convolution: tiling cannot change its output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.conv(x)


class Counter(nn.Module):
    """Outputs ones and records each window's size."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return torch.ones_like(x[:, :1])


def test_sliding_window_matches_whole_image():
    model, x = Pointwise(), torch.randn(2, 1, 50, 37)
    whole = model(x)
    for tile, overlap in [(16, 4), (20, 0), (64, 8), (7, 6)]:
        torch.testing.assert_close(sliding_window(model, x, tile, overlap), whole)


def test_sliding_window_covers_with_full_tiles():
    m = Counter()
    out = sliding_window(m, torch.zeros(1, 1, 40, 30), 16, 4)
    assert set(m.sizes) == {(16, 16)}  # edge windows shifted inward, never cut
    assert len(m.sizes) == 3 * 3  # stride 12: rows start at 0, 12, 24; columns at 0, 12, 14
    torch.testing.assert_close(out, torch.ones(1, 1, 40, 30))
    assert _starts(40, 16, 12) == [0, 12, 24] and _starts(30, 16, 12) == [0, 12, 14]
    assert _starts(10, 16, 12) == [0]
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(m, torch.zeros(1, 1, 8, 8), 4, 4)


def test_predict_logits_resizes_back():
    cfg = SegConfig(model="unet", in_channels=1, size=16)
    m = Counter()
    logits = predict_logits(m, torch.rand(3, 40, 24), cfg, tile=16, overlap=4)
    assert logits.shape == (40, 24)
    assert max(max(s) for s in m.sizes) <= 16  # 40x24 -> 27x16, tiled at 16


def test_standardize_and_channels():
    x = torch.rand(2, 1, 8, 8) * 255 + 7
    z = standardize(x)
    torch.testing.assert_close(z.mean((1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    rgba = torch.rand(4, 5, 5)
    torch.testing.assert_close(match_channels(rgba, 1), rgba[:3].mean(0, keepdim=True))
    assert match_channels(torch.rand(1, 5, 5), 3).shape == (3, 5, 5)


def test_read_inputs(tmp_path):
    import tifffile
    from PIL import Image

    a = (np.arange(12 * 10).reshape(12, 10) % 256).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "g.png")
    tifffile.imwrite(tmp_path / "t.tif", a.astype(np.uint16))
    rgba = np.stack([a, a, a, np.full_like(a, 255)], -1)
    Image.fromarray(rgba).save(tmp_path / "c.png")
    for name, channels in [("g.png", 1), ("t.tif", 1), ("c.png", 3)]:
        kind, img, _ = read_input(tmp_path / name)
        assert kind == "image" and img.shape == (channels, 12, 10) and img.dtype == torch.float32
    with pytest.raises(FileNotFoundError):
        read_input(tmp_path / "missing.png")


def test_write_masks(tmp_path):
    from PIL import Image

    m = np.zeros((6, 7), bool)
    m[2:4, 1:5] = True
    p = write_png_mask(tmp_path / "o" / "m.png", m)
    back = np.array(Image.open(p))
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 255}
    assert np.array_equal(back > 0, m)
    vol = np.zeros((3, 6, 7), bool)
    vol[1] = m
    p = write_volume_mask(tmp_path / "v", vol, (2.0, 0.5, 0.5))
    nib = pytest.importorskip("nibabel")
    img = nib.load(p)
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), vol.astype(np.uint8))
    assert img.header.get_zooms() == (0.5, 0.5, 2.0)
