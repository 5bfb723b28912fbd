"""Shared pieces of the engine tests: tiny in-memory segmentation data (bright discs on a noisy
background, as sample dicts in the datasets' format), tiny training configs, and the command
line's train/predict/evaluate argument lists. ddp_*worker.py import this file as a plain module
(torchrun runs them as scripts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdet.engine import DetConfig, SegConfig

# Configs small enough to train in seconds on the CPU, without a progress bar: a U-Net (lr 0.01
# is SegConfig's default too) and a Faster R-CNN (ResNet-18 FPN) on 64 px images.
SEG_TINY = dict(model="unet", depth=2, width=4, epochs=2, batch_size=4, size=32, lr=0.01)
DET_TINY = dict(model="resnet18_fpn", epochs=2, batch_size=2, min_size=64, max_size=96, seed=0)
ON_CPU = dict(progress=False, device="cpu")


def seg_tiny(**kw) -> SegConfig:
    """SEG_TINY on the CPU, kw overriding."""
    return SegConfig(**{**SEG_TINY, **ON_CPU, **kw})


def det_tiny(**kw) -> DetConfig:
    """DET_TINY on the CPU, kw overriding."""
    return DetConfig(**{**DET_TINY, **ON_CPU, **kw})


def cli_args(*words) -> list[str]:
    """A command line for fastdet.cli.main: every word as a string."""
    return [str(w) for w in words]


def train_args(task: str, data, layout: str, model: str, out, *flags) -> list[str]:
    """`train <task>` on a data folder of a layout, writing the run to out."""
    return cli_args(
        "train", task, "--data", data, "--layout", layout, "--model", model, "--out", out, *flags
    )


def predict_args(task: str, checkpoint, inputs: list, out, *flags) -> list[str]:
    """`predict <task>` of a checkpoint on input files or folders, writing to out."""
    return cli_args("predict", task, "--checkpoint", checkpoint, *inputs, "--out", out, *flags)


def evaluate_args(task: str, checkpoint, data, layout: str, *flags) -> list[str]:
    """`evaluate <task>` of a checkpoint on a data folder of a layout."""
    return cli_args(
        "evaluate", task, "--checkpoint", checkpoint, "--data", data, "--layout", layout, *flags
    )


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


@pytest.fixture
def one_thread():
    """torch on one thread during the test (a learning test's measured trajectory)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
