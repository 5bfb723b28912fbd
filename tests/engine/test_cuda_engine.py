"""The engine on a GPU: mixed-precision training, exact resume and tiled prediction on CUDA
(skipped without a GPU; run by benchmarks/gpu_check.sh on the lent GPU machine)."""
from __future__ import annotations

import math

import pytest
import torch

from fastdet.engine import TrainConfig, load_model, predict_mask, train_segmentation
from fastdet.engine.checkpoint import load_checkpoint

from .conftest import DiscDataset

pytestmark = pytest.mark.gpu


def cuda_config(**kw) -> TrainConfig:
    base = dict(model="unet", depth=2, width=8, epochs=2, batch_size=4, size=32, lr=0.01,
                progress=False, device="cuda", amp=True, seed=5, deterministic=True)
    base.update(kw)
    return TrainConfig(**base)


def test_amp_training_on_cuda_learns_and_checkpoints(tmp_path):
    train, val = DiscDataset(8, 32, seed=0), DiscDataset(2, 32, seed=1)
    hist = train_segmentation(cuda_config(epochs=6, optimizer="adam", lr=3e-3, loss="bce_dice"),
                              train, val, tmp_path)
    assert all(math.isfinite(r["train_loss"]) for r in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["scaler"] and all(v.device.type == "cpu" for v in ckpt["model"].values())
    model, config = load_model(tmp_path / "best.pt", "cuda")
    assert next(model.parameters()).is_cuda
    mask = predict_mask(model, val[0]["image"], config=config, tile=32, overlap=8, device=torch.device("cuda"))
    assert mask.shape == (32, 32)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_on_cuda_matches_an_uninterrupted_run(tmp_path, optimizer):
    train, val = DiscDataset(8, 32, seed=0), DiscDataset(2, 32, seed=1)
    straight = tmp_path / "straight"
    train_segmentation(cuda_config(optimizer=optimizer), train, val, straight)
    split = tmp_path / "split"
    train_segmentation(cuda_config(optimizer=optimizer, epochs=1), train, val, split)
    train_segmentation(cuda_config(optimizer=optimizer), train, val, split, resume=True)
    a = load_checkpoint(straight / "last.pt")["model"]
    b = load_checkpoint(split / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
