"""U-Net+GAN schedules: per-batch and per-epoch alternation from a trained U-Net."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from fastdet.engine import train_segmentation
from fastdet.engine.checkpoint import load_checkpoint

from .conftest import seg_tiny

gan_config = partial(seg_tiny, model="unet_gan", d_width=4, d_lr=1e-3, seed=1)


@pytest.fixture
def unet_run(tmp_path, discs):
    """A 1-epoch U-Net run whose checkpoint starts the generators."""
    train_segmentation(seg_tiny(epochs=1), *discs, tmp_path / "unet")
    return tmp_path / "unet" / "last.pt"


def _parts(state: dict, prefix: str) -> dict:
    return {k: v.clone() for k, v in state.items() if k.startswith(prefix)}


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_generator_starts_from_unet(tmp_path, discs, unet_run):
    cfg = gan_config(gan_mode="batch", epochs=1, weights=str(unet_run))
    trainer_out = tmp_path / "gan"
    from fastdet.engine import Trainer, task_for

    t = Trainer(task_for(cfg), *discs, trainer_out, resume=False)
    unet = load_checkpoint(unet_run)["model"]
    for k, v in t.model.generator.state_dict().items():
        assert torch.equal(v, unet[k]), k


def test_batch_alternation_trains_both(tmp_path, discs, unet_run):
    cfg = gan_config(gan_mode="batch", weights=str(unet_run))
    hist = train_segmentation(cfg, *discs, tmp_path / "gan")
    assert [r["phase"] for r in hist] == ["gan", "gan"]
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["train_loss"]) for r in hist)
    start = load_checkpoint(unet_run)["model"]
    end = load_checkpoint(tmp_path / "gan" / "last.pt")["model"]
    assert _changed({k: start[k] for k in start}, {k: end["generator." + k] for k in start})
    header = (tmp_path / "gan" / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith("phase,d_loss")


def test_epoch_alternation_phases(tmp_path, discs, unet_run):
    """Epoch 1 trains D only, epoch 2 G only: each network's parameters and buffers change
    only in its own phase."""
    out = tmp_path / "gan"
    train_segmentation(gan_config(gan_mode="epoch", epochs=1, weights=str(unet_run)), *discs, out)
    s1 = load_checkpoint(out / "last.pt")["model"]
    start = load_checkpoint(unet_run)["model"]
    g0 = {"generator." + k: v for k, v in start.items()}
    assert not _changed(g0, _parts(s1, "generator."))  # D epoch: G untouched
    hist = train_segmentation(
        gan_config(gan_mode="epoch", epochs=2, weights=str(unet_run)),
        *discs,
        out,
        resume=True,
    )
    s2 = load_checkpoint(out / "last.pt")["model"]
    assert [r["phase"] for r in hist] == ["d", "g"]
    assert math.isfinite(hist[0]["d_loss"]) and math.isnan(hist[1]["d_loss"])
    assert _changed(_parts(s1, "generator."), _parts(s2, "generator."))  # G epoch: G moves
    assert not _changed(_parts(s1, "discriminator."), _parts(s2, "discriminator."))  # D frozen
    d0 = load_checkpoint(out / "best.pt")  # best exists; D moved in epoch 1
    assert d0["epoch"] in (1, 2)


def test_d_epoch_moves_discriminator(tmp_path, discs):
    """Without an init checkpoint too: the D epoch changes D's weights."""
    from fastdet.engine import Trainer, task_for

    cfg = gan_config(gan_mode="epoch", epochs=1)
    t = Trainer(task_for(cfg), *discs, tmp_path, resume=False)
    d_before = {k: v.clone() for k, v in t.model.discriminator.state_dict().items()}
    g_before = {k: v.clone() for k, v in t.model.generator.state_dict().items()}
    t.fit()
    assert _changed(d_before, t.model.discriminator.state_dict())
    assert not _changed(g_before, t.model.generator.state_dict())
