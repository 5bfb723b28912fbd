"""The classifier's lung stage (`train cls --lungs SEG_CKPT`): the crop box, and tiny runs that
crop the same way in training, prediction and a detection gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastdet.cli import main
from fastdet.data.datasets import RSNADataset
from fastdet.data.synthetic import synth_rsna
from fastdet.engine.tasks.cls.data import ClsTensors, prepare_image
from fastdet.engine.tasks.cls.lungs import LungCropper, lung_box
from fastdet.engine.tasks.cls.task import load_classifier, predict_probabilities
from fastdet.engine.tasks.det.gate import load_gate


def test_lung_box_margin_clipping_and_empty_masks():
    m = np.zeros((20, 30), bool)
    m[5:10, 4:8] = True  # 5 rows x 4 columns
    m[7, 20] = True  # the other lung: the box spans both
    assert lung_box(m, 0.0) == (5, 10, 4, 21)
    assert lung_box(m, 0.2) == (4, 11, 0, 25)  # 1 row, 3.4 -> 4 columns out (rounded outwards)
    assert lung_box(m, 10.0) == (0, 20, 0, 30)  # clipped to the image
    assert lung_box(np.zeros((6, 7), bool), 0.1) == (0, 6, 0, 7)  # no lungs: the whole image
    one = np.zeros((6, 7), bool)
    one[2, 3] = True
    assert lung_box(one, 0.5) == (1, 4, 2, 5)  # a 1-pixel box: half a pixel each side -> 1
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        lung_box(m, -0.1)
    with pytest.raises(ValueError, match=r"mask must be \[H, W\]"):
        lung_box(np.zeros((2, 3, 4), bool), 0.1)


TINY = ["--batch-size", "2", "--device", "cpu", "--no-progress", "--epochs", "1"]


@pytest.fixture(scope="module")
def runs(module_tmp):
    tmp = module_tmp("lungs")
    data = synth_rsna(tmp / "rsna", n=8, seed=0, size=64)
    seg = ["train", "seg", "--data", str(data / "lungs"), "--layout", "folders", "--model", "unet"]
    seg += ["--depth", "2", "--width", "4", "--size", "64", "--out", str(tmp / "seg"), *TINY]
    assert main(seg) == 0
    cls = ["train", "cls", "--data", str(data), "--layout", "rsna", "--model", "resnet18"]
    cls += ["--size", "32", "--out", str(tmp / "cls"), "--lungs", str(tmp / "seg" / "best.pt")]
    assert main([*cls, "--lung-margin", "0.1", *TINY]) == 0
    return data, tmp / "seg" / "best.pt", tmp / "cls" / "best.pt"


def test_train_cls_with_lungs_stores_and_applies_the_crop(runs, tmp_path, monkeypatch):
    data, seg, ckpt = runs
    saved = json.loads((ckpt.parent / "config.json").read_text())
    assert saved["lungs"] == str(seg.resolve()) and saved["lung_margin"] == 0.1
    model, config, _ = load_classifier(ckpt)
    assert config.lungs == str(seg.resolve()) and config.lung_margin == 0.1

    # A 1-epoch U-Net finds no lungs yet (the whole image is kept); a fixed predicted mask
    # makes the crop visible, so each path is seen to apply it.
    import fastdet.engine.tasks.cls.lungs as lungs

    def fake_mask(model, image, config, *a, **kw):
        m = np.zeros(tuple(image.shape[-2:]), bool)
        m[10:50, 8:40] = True  # 40 x 32 -> rows 6..54, columns 4..44 with margin 0.1
        return m

    monkeypatch.setattr(lungs, "predict_mask", fake_mask)
    ds = RSNADataset(data)
    images = [ds[i]["image"] for i in range(4)]
    cropped = [im[..., 6:54, 4:44] for im in images]
    assert LungCropper(seg, 0.1).box(images[0]) == (6, 54, 4, 44)
    plain = type(config)(**{**vars(config), "lungs": None})
    want = predict_probabilities(model, plain, cropped)
    assert not torch.allclose(want, predict_probabilities(model, plain, images))
    torch.testing.assert_close(predict_probabilities(model, config, images), want)
    # training's and validation's inputs
    x, _ = ClsTensors(ds, config, augment=False)[2]
    torch.testing.assert_close(x, prepare_image(cropped[2], config))
    # a gate of this classifier crops its images (detection's [3, H, W] in [0, 1]) the same way
    gate = load_gate(ckpt, "cpu", 0.5)
    det_inputs = [(im / 255.0).expand(3, -1, -1) for im in images]
    for x, p in zip(det_inputs, want[:, config.classes.index("Lung Opacity")]):
        assert gate.probability(x) == pytest.approx(float(p), abs=1e-5)
    # predict cls reads the stored stage
    out = tmp_path / "pred"
    dcm = sorted((data / "stage_2_train_images").glob("*.dcm"))[:2]
    assert (
        main(["predict", "cls", "--checkpoint", str(ckpt), "--out", str(out), *map(str, dcm)]) == 0
    )
    assert (out / "predictions.csv").is_file()


def test_lungs_errors(runs, tmp_path, capsys):
    data, seg, ckpt = runs
    base = [
        "train",
        "cls",
        "--data",
        str(data),
        "--layout",
        "rsna",
        *TINY,
        "--size",
        "32",
        "--model",
        "resnet18",
    ]
    assert main([*base, "--out", str(tmp_path / "a"), "--lungs", str(tmp_path / "no.pt")]) == 2
    assert "segmentation checkpoint" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--lungs", str(ckpt)]) == 2
    assert "not segmentation" in capsys.readouterr().err  # a classifier is not a lung model
    bad = [*base, "--out", str(tmp_path / "c"), "--lungs", str(seg), "--lung-margin", "-1"]
    assert main(bad) == 2
    assert "lung_margin: a number >= 0" in capsys.readouterr().err
