"""Tiny in-memory segmentation data for the engine tests: bright discs on a noisy background,
as sample dicts in the datasets' format."""

from __future__ import annotations

import numpy as np
import pytest
import torch


class DiscDataset(torch.utils.data.Dataset):
    """n grey images [1, size, size] in 0..255 with one disc each; mask = the disc."""

    def __init__(self, n: int = 8, size: int = 32, seed: int = 0):
        g = np.random.default_rng(seed)
        yy, xx = np.mgrid[:size, :size]
        self.items = []
        for i in range(n):
            cy, cx = g.uniform(size / 4, 3 * size / 4, 2)
            r = g.uniform(size / 8, size / 4)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
            img = 40 + 140 * mask + g.normal(0, 20, (size, size))
            self.items.append(
                {
                    "image": torch.tensor(img[None], dtype=torch.float32),
                    "mask": torch.from_numpy(mask),
                    "id": f"img{i}",
                    "meta": {"subject": f"s{i % 2}"},
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@pytest.fixture
def discs():
    """(train, val) tiny datasets."""
    return DiscDataset(8, 32, seed=0), DiscDataset(2, 32, seed=1)
