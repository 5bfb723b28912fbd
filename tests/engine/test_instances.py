"""Mask R-CNN on the one engine: instance label folders, mask targets through flips,
`train det --model maskrcnn_*`, `predict det` label images and `evaluate det` with the DSB score
beside U-Net + watershed and the classical baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastdet.cli import main
from fastdet.data import ImageFolderDataset
from fastdet.data.synthetic import synth_dsb2018
from fastdet.engine.tasks.det.data import DetTensors, open_det_dataset
from fastdet.engine.tasks.det.task import DetConfig, DetTask, labels_of, mask_scores

from .test_det_cli import TINY


def _folder(root, rng):
    """images/ and masks/ with uint16 instance label images of non-consecutive ids."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        labels = np.zeros((40, 50), np.uint16)
        for k, ident in enumerate(rng.choice(np.arange(1, 60000), 3, replace=False)):
            y, x = 4 + 12 * k, int(rng.integers(2, 30))
            labels[y : y + 8, x : x + int(rng.integers(5, 15))] = ident
        Image.fromarray(labels).save(root / "masks" / f"case{i}.png")
        Image.fromarray((rng.random((40, 50)) * 255).astype(np.uint8)).save(
            root / "images" / f"case{i}.png"
        )
    return root


def test_instance_folders_renumber_and_box(tmp_path, rng):
    root = _folder(tmp_path / "f", rng)
    ds = ImageFolderDataset(root, instances=True)
    s = ds[0]
    raw = np.asarray(Image.open(root / "masks" / "case0.png"))
    assert raw.max() > 255 and s["instances"].dtype == torch.int32
    assert sorted(np.unique(s["instances"].numpy())) == [0, 1, 2, 3]
    # renumbered in order of the original ids, each instance's pixels unchanged
    for new, old in enumerate(np.unique(raw)[1:], start=1):
        assert np.array_equal(s["instances"].numpy() == new, raw == old)
        ys, xs = np.nonzero(raw == old)
        assert s["boxes"][new - 1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert torch.equal(s["labels"], torch.ones(3, dtype=torch.int64))
    assert torch.equal(s["mask"], (s["instances"] > 0).to(torch.uint8))
    assert len(open_det_dataset("folders", root)) == 3


def test_mask_targets_follow_flips(tmp_path):
    data = synth_dsb2018(tmp_path / "d", n=2, seed=1, size=64)
    ds = open_det_dataset("dsb2018", data)
    config = DetConfig(model="maskrcnn_resnet18_fpn", hflip=1.0, vflip=1.0)
    image, target = DetTensors(ds, config, augment=True)[0]
    sample = ds[0]
    want = torch.flip(sample["instances"], (0, 1))
    assert target["masks"].shape == (len(sample["boxes"]), 64, 64)
    assert torch.equal(labels_of(target["masks"]), want.to(torch.int32))
    for m, b in zip(target["masks"], target["boxes"]):  # each box is its mask's extent
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert b.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    plain = DetTensors(ds, DetConfig(), augment=False)[0][1]
    assert "masks" not in plain  # Faster R-CNN's targets stay boxes only


def test_mask_task_names_losses_and_best_metric():
    task = DetTask(DetConfig(model="maskrcnn_resnet18_fpn"))
    assert "loss_mask" in task.loss_names and task.best_metric == "val_mask_map_50"
    assert {"val_mask_map", "val_dsb"} <= set(task.columns)
    assert "loss_mask" not in DetTask(DetConfig(model="fasterrcnn_resnet18_fpn")).loss_names


def test_mask_scores_of_a_perfect_prediction():
    """Masks [D, 28, 28] of ones in the true boxes score AP50 1 and DSB 0.9."""
    truth = torch.zeros(2, 56, 56, dtype=torch.uint8)
    truth[0, 0:28, 0:28] = 1
    truth[1, 28:56, 14:42] = 1
    boxes = torch.tensor([[0.0, 0, 28, 28], [14, 28, 42, 56]])
    pred = {
        "boxes": boxes,
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.ones(2, dtype=torch.int64),
        "masks": torch.ones(2, 28, 28),
    }
    target = {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "masks": truth}
    config = DetConfig(model="maskrcnn_resnet18_fpn")
    s = mask_scores([pred], [target], config)
    # pasting blurs a box's edge by a pixel (torchvision's rule), which costs IoU 0.95 only
    assert s["map_50"] == pytest.approx(1.0) and s["dsb"] == pytest.approx(0.9)
    pred["masks"] = torch.zeros(2, 28, 28)  # nothing above the threshold: no instance
    s = mask_scores([pred], [target], config)
    assert s["map_50"] == 0.0 and s["dsb"] == 0.0


@pytest.fixture(scope="module")
def run(module_tmp):
    """A synthetic DSB folder, a 1-epoch Mask R-CNN run and a 1-epoch U-Net run on it."""
    tmp = module_tmp("instcli")
    data = synth_dsb2018(tmp / "dsb", n=6, seed=0, size=64)
    args = ["--data", str(data), "--layout", "dsb2018"]
    assert (
        main(
            ["train", "det", *args, "--model", "maskrcnn_resnet18_fpn", "--out", str(tmp / "m")]
            + ["--anchor-sizes", "8", "16", "32", "64", "128", "--detections-per-img", "20"]
            + TINY
        )
        == 0
    )
    assert (
        main(
            ["train", "seg", *args, "--model", "unet", "--depth", "2", "--width", "4"]
            + ["--size", "32", "--epochs", "1", "--device", "cpu", "--no-progress"]
            + ["--out", str(tmp / "u")]
        )
        == 0
    )
    return data, tmp


def test_train_det_mask_rcnn_logs_mask_loss_and_scores(run):
    _, tmp = run
    header = (tmp / "m" / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("loss_mask", "val_mask_map_50", "val_dsb", "val_map_50"):
        assert col in header
    assert (tmp / "m" / "best.pt").is_file()


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_predict_det_writes_uint16_label_images(run, tmp_path, fmt):
    import tifffile

    data, tmp = run
    image = next(data.glob("*/images/*.png"))
    out = tmp_path / "pred"
    args = ["predict", "det", "--checkpoint", str(tmp / "m" / "best.pt"), str(image)]
    assert main(args + ["--out", str(out), "--label-format", fmt, "--score-threshold", "0"]) == 0
    stem = image.name.split(".")[0]
    path = out / "instances" / f"{stem}_instances.{fmt}"
    labels = np.asarray(Image.open(path)) if fmt == "png" else tifffile.imread(path)
    assert labels.dtype == np.uint16 and labels.shape == (64, 64)
    assert (out / "figures" / f"{stem}_instances_overlay.png").is_file()
    assert (out / "boxes.csv").is_file()


def test_evaluate_det_reports_dsb_beside_unet_and_classical(run, tmp_path, capsys):
    data, tmp = run
    js = tmp_path / "eval.json"
    args = ["evaluate", "det", "--checkpoint", str(tmp / "m" / "best.pt"), "--data", str(data)]
    args += ["--layout", "dsb2018", "--unet", str(tmp / "u" / "best.pt"), "--classical"]
    assert main(args + ["--json", str(js), "--device", "cpu"]) == 0
    result = json.loads(js.read_text())
    inst = result["instances"]
    for key in ("dsb", "dsb_unet", "dsb_classical", "mask_map", "mask_map_50", "mask_map_75"):
        assert 0.0 <= inst[key] <= 1.0 or inst[key] == -1.0, key
    # the classical baseline finds the synthetic nuclei: its DSB score is well above zero
    assert inst["dsb_classical"] > 0.2
    assert all("dsb" in r and "overlay" in r for r in result["per_image"])
    text = capsys.readouterr().out
    assert "U-Net + watershed" in text and "classical" in text and "mask AP" in text


def test_train_det_mask_rcnn_refuses_a_layout_without_instances(tmp_path):
    from fastdet.data.synthetic import synth_rsna

    data = synth_rsna(tmp_path / "r", n=4, seed=0, size=64)
    code = main(
        ["train", "det", "--data", str(data), "--layout", "rsna"]
        + ["--model", "maskrcnn_resnet18_fpn", "--out", str(tmp_path / "run")]
        + TINY
    )
    assert code != 0
