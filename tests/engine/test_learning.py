"""The engine learns: a small U-Net on a synthetic DSB-2018 folder reaches a validation Dice
well above chance in a few dozen CPU steps. Verified: best validation Dice 0.86-0.97 over
config seeds 0-5 (about 6 s); the threshold leaves margin for other platforms' arithmetic."""

from __future__ import annotations

from fastdet.data.synthetic import synth_dsb2018
from fastdet.engine import load_model, train_segmentation
from fastdet.engine.tasks.seg.data import open_seg_dataset
from fastdet.engine.tasks.seg.evaluate import evaluate_segmentation

from .conftest import seg_tiny

MIN_DICE = 0.8


def test_unet_learns_synthetic_nuclei(tmp_path):
    synth_dsb2018(tmp_path / "data", n=12, seed=0, size=64)
    kw = dict(seed=0, val_fraction=0.25)
    train = open_seg_dataset("dsb2018", tmp_path / "data", "train", **kw)
    val = open_seg_dataset("dsb2018", tmp_path / "data", "val", **kw)
    assert (len(train), len(val)) == (9, 3)
    cfg = seg_tiny(width=8, epochs=20, size=64, optimizer="adam", lr=3e-3, loss="bce_dice", seed=0)
    hist = train_segmentation(cfg, train, val, tmp_path / "run")
    assert hist[0]["val_dice"] < 0.7  # it starts out poor: the score below is learned
    assert max(r["val_dice"] for r in hist) >= MIN_DICE
    model, config = load_model(tmp_path / "run" / "best.pt")
    result = evaluate_segmentation(model, config, val, classical=False)
    assert result["overall"]["model"]["dice"]["mean"] >= MIN_DICE
