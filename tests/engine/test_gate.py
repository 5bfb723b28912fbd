"""Gated detection: the gating rule and the negative-image figures on constructed predictions,
and `predict det --gate` / `evaluate det --gate` on tiny 1-epoch runs."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter

import pytest
import torch

from fastdet.cli import main
from fastdet.data.synthetic import synth_rsna
from fastdet.engine.checkpoint import load_checkpoint
from fastdet.engine.tasks.det.gate import (
    DEFAULT_GATE_THRESHOLD,
    apply_gate,
    detection_figures,
    gate_keeps,
    gate_threshold,
    negative_figures,
)

NORMAL, NOT_NORMAL, OPACITY = "Normal", "No Lung Opacity / Not Normal", "Lung Opacity"


def _pred(boxes, scores):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": boxes,
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
    }


def _target(boxes):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}


# ---------------------------------------------------------------------- the rule


def test_gate_rule_threshold_exactly_hit_and_empty_images():
    t = 0.375  # exactly representable, so p == t is a true tie in float32 and float64
    p_at = float(torch.tensor(t, dtype=torch.float32))
    assert gate_keeps(p_at, t) and gate_keeps(1.0, t)
    assert not gate_keeps(math.nextafter(t, 0.0), t) and not gate_keeps(math.nan, t)
    pred = _pred([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.6])
    pred["masks"] = torch.ones(2, 1, 32, 32)
    assert apply_gate(pred, t, t) is pred  # kept: unchanged
    dropped = apply_gate(pred, 0.374, t)
    assert dropped["boxes"].shape == (0, 4) and dropped["scores"].shape == (0,)
    assert dropped["labels"].dtype == torch.int64 and dropped["masks"].shape == (0, 1, 32, 32)
    empty = _pred([], [])
    for p in (0.0, 1.0):  # an image without boxes stays without boxes either way
        out = apply_gate(empty, p, t)
        assert out["boxes"].shape == (0, 4) and len(out["scores"]) == 0


def test_gate_threshold_sources():
    assert gate_threshold(0.25, 0.7) == (0.25, "argument")
    assert gate_threshold(0.0, None) == (0.0, "argument")
    assert gate_threshold(None, 0.7) == (0.7, "checkpoint")
    assert gate_threshold(None, None) == (DEFAULT_GATE_THRESHOLD, "default") == (0.5, "default")
    assert gate_threshold(None, math.nan) == (0.5, "default")
    for bad in (-0.1, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"--gate-threshold must be a number in \[0, 1\]"):
            gate_threshold(bad, 0.5)


def test_negative_figures_count_boxes_on_negative_images():
    truth = [[10, 10, 30, 30]]
    kept = [
        _pred([], []),  # Normal, clean
        _pred([[0, 0, 5, 5], [40, 40, 50, 50]], [0.9, 0.5]),  # Not Normal, 2 FP
        _pred([[0, 0, 5, 5]], [0.7]),  # Not Normal, 1 FP
        _pred([[1, 1, 4, 4]], [0.8]),  # unknown class, 1 FP: overall figure only
        _pred([[40, 40, 60, 60]], [0.9]),  # positive, box misplaced: missed
        _pred([[10, 10, 30, 31]], [0.9]),  # positive, found
        _pred([], []),  # positive, nothing: missed
    ]
    targets = [_target([])] * 4 + [_target(truth)] * 3
    classes = [NORMAL, NOT_NORMAL, NOT_NORMAL, None, OPACITY, OPACITY, OPACITY]
    r = negative_figures(kept, targets, classes)
    assert r["negative_images"] == 4 and r["fp_per_negative_image"] == pytest.approx(4 / 4)
    assert r["fp_per_negative_image_by_class"] == {NOT_NORMAL: 1.5, NORMAL: 0.0}
    assert (r["positive_images"], r["missed_positives"]) == (3, 2)
    # gating the Not Normal images removes their false positives and nothing else
    gated = [apply_gate(k, p, 0.5) for k, p in zip(kept, [0.9, 0.1, 0.49, 0.5, 0.6, 0.7, 0.2])]
    g = negative_figures(gated, targets, classes)
    assert g["fp_per_negative_image"] == pytest.approx(1 / 4)
    assert g["fp_per_negative_image_by_class"] == {NOT_NORMAL: 0.0, NORMAL: 0.0}
    assert g["missed_positives"] == 2
    none = negative_figures(kept[4:], targets[4:], classes[4:])
    assert none["negative_images"] == 0 and math.isnan(none["fp_per_negative_image"])
    assert none["fp_per_negative_image_by_class"] == {}
    with pytest.raises(ValueError, match="one entry per image"):
        negative_figures(kept, targets[:2], classes)


def test_detection_figures_thresholds_before_counting():
    preds = [_pred([[0, 0, 5, 5], [10, 10, 30, 30]], [0.3, 0.9]), _pred([[0, 0, 9, 9]], [0.2])]
    targets = [_target([[10, 10, 30, 30]]), _target([])]
    r = detection_figures(preds, targets, [OPACITY, NORMAL], 0.25, 100)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 0)
    assert r["fp_per_negative_image"] == 0.0 and r["missed_positives"] == 0
    low = detection_figures(preds, targets, [OPACITY, NORMAL], 0.0, 100)
    assert (low["tp"], low["fp"], low["fp_per_negative_image"]) == (1, 2, 1.0)
    assert r["map_50"] == low["map_50"] == pytest.approx(1.0)  # AP uses every detection


# ---------------------------------------------------------------------- the CLI

TINY = ["--epochs", "1", "--batch-size", "2", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def runs(module_tmp):
    """A synthetic RSNA folder, a 1-epoch detector and a 1-epoch classifier on it."""
    tmp = module_tmp("gate")
    data = synth_rsna(tmp / "rsna", n=8, seed=0, size=64)
    common = ["--data", str(data), "--layout", "rsna", *TINY]
    det = ["train", "det", "--out", str(tmp / "det"), "--model", "resnet18_fpn"]
    assert main([*det, "--min-size", "64", "--max-size", "96", *common]) == 0
    cls = ["train", "cls", "--out", str(tmp / "cls"), "--model", "resnet18", "--size", "32"]
    assert main([*cls, *common]) == 0
    return data, tmp / "det" / "best.pt", tmp / "cls" / "best.pt"


def _evaluate(runs, path, *extra):
    data, det, _ = runs
    argv = ["evaluate", "det", "--checkpoint", str(det), "--data", str(data), "--layout", "rsna"]
    argv += ["--split", "all", "--score-threshold", "0.0", "--json", str(path), *extra]
    argv += ["--device", "cpu"]
    assert main(argv) == 0
    return json.loads(path.read_text())


SUMMARY = ("rsna", "rsna_thresholded", "map", "map_50", "map_75", "tp", "fp", "fn")
NEGATIVE = ("fp_per_negative_image", "fp_per_negative_image_by_class", "missed_positives")


def test_evaluate_det_with_and_without_the_gate(runs, tmp_path, capsys):
    plain = _evaluate(runs, tmp_path / "plain.json")
    n_neg = sum(r["tp"] + r["fn"] == 0 for r in plain["per_image"])  # no ground-truth boxes
    assert plain["negative_images"] == n_neg == plain["images"] - plain["positive_images"] > 0
    neg_fp = sum(r["fp"] for r in plain["per_image"] if r["tp"] + r["fn"] == 0)
    assert plain["fp_per_negative_image"] == pytest.approx(neg_fp / n_neg)
    assert set(plain["fp_per_negative_image_by_class"]) <= {NORMAL, NOT_NORMAL}
    assert "ungated" not in plain and "gate" not in plain
    assert plain["fp"] > 0  # score threshold 0: the 1-epoch detector leaves boxes to gate
    assert "FP per negative image" in capsys.readouterr().out

    # the gate's ungated side is the plain evaluation, from the same detector pass
    gate = runs[2]
    open_gate = _evaluate(
        runs, tmp_path / "open.json", "--gate", str(gate), "--gate-threshold", "0"
    )
    for key in SUMMARY + NEGATIVE:
        assert open_gate["ungated"][key] == plain[key], key
        assert open_gate[key] == plain[key], key  # threshold 0 keeps everything
    assert open_gate["gate"]["gated_images"] == 0 and open_gate["gate"]["threshold"] == 0.0
    assert all(r["gate_kept"] and 0 <= r["p_gate"] <= 1 for r in open_gate["per_image"])

    shut = _evaluate(runs, tmp_path / "shut.json", "--gate", str(gate), "--gate-threshold", "1")
    assert shut["gate"]["gated_images"] == shut["images"]  # softmax P < 1 everywhere
    assert (shut["tp"], shut["fp"], shut["fp_per_negative_image"]) == (0, 0, 0.0)
    assert shut["missed_positives"] == shut["positive_images"] == plain["positive_images"]
    assert all(v == 0.0 for v in shut["fp_per_negative_image_by_class"].values())
    for key in SUMMARY + NEGATIVE:
        assert shut["ungated"][key] == plain[key], key
    text = capsys.readouterr().out
    assert "gate: P(Lung Opacity) >= 1.0000 (argument)" in text and "ungated: FP per" in text

    # no --gate-threshold: the checkpoint's stored threshold, else 0.5
    stored = load_checkpoint(gate).get("threshold")
    default = _evaluate(runs, tmp_path / "default.json", "--gate", str(gate))
    want = (0.5, "default") if stored is None else (pytest.approx(stored), "checkpoint")
    assert (default["gate"]["threshold"], default["gate"]["threshold_source"]) == want
    p = {r["id"]: r["p_gate"] for r in open_gate["per_image"]}
    for r in default["per_image"]:  # the same probabilities, gated at the stored threshold
        assert r["p_gate"] == p[r["id"]]
        assert r["gate_kept"] == (r["p_gate"] >= default["gate"]["threshold"])
        if not r["gate_kept"]:
            assert r["tp"] == r["fp"] == 0


def test_predict_det_gate_and_errors(runs, tmp_path, capsys):
    data, det, gate = runs
    images = sorted((data / "stage_2_train_images").glob("*.dcm"))[:3]
    base = ["predict", "det", "--checkpoint", str(det), "--score-threshold", "0.0"]
    base += ["--device", "cpu", *map(str, images)]
    assert main([*base, "--out", str(tmp_path / "open")]) == 0
    assert not (tmp_path / "open" / "gate.csv").exists()
    assert (
        main(
            [*base, "--out", str(tmp_path / "shut"), "--gate", str(gate)]
            + [
                "--gate-threshold",
                "1",
            ]
        )
        == 0
    )
    with open(tmp_path / "shut" / "gate.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == list(map(str, images))
    assert all(r["kept"] == "0" and float(r["P(Lung Opacity)"]) < 1 for r in rows)
    with open(tmp_path / "open" / "boxes.csv") as f:
        before = Counter(r["path"] for r in csv.DictReader(f))
    with open(tmp_path / "shut" / "boxes.csv") as f:
        assert list(csv.DictReader(f)) == []
    assert {r["path"]: int(r["boxes_before"]) for r in rows} == {
        str(p): before[str(p)] for p in images
    }

    assert main([*base, "--out", str(tmp_path / "x"), "--gate-threshold", "0.3"]) == 2
    assert "--gate-threshold needs --gate CLS_CKPT" in capsys.readouterr().err
    bad = [*base, "--out", str(tmp_path / "y"), "--gate", str(gate), "--gate-threshold", "2"]
    assert main(bad) == 2
    assert "--gate-threshold must be a number in [0, 1], got 2.0" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "z"), "--gate", str(det)]) == 2
    err = capsys.readouterr().err
    assert "the gate needs a classification checkpoint" in err and "a detection checkpoint" in err
