"""`fastdet train det`, `predict det` and `evaluate det` on tiny synthetic datasets."""

from __future__ import annotations

import csv
import json

import pytest

from fastdet.cli import main
from fastdet.data.synthetic import synth_dsb2018, synth_rsna

from .conftest import evaluate_args, predict_args, train_args

TINY = "--epochs 1 --batch-size 2 --min-size 64 --max-size 96 --device cpu --no-progress".split()


@pytest.fixture(scope="module")
def run(module_tmp):
    """A synthetic RSNA folder and a 1-epoch run on it."""
    tmp = module_tmp("detcli")
    data = synth_rsna(tmp / "rsna", n=5, seed=0, size=64)
    flags = ["--hflip", "0.5", "--vflip", "0.25", "--warmup-steps", "2", *TINY]
    assert main(train_args("det", data, "rsna", "resnet18_fpn", tmp / "run", *flags)) == 0
    return data, tmp / "run"


def test_train_det_augmentation_and_warmup_flags(run, capsys):
    _, out = run
    config = json.loads((out / "config.json").read_text())
    assert (config["hflip"], config["vflip"], config["warmup_steps"]) == (0.5, 0.25, 2)
    with pytest.raises(SystemExit):
        main(["train", "det", "--help"])
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--hflip", "--vflip", "--warmup-steps"))
    argv = train_args("det", "x", "rsna", "resnet18_fpn", out.parent / "bad", "--hflip", "2")
    assert main(argv) == 2
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
    argv = train_args("det", data, "dsb2018", "resnet18_fpn", tmp_path / "run", "--hist-eq", *TINY)
    assert main(argv) == 0
    assert (tmp_path / "run" / "last.pt").is_file()


def test_predict_det(run, tmp_path, capsys):
    data, out = run
    dcm = sorted((data / "stage_2_train_images").glob("*.dcm"))[0]
    flags = ["--score-threshold", "0", "--device", "cpu"]
    assert main(predict_args("det", out / "last.pt", [dcm], tmp_path / "pred", *flags)) == 0
    stem = dcm.name.split(".")[0]
    with open(tmp_path / "pred" / f"{stem}_boxes.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "x1", "y1", "x2", "y2", "score", "label"] if rows else True
    assert (tmp_path / "pred" / f"{stem}_boxes.png").is_file()
    assert main(predict_args("det", tmp_path / "none.pt", [dcm], tmp_path / "p2")) == 2


def test_evaluate_det(run, tmp_path, capsys):
    data, out = run
    js = tmp_path / "eval" / "scores.json"
    flags = ["--json", js, "--figures", tmp_path / "fig", "--max-figures", "3", "--device", "cpu"]
    assert main(evaluate_args("det", out / "best.pt", data, "rsna", *flags)) == 0
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
