"""`fastdet demo --quick`: the whole pipeline end to end, writing every promised file."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # long: run first (tests/conftest.py)


def demo(*args):
    return subprocess.run(
        [sys.executable, "-m", "fastdet.cli", "demo", "--no-progress", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quick_demo_writes_report_run_and_figures(tmp_path):
    out = tmp_path / "demo"
    r = demo("--out", out, "--quick")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "overall model" in r.stdout and "overall classical" in r.stdout
    # no terminal: one line per stage with its time; the smoke run says what it is
    stages = re.findall(r"^demo: (.+) done in \d+ s$", r.stderr, re.M)
    assert stages == [
        "segmentation",
        "detection",
        "chest (lungs, classifier, gated detection)",
        "instances",
    ]
    assert "fastdet demo --quick: a smoke test" in r.stdout
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("**This run is a smoke test (--quick)")
    assert "classical" in report and "![overlay" in report
    for name in (
        "seg/best.pt",
        "seg/last.pt",
        "seg/metrics.csv",
        "seg/metrics.png",
        "seg/config.json",
    ):
        assert (out / name).is_file(), name
    assert list((out / "figures").glob("*.png"))
    assert "Pneumonia detection" in report and "RSNA score" in report and "det_data/" in report
    for name in (
        "det/best.pt",
        "det/last.pt",
        "det/metrics.csv",
        "det/metrics.png",
        "det/config.json",
        "figures/det/pr_curve.png",
        "det_data/stage_2_train_labels.csv",
    ):
        assert (out / name).is_file(), name
    assert "detection" in r.stdout and "AP50" in r.stdout
    result = json.loads((out / "evaluation.json").read_text())
    assert set(result["segmentation"]["overall"]) == {"model", "classical"}
    det = result["detection"]
    assert det["images"] >= 1 and 0 <= det["map_50"] <= 1 and 0 <= det["rsna"] <= 1
    drawn = [r["figure"] for r in det["per_image"]]
    assert drawn and all(
        Path(p).is_file() and Path(p).parent == out / "figures" / "det" / "boxes" for p in drawn
    )
    # the chest section: lung U-Net -> lung-cropped classifier -> the detector, gated and not
    assert "## Chest X-ray: lungs -> classifier -> gated detector" in report
    assert "| detector alone |" in report and "| gated |" in report and "Here the gate" in report
    assert "chest: gated detection" in r.stdout and "gate: P(Lung Opacity) >=" in r.stdout
    chest = result["chest"]
    assert set(chest) == {"lungs", "classifier", "detection", "seconds"}
    assert 0 <= chest["lungs"]["dice"] <= 1 and chest["lungs"]["images"] == det["images"]
    cls = chest["classifier"]
    assert list(cls["auc"]) == ["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"]
    assert cls["n_images"] == det["images"] and 0 <= cls["accuracy"] <= 1
    gated = chest["detection"]
    assert gated["images"] == det["images"] and gated["gate"]["positive_class"] == "Lung Opacity"
    # the detector alone, scored inside the gated evaluation, is the detection section's
    assert gated["ungated"]["map_50"] == det["map_50"] and gated["ungated"]["rsna"] == det["rsna"]
    assert all(r["class"] and "p_gate" in r for r in gated["per_image"])
    config = json.loads((out / "cls" / "config.json").read_text())
    assert Path(config["lungs"]) == (out / "lungs" / "best.pt").resolve()  # the lung crop
    for name in (
        "lungs/best.pt",
        "lungs/metrics.csv",
        "cls/last.pt",
        "cls/metrics.csv",
        "figures/cls/roc.png",
        "figures/cls/confusion_matrix.png",
        "figures/chest/pr_curve.png",
        "det_data/lungs/masks",
    ):
        assert (out / name).exists(), name
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert all((out / rel).is_file() for rel in embedded), embedded
    chest_figures = [rel for rel in embedded if rel.split("/")[1] in ("lungs", "cls", "chest")]
    assert {rel.split("/")[1] for rel in chest_figures} == {"lungs", "cls", "chest"}
    assert "figures/cls/roc.png" in chest_figures
    # the instance section: Mask R-CNN beside U-Net + watershed and the classical baseline
    assert "Nuclei instances" in report and "| U-Net + watershed |" in report
    assert "DSB-2018 score" in r.stdout and "Mask R-CNN" in r.stdout
    inst = result["instances"]["instances"]
    assert {"dsb", "dsb_unet", "dsb_classical", "mask_map_50"} <= set(inst)
    assert (out / "inst" / "best.pt").is_file() and (out / "inst" / "metrics.csv").is_file()
    overlays = [r["overlay"] for r in result["instances"]["per_image"]]
    assert overlays and all(Path(p).is_file() for p in overlays)


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    r = demo("--out", tmp_path, "--quick")
    assert r.returncode == 2 and "is not empty" in r.stderr
