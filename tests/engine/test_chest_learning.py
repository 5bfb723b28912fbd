"""The detector learns, and the gate fixes the original work's failure, on one synthetic RSNA
folder with look-alikes per seed (128 x 128 chest DICOMs, 64 patients, 48 train / 16
validation; "No Lung Opacity / Not Normal" images carry a mass, an effusion, an enlarged heart
or haze): fasterrcnn_resnet18_fpn from scratch with the demo's settings (apps.demo.
demo_det_config: SGD lr 0.01 after a 20-step warmup, anchors scaled to the image, 64 RoIs per
image, horizontal flips; 300 RPN proposals per image at inference against the model's 1000,
which makes each validation pass ~3x cheaper) for 84 optimizer steps (7 epochs of 12 batches of
4), and a ResNet-18 classifier of the three classes (5 epochs, 128 px, lr 1e-3 then 1e-4 for the
last) as its gate.

- The detector reaches a validation AP50 of MIN_AP50 from an epoch-1 score below 0.15, and
  best.pt scores what its epoch did.
- Gated, the false-positive boxes per "Not Normal" image fall and the RSNA score rises, by
  stated margins, missing at most one more positive image than the detector alone.
- The operating point training stored in best.pt (chosen on validation by the RSNA score)
  at least halves the false-positive boxes per positive image against score >= 0.5 after NMS
  at 0.5, missing at most one more positive image. (Scored on the validation images it was
  chosen on: the set is too small to split again.)

Each seed's runs are built once and shared by its tests; under pytest-xdist the seeds run side
by side (one xdist group each). Measured on the 2-core machine (one thread per run,
2026-12-08, GroupNorm: DetConfig's norm for Faster R-CNN from scratch): best AP50 0.341 (seed
0) and 0.421 (seed 1), both at epoch 7, 0.0 at epoch 1; gated, FP per "Not Normal" image 4.4 ->
0.0 and 8.17 -> 3.67, RSNA 0.0216 -> 0.0384 and 0.0215 -> 0.0287, missed positives 2 -> 2 and
0 -> 0 (the classifier at 8 epochs, step at 6: 4.4 -> 0.8 and 8.17 -> 1.5, RSNA 0.0384 and
0.0345); at the stored point, FP per positive image 5.13 -> 0.75 and 4.75 -> 0.38, missed 2 -> 3
and 0 -> 0. (The detector at 8 epochs, the setting before the suite's time was cut: AP50 0.351 and
0.552, every assertion held too. With BatchNorm, the default before GroupNorm: AP50 0.420 and 0.17.)
A CPU with other vector units computes other trajectories. About 2 min of one core per seed on
a quiet machine."""

from __future__ import annotations

import pytest
import torch

from fastdet.apps.demo import demo_det_config
from fastdet.data.synthetic import synth_rsna
from fastdet.engine import ClsConfig, evaluate_detection, load_gate, load_model, train
from fastdet.engine.checkpoint import load_checkpoint
from fastdet.engine.tasks.cls.data import open_cls_dataset
from fastdet.engine.tasks.det.data import open_det_dataset
from fastdet.engine.tasks.det.point import permissive, stored_point

pytestmark = pytest.mark.slow  # long: run first (tests/conftest.py)

EPOCHS = 7
MIN_AP50 = 0.25
NOT_NORMAL = "No Lung Opacity / Not Normal"
MIN_FP_DROP = 0.3  # fewer false-positive boxes per "Not Normal" image, at least
MIN_RSNA_GAIN = 0.003


def seed_group(seed: int):
    """A seed's tests run on one xdist worker (its runs are built there once)."""
    return pytest.param(seed, marks=pytest.mark.xdist_group(f"chest-seed{seed}"))


def _train_runs(seed: int, out):
    """(validation set, detector history) of one seed; the runs in out/det and out/cls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the measured trajectories
    try:
        data = synth_rsna(out / "data", n=64, seed=seed, size=128, lookalikes=True)
        split = dict(seed=seed, val_fraction=0.25)
        det_train = open_det_dataset("rsna", data, "train", **split)
        val = open_det_dataset("rsna", data, "val", **split)
        assert (len(det_train), len(val)) == (48, 16)
        config = demo_det_config(128, EPOCHS, seed=seed, test_proposals=300)
        history = train(config, det_train, val, out / "det")
        cls = ClsConfig(
            model="resnet18",
            size=128,
            epochs=5,
            batch_size=8,
            lr=1e-3,
            step_size=4,
            gamma=0.1,
            seed=seed,
            device="cpu",
            progress=False,
        )
        train(
            cls,
            open_cls_dataset("rsna", data, "train", **split),
            open_cls_dataset("rsna", data, "val", **split),
            out / "cls",
        )
    finally:
        torch.set_num_threads(threads)
    return val, history


@pytest.fixture(scope="module")
def chest_runs(module_tmp):
    """seed -> (validation set, detector history, run folder), trained on first use."""
    built = {}

    def get(seed: int):
        if seed not in built:
            out = module_tmp(f"chest-seed{seed}")
            built[seed] = (*_train_runs(seed, out), out)
        return built[seed]

    return get


@pytest.mark.parametrize("seed", [seed_group(0), seed_group(1)])
def test_resnet18_fpn_learns_synthetic_rsna(chest_runs, seed):
    val, hist, out = chest_runs(seed)
    assert len(hist) == EPOCHS
    assert hist[0]["val_map_50"] < 0.15  # it starts out poor: the score below is learned
    best = max(r["val_map_50"] for r in hist)
    assert best >= MIN_AP50, [round(r["val_map_50"], 3) for r in hist]
    model, saved = load_model(out / "det" / "best.pt", task="det")
    result = evaluate_detection(model, saved, val, "cpu")
    # best.pt is the best epoch; scored image by image here (batches of 4 in training), so the
    # convolutions' rounding may differ slightly
    assert abs(result["map_50"] - best) < 0.02 and result["images"] == len(val)


@pytest.mark.parametrize("seed", [seed_group(0), seed_group(1)])
def test_gate_lowers_false_positives_and_raises_rsna(chest_runs, seed):
    val, _, out = chest_runs(seed)
    model, config = load_model(out / "det" / "best.pt")
    result = evaluate_detection(model, config, val, "cpu", gate=load_gate(out / "cls" / "best.pt"))
    gated, ungated = result, result["ungated"]
    before = ungated["fp_per_negative_image_by_class"][NOT_NORMAL]
    after = gated["fp_per_negative_image_by_class"][NOT_NORMAL]
    assert before > 0  # the look-alikes fool the detector: there is something to remove
    assert after <= before - MIN_FP_DROP, (before, after)
    assert gated["fp_per_negative_image"] < ungated["fp_per_negative_image"]
    assert gated["rsna"] >= ungated["rsna"] + MIN_RSNA_GAIN, (ungated["rsna"], gated["rsna"])
    assert gated["missed_positives"] <= ungated["missed_positives"] + 1


@pytest.mark.parametrize("seed", [seed_group(0), seed_group(1)])
def test_operating_point_halves_false_positives_on_positive_images(chest_runs, seed):
    val, _, out = chest_runs(seed)
    best = out / "det" / "best.pt"
    model, config = load_model(best)
    plain = evaluate_detection(model, config, val, "cpu")  # score >= 0.5, the model's NMS 0.5
    point = stored_point(load_checkpoint(best))
    assert (point.split, point.objective) == ("val", "rsna")
    permissive(model)
    tuned = evaluate_detection(model, config, val, "cpu", point=point)
    before, after = plain["fp_per_positive_image"], tuned["fp_per_positive_image"]
    assert before > 0 and after <= before / 2, (before, after, point)
    assert tuned["missed_positives"] <= plain["missed_positives"] + 1
    assert tuned["rsna_thresholded"] == pytest.approx(point.value)  # the score it was chosen by
