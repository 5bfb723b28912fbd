"""train_segmentation: run folder, exact resume, NaN stop, atomic checkpoints, config checks."""

from __future__ import annotations

import math
import os
from functools import partial

import pytest
import torch

from fastdet.engine import NonFiniteLossError, SegConfig, load_model, train_segmentation
from fastdet.engine.checkpoint import atomic_copy, atomic_save, load_checkpoint
from fastdet.engine.logging import read_metrics_csv

from .conftest import DiscDataset, seg_tiny

tiny = partial(seg_tiny, seed=3)


def test_run_folder(tmp_path, discs):
    hist = train_segmentation(tiny(), *discs, tmp_path)
    assert [r["epoch"] for r in hist] == [1, 2]
    for name in ("config.json", "last.pt", "best.pt", "metrics.csv", "metrics.png"):
        assert (tmp_path / name).is_file(), name
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert list(rows[0]) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_iou",
        "val_dice",
        "lr",
        "seconds",
        "data_wait",
    ]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["data_wait"] < 1 for r in rows)  # share of the epoch spent waiting
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["val_dice"] <= 1 for r in rows)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 4 and ckpt["config"]["in_channels"] == 1
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "best", "history"} <= set(ckpt)
    model, config = load_model(tmp_path / "best.pt")
    assert config.width == 4 and not model.training
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    dice = [r["val_dice"] for r in rows]
    best_epoch = dice.index(max(dice)) + 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == best_epoch
    # the best epoch's checkpoint is last.pt's file when it is the last epoch (one copy on disk)
    assert os.path.samefile(tmp_path / "best.pt", tmp_path / "last.pt") == (best_epoch == 2)


def test_step_decay_lr(tmp_path, discs):
    hist = train_segmentation(tiny(epochs=3, step_size=1, gamma=0.5), discs[0], None, tmp_path)
    assert [r["lr"] for r in hist] == pytest.approx([0.01, 0.005, 0.0025])
    assert all(math.isnan(r["val_dice"]) for r in hist)  # no validation set
    assert (tmp_path / "best.pt").is_file()  # best by training loss then


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_is_exact(tmp_path, discs, optimizer):
    """2 epochs straight == 1 epoch, then resume for the 2nd: bitwise equal weights."""
    cfg = tiny(epochs=2, optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-3, step_size=1)
    train_segmentation(cfg, *discs, tmp_path / "straight")
    train_segmentation(
        tiny(epochs=1, optimizer=cfg.optimizer, lr=cfg.lr, step_size=1), *discs, tmp_path / "split"
    )
    hist = train_segmentation(cfg, *discs, tmp_path / "split", resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["global_step"] == b["global_step"] == 4
    assert [r["epoch"] for r in hist] == [1, 2]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert len(read_metrics_csv(tmp_path / "split" / "metrics.csv")) == 2


def test_refuses_existing_run_and_changed_resume(tmp_path, discs):
    train_segmentation(tiny(epochs=1), *discs, tmp_path)
    with pytest.raises(FileExistsError, match="resume"):
        train_segmentation(tiny(epochs=1), *discs, tmp_path)
    with pytest.raises(ValueError, match="lr"):
        train_segmentation(tiny(epochs=2, lr=0.5), *discs, tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_segmentation(tiny(), *discs, tmp_path / "empty", resume=True)


def test_nan_loss_stops_with_epoch_and_step(tmp_path, discs):
    train, val = discs
    bad = DiscDataset(8, 32, seed=0)
    train_segmentation(tiny(epochs=1), train, val, tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    for item in bad.items:  # every image NaN: the first step of epoch 2 fails
        item["image"] = torch.full_like(item["image"], float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1 .*global step 3") as e:
        train_segmentation(tiny(epochs=2), bad, val, tmp_path, resume=True)
    assert isinstance(e.value, FloatingPointError) and e.value.epoch == 2
    assert (tmp_path / "last.pt").read_bytes() == before  # nothing written for the bad epoch
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_nan_in_one_batch(tmp_path):
    data = DiscDataset(8, 32, seed=0)
    data.items[5]["image"][0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step \d"):
        train_segmentation(tiny(epochs=1), data, None, tmp_path)
    assert not (tmp_path / "last.pt").exists()


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"a": 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"a": Boom()}, path)
    assert load_checkpoint(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["last.pt"]


def test_atomic_copy_links_and_outlives_the_next_save(tmp_path, monkeypatch):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    atomic_save({"epoch": 1}, last)
    atomic_copy(last, best)
    assert os.path.samefile(last, best)
    atomic_save({"epoch": 2}, last)  # a new file: best.pt keeps epoch 1
    assert load_checkpoint(best) == {"epoch": 1} and load_checkpoint(last) == {"epoch": 2}

    def no_links(src, dst):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    atomic_copy(last, best)  # copied instead
    assert not os.path.samefile(last, best) and load_checkpoint(best) == {"epoch": 2}
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt"]


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        SegConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="unet_gan"):
        SegConfig(model="unet", gan_mode="batch")
    with pytest.raises(ValueError, match="unknown"):
        SegConfig.from_dict({"modle": "unet"})
    assert SegConfig.from_dict(SegConfig().to_dict()) == SegConfig()


def test_clip_grad_bounds_the_update(tmp_path, discs, monkeypatch):
    """clip_grad: every step's gradients (all parameters together) are clipped to that global
    norm before the optimizer steps; bad values are refused."""
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm, *a, **k):
        params = list(params)
        total = clip(params, max_norm, *a, **k)
        norms.append(
            (
                float(total),
                float(
                    torch.linalg.vector_norm(
                        torch.stack([p.grad.norm() for p in params if p.grad is not None])
                    )
                ),
            )
        )
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    config = tiny(epochs=1, clip_grad=1e-3, momentum=0.0)
    train_segmentation(config, *discs, tmp_path)
    assert len(norms) == 2  # one per step
    assert all(before > 1e-3 and after <= 1e-3 * (1 + 1e-4) for before, after in norms)
    with pytest.raises(ValueError, match="clip_grad must be a positive finite norm"):
        tiny(clip_grad=0.0)
    with pytest.raises(ValueError, match="clip_grad"):
        tiny(clip_grad=float("nan"))


def test_bf16_and_compile_train_and_save_plain_checkpoints(tmp_path, discs):
    """--bf16 (bfloat16 autocast on the CPU) and --compile (torch.compile in place) train a
    finite run whose checkpoint holds the eager model's keys and loads into an uncompiled
    model; resuming may switch compile off (it does not change what is computed)."""
    config = tiny(bf16=True, compile=True, epochs=1, depth=1)  # the smallest graph to compile
    hist = train_segmentation(config, *discs, tmp_path)
    assert math.isfinite(hist[0]["train_loss"]) and 0 <= hist[0]["val_dice"] <= 1
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"]["bf16"] and ckpt["config"]["compile"]
    model, config = load_model(tmp_path / "best.pt")  # an eager model, strict keys
    assert not any("_orig_mod" in k for k in ckpt["model"])
    assert getattr(model, "_compiled_call_impl", None) is None
    hist = train_segmentation(tiny(bf16=True, epochs=2, depth=1), *discs, tmp_path, resume=True)
    assert [r["epoch"] for r in hist] == [1, 2]


def test_channels_last_trains_in_nhwc_and_saves_loadable_checkpoints(tmp_path, discs):
    """--channels-last trains with NHWC weights; the checkpoint loads into a default-layout
    model and the run resumes with the option switched off."""
    hist = train_segmentation(tiny(channels_last=True, epochs=1), *discs, tmp_path)
    assert math.isfinite(hist[0]["train_loss"])
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"]["channels_last"]
    conv = [v for v in ckpt["model"].values() if v.ndim == 4 and v.shape[1] > 1 < v.shape[3]]
    assert conv and all(w.is_contiguous(memory_format=torch.channels_last) for w in conv)
    assert not any(w.is_contiguous() for w in conv)
    model, _ = load_model(tmp_path / "last.pt")
    w = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1 < p.shape[3])
    assert w.is_contiguous()
    hist = train_segmentation(tiny(epochs=2), *discs, tmp_path, resume=True)
    assert [r["epoch"] for r in hist] == [1, 2]
