"""The detection engine on a tiny synthetic RSNA dataset (4 images of 64 x 64, ResNet-18 FPN at
min_size 64): files of a run, exact resume, NaN loss, config checks, input pipeline."""
from __future__ import annotations

import math

import pytest
import torch

from fastdet.data import RSNADataset
from fastdet.data.synthetic import synth_rsna
from fastdet.engine import NonFiniteLossError
from fastdet.engine.det import (DET_COLUMNS, DetConfig, load_detector, prepare_image,
                                train_detection)
from fastdet.engine.logging import read_metrics_csv


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    root = synth_rsna(tmp_path_factory.mktemp("det") / "rsna", n=4, seed=0, size=64)
    return RSNADataset(root)


def tiny(**kw) -> DetConfig:
    base = dict(model="resnet18_fpn", epochs=2, batch_size=2, min_size=64, max_size=96,
                progress=False, device="cpu", seed=0)
    return DetConfig(**{**base, **kw})


def test_run_folder(rsna, tmp_path):
    history = train_detection(tiny(), rsna, rsna, tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "last.pt", "best.pt", "metrics.csv", "metrics.png"} <= names
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and tuple(rows[0]) == DET_COLUMNS
    assert all(math.isfinite(r["loss"]) and 0 <= r["val_map_50"] <= 1 for r in rows)
    assert history[0]["lr"] == pytest.approx(1e-3)
    model, config = load_detector(tmp_path / "run" / "last.pt")
    assert config == tiny() and not model.training
    with pytest.raises(FileExistsError):
        train_detection(tiny(), rsna, rsna, tmp_path / "run")


def test_resume_is_exact(rsna, tmp_path):
    train_detection(tiny(epochs=2), rsna, None, tmp_path / "straight")
    train_detection(tiny(epochs=1), rsna, None, tmp_path / "split")
    train_detection(tiny(epochs=2), rsna, None, tmp_path / "split", resume=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"][1]["loss"] == b["history"][1]["loss"]
    with pytest.raises(ValueError, match="lr"):
        train_detection(tiny(epochs=3, lr=0.5), rsna, None, tmp_path / "split", resume=True)


def test_nan_loss_names_epoch_and_step(rsna, tmp_path, monkeypatch):
    import fastdet.engine.det as det

    build = det.build_detector
    calls = []

    def nan_on_second_step(config, pretrained=True):
        model = build(config, pretrained)
        forward = model.forward

        def patched(images, targets=None):
            out = forward(images, targets)
            calls.append(1)
            if model.training and len(calls) == 2:
                out["loss_classifier"] = out["loss_classifier"] * float("nan")
            return out
        model.forward = patched
        return model

    monkeypatch.setattr(det, "build_detector", nan_on_second_step)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 2") as e:
        train_detection(tiny(), rsna, None, tmp_path / "nan")
    assert (e.value.epoch, e.value.step, e.value.global_step) == (1, 2, 2)
    assert not (tmp_path / "nan" / "last.pt").exists()


def test_config_checks():
    with pytest.raises(ValueError, match="model"):
        DetConfig(model="yolo")
    with pytest.raises(ValueError, match="max_size"):
        DetConfig(min_size=100, max_size=50)
    with pytest.raises(ValueError, match="unknown"):
        DetConfig.from_dict({"modle": "vgg16"})
    c = DetConfig()
    assert (c.lr, c.momentum, c.step_size, c.gamma, c.optimizer) == (1e-3, 0.9, 20, 0.1, "sgd")


def test_prepare_image():
    grey = torch.arange(16.0).reshape(1, 4, 4) * 10
    x = prepare_image(grey, tiny())
    assert x.shape == (3, 4, 4) and x.max() == pytest.approx(150 / 255) and torch.equal(x[0], x[2])
    eq = prepare_image(grey, tiny(hist_eq=True))
    assert 0 <= eq.min() and eq.max() <= 1
    caffe = prepare_image(torch.full((1, 2, 2), 255.0), tiny(model="vgg16"))
    assert caffe[:, 0, 0].tolist() == pytest.approx([255 - 102.9801, 255 - 115.9465, 255 - 122.7717])
