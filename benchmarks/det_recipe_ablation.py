"""The Faster R-CNN recipe ablation behind DetConfig's defaults (results: benchmarks/results/
cpu-det-recipe-ablation-*.json, shown by docs/figures.py).

One synthetic RSNA folder with look-alikes per seed (64 patients of 128 px; train / val 0.25 /
test 0.2), ResNet-18 + FPN from scratch with apps.demo.demo_det_config and 300 test proposals
for 8 epochs; the base uses BatchNorm (the default before the ablation) and each variant makes
one change (all: every change). best.pt and its operating point are chosen on val; the test
patients are scored at the point and, as "raw", at score >= 0.5 after NMS 0.5.

    python benchmarks/det_recipe_ablation.py SEED VARIANT   # prints one JSON line
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from fastdet.apps.demo import demo_det_config
from fastdet.data.synthetic import synth_rsna
from fastdet.engine import evaluate_detection, train
from fastdet.engine.tasks.det.data import open_det_dataset
from fastdet.engine.tasks.det.predictor import load_detector_at_point

BASE = dict(norm="bn", test_proposals=300)
VARIANTS = {
    "base": {},
    "jitter": dict(scale_jitter=0.3),
    "intensity": dict(intensity=0.3),
    "cosine": dict(lr_schedule="cosine"),
    "gn": dict(norm="gn"),
    "gn+cosine": dict(norm="gn", lr_schedule="cosine"),
    "anchors": dict(anchor_sizes=["auto"]),
    "all": dict(
        scale_jitter=0.3, intensity=0.3, lr_schedule="cosine", norm="gn", anchor_sizes=["auto"]
    ),
}


def run(seed: int, name: str, epochs: int = 8) -> dict:
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp())
    data = synth_rsna(out / "data", n=64, seed=seed, size=128, lookalikes=True)
    split = dict(seed=seed, val_fraction=0.25, test_fraction=0.2)
    parts = {p: open_det_dataset("rsna", data, p, **split) for p in ("train", "val", "test")}
    start = time.perf_counter()
    config = demo_det_config(128, epochs, seed=seed, **{**BASE, **VARIANTS[name]})
    history = train(config, parts["train"], parts["val"], out / "det")
    model, config, point = load_detector_at_point(out / "det" / "best.pt")
    at = evaluate_detection(model, config, parts["test"], "cpu", point=point)
    model.roi_heads.nms_thresh, model.roi_heads.detections_per_img = 0.5, 100
    raw = evaluate_detection(model, config, parts["test"], "cpu")
    return dict(
        seed=seed,
        name=name,
        val_ap50=[round(r["val_map_50"], 3) for r in history],
        test_ap50=round(at["map_50"], 3),
        test_ap50_raw=round(raw["map_50"], 3),
        fp_pos=round(at["fp_per_positive_image"], 3),
        fp_pos_raw=round(raw["fp_per_positive_image"], 3),
        fp_neg=round(at["fp_per_negative_image"], 3),
        fp_neg_raw=round(raw["fp_per_negative_image"], 3),
        rsna=round(at["rsna_thresholded"], 4),
        rsna_raw=round(raw["rsna_thresholded"], 4),
        missed=(raw["missed_positives"], at["missed_positives"]),
        positives=at["positive_images"],
        ci=at["ci"],
        point=point.as_dict(),
        seconds=round(time.perf_counter() - start),
    )


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]), sys.argv[2])))
