"""`fastdet train det`, `predict det` and `evaluate det` on tiny synthetic datasets."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter

import pytest
import torch

from fastdet.cli import main
from fastdet.data.synthetic import synth_dsb2018, synth_rsna
from fastdet.engine.checkpoint import load_checkpoint
from fastdet.engine.tasks.det.point import stored_point

from .conftest import cli_args, evaluate_args, predict_args, train_args

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
    with open(tmp_path / "pred" / "boxes.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["path", "x1", "y1", "x2", "y2", "score", "label"]
    assert rows and {r["path"] for r in rows} == {str(dcm)}
    assert (tmp_path / "pred" / "figures" / f"{stem}_boxes.png").is_file()
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
    threshold = result["operating_point"]["score_threshold"]  # training stored one
    assert 0 <= result["rsna_thresholded"] <= 1 and f"(score >= {threshold:g})" in text


def test_training_stores_a_point_and_tune_rewrites_only_that(run, tmp_path, capsys):
    data, out = run
    point = stored_point(load_checkpoint(out / "best.pt"))
    assert (point.split, point.objective) == ("val", "rsna")  # the layout's own score
    ckpt = tmp_path / "c.pt"
    shutil.copy(out / "last.pt", ckpt)
    before = load_checkpoint(ckpt)
    assert "operating_point" not in before  # last.pt keeps the epoch's state only
    argv = ["tune", "det", "--checkpoint", ckpt, "--data", data, "--layout", "rsna"]
    assert main(cli_args(*argv, "--device", "cpu")) == 0
    assert "operating point: score >=" in capsys.readouterr().out
    after = load_checkpoint(ckpt)
    assert set(after) == set(before) | {"operating_point"}
    assert after["config"] == before["config"] and after["history"] == before["history"]
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())
    assert stored_point(after).split == "val"
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind


def _evaluate(run, tmp_path, *flags):
    data, out = run
    js = tmp_path / "e.json"
    js.unlink(missing_ok=True)
    argv = evaluate_args("det", out / "best.pt", data, "rsna", "--json", js, "--device", "cpu")
    rc = main([*argv, *map(str, flags)])
    return rc, json.loads(js.read_text()) if rc == 0 else None


def test_evaluate_det_applies_the_stored_point_and_flags_override_it(run, tmp_path, capsys):
    rc, r = _evaluate(run, tmp_path, "--split", "val")
    assert rc == 0 and r["operating_point"]["chosen_on_scored_images"] is True
    assert r["score_threshold"] == r["operating_point"]["score_threshold"]
    assert r["froc"]["rates"][0] == 0.125 and len(r["ci"]["map_50"]) == 2
    assert r["fp_per_positive_image"] is None or r["fp_per_positive_image"] >= 0  # NaN: null
    rc, r = _evaluate(run, tmp_path, "--split", "test")
    assert rc == 0 and r["images"] == 1 and r["operating_point"]["chosen_on_scored_images"] is False
    flags = ("--nms-iou", 0.3, "--containment", "off", "--max-boxes", 1, "--score-threshold", 0)
    rc, r = _evaluate(run, tmp_path, *flags)
    assert rc == 0
    p = r["operating_point"]
    assert (p["nms_iou"], p["containment"], p["max_boxes"], p["score_threshold"]) == (
        0.3,
        None,
        1,
        0,
    )
    assert all(row["tp"] + row["fp"] <= 1 for row in r["per_image"])
    rc, r = _evaluate(run, tmp_path, "--raw")
    assert rc == 0 and "operating_point" not in r and r["score_threshold"] == 0.5
    capsys.readouterr()
    assert _evaluate(run, tmp_path, "--raw", "--nms-iou", 0.3)[0] == 2
    assert "--raw" in capsys.readouterr().err
    assert _evaluate(run, tmp_path, "--containment", "lots")[0] == 2
    assert "--containment" in capsys.readouterr().err


def test_predict_det_caps_boxes_at_the_point(run, tmp_path):
    data, out = run
    dcm = sorted((data / "stage_2_train_images").glob("*.dcm"))
    flags = ["--score-threshold", "0", "--max-boxes", "1", "--device", "cpu"]
    assert main(predict_args("det", out / "best.pt", dcm, tmp_path / "p", *flags)) == 0
    with open(tmp_path / "p" / "boxes.csv") as f:
        per_image = Counter(r["path"] for r in csv.DictReader(f))
    assert per_image and max(per_image.values()) == 1
