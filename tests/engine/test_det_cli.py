"""`fastdet train det`, `predict det` and `evaluate det` on tiny synthetic datasets."""

from __future__ import annotations

import csv
import json

import pytest

from fastdet.cli import main
from fastdet.data.synthetic import synth_dsb2018, synth_rsna

TINY = [
    "--epochs",
    "1",
    "--batch-size",
    "2",
    "--min-size",
    "64",
    "--max-size",
    "96",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run(module_tmp):
    """A synthetic RSNA folder and a 1-epoch run on it."""
    tmp = module_tmp("detcli")
    data = synth_rsna(tmp / "rsna", n=5, seed=0, size=64)
    assert (
        main(
            [
                "train",
                "det",
                "--data",
                str(data),
                "--layout",
                "rsna",
                "--model",
                "resnet18_fpn",
                "--out",
                str(tmp / "run"),
                "--hflip",
                "0.5",
                "--vflip",
                "0.25",
                "--warmup-steps",
                "2",
                *TINY,
            ]
        )
        == 0
    )
    return data, tmp / "run"


def test_train_det_augmentation_and_warmup_flags(run, capsys):
    _, out = run
    config = json.loads((out / "config.json").read_text())
    assert (config["hflip"], config["vflip"], config["warmup_steps"]) == (0.5, 0.25, 2)
    with pytest.raises(SystemExit):
        main(["train", "det", "--help"])
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--hflip", "--vflip", "--warmup-steps"))
    assert (
        main(
            [
                "train",
                "det",
                "--data",
                "x",
                "--layout",
                "rsna",
                "--model",
                "resnet18_fpn",
                "--out",
                str(out.parent / "bad"),
                "--hflip",
                "2",
            ]
        )
        == 2
    )
    assert "hflip" in capsys.readouterr().err


def test_train_det_run_folder_and_resume(run, capsys):
    data, out = run
    assert {"last.pt", "best.pt", "metrics.csv", "metrics.png", "config.json"} <= {
        p.name for p in out.iterdir()
    }
    assert (
        main(["train", "det", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    )
    assert "epoch 2: loss" in capsys.readouterr().out
    with open(out / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


def test_train_det_errors(tmp_path, capsys):
    assert main(["train", "det", "--out", str(tmp_path / "r"), "--layout", "rsna"]) == 2
    assert "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "det", "--out", str(tmp_path / "r"), "--model", "yolo"])


def test_train_det_dsb2018(tmp_path):
    data = synth_dsb2018(tmp_path / "dsb", n=3, seed=0, size=64)
    assert (
        main(
            [
                "train",
                "det",
                "--data",
                str(data),
                "--layout",
                "dsb2018",
                "--model",
                "resnet18_fpn",
                "--out",
                str(tmp_path / "run"),
                "--hist-eq",
                *TINY,
            ]
        )
        == 0
    )
    assert (tmp_path / "run" / "last.pt").is_file()


def test_predict_det(run, tmp_path, capsys):
    data, out = run
    dcm = sorted((data / "stage_2_train_images").glob("*.dcm"))[0]
    assert (
        main(
            [
                "predict",
                "det",
                "--checkpoint",
                str(out / "last.pt"),
                str(dcm),
                "--out",
                str(tmp_path / "pred"),
                "--score-threshold",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    stem = dcm.name.split(".")[0]
    with open(tmp_path / "pred" / f"{stem}_boxes.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "x1", "y1", "x2", "y2", "score", "label"] if rows else True
    assert (tmp_path / "pred" / f"{stem}_boxes.png").is_file()
    assert (
        main(
            [
                "predict",
                "det",
                "--checkpoint",
                str(tmp_path / "none.pt"),
                str(dcm),
                "--out",
                str(tmp_path / "p2"),
            ]
        )
        == 2
    )


def test_evaluate_det(run, tmp_path, capsys):
    data, out = run
    js = tmp_path / "eval" / "scores.json"
    assert (
        main(
            [
                "evaluate",
                "det",
                "--checkpoint",
                str(out / "best.pt"),
                "--data",
                str(data),
                "--layout",
                "rsna",
                "--json",
                str(js),
                "--figures",
                str(tmp_path / "fig"),
                "--max-figures",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for word in ("RSNA score", "COCO AP", "AP50", "TP", "FP", "FN"):
        assert word in text
    result = json.loads(js.read_text())
    assert result["images"] == 5 and len(result["per_image"]) == 5
    assert 0 <= result["map_50"] <= 1
    assert (tmp_path / "fig" / "pr_curve.png").is_file()
    drawn = [r["figure"] for r in result["per_image"] if "figure" in r]
    assert len(drawn) == 3 and len(list((tmp_path / "fig" / "boxes").glob("*.png"))) == 3
    assert 0 <= result["rsna_thresholded"] <= 1 and "(score >= 0.5)" in text
