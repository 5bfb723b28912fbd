"""`fastdet demo`: synthetic data -> training -> evaluation -> a report, on the CPU in minutes.

Segmentation: a synthetic 2018 Data Science Bowl dataset (fluorescence-like nuclei, touching
pairs included), a small U-Net trained with BCE + Dice, scored on the held-out images against
the classical baseline (smoothing, Otsu, morphology, watershed), with contour overlays.
Detection: a synthetic RSNA Pneumonia folder (chest DICOMs and the labels CSV, negatives
included, "No Lung Opacity / Not Normal" ones with look-alike findings), Faster R-CNN (ResNet-18
+ FPN, from scratch) trained briefly; its best epoch and operating point chosen on the
validation patients, it is scored on the test patients (RSNA score, COCO AP, AP50, FROC) with
the boxes drawn.
Chest (demo_chest): on the same patients, a lung-field U-Net, a lung-cropped ResNet-18 of the
three RSNA classes and the detector gated by it, gated and ungated figures side by side, with
lung contours, ROC curves and boxes drawn.
Instances: Mask R-CNN (ResNet-18 + FPN, from scratch) trained on the segmentation's nuclei, its
DSB-2018 score beside the U-Net's instances (watershed split) and the classical baseline's on
the same held-out images, with instance overlays."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..data.synthetic import synth_dsb2018, synth_rsna
from ..engine.checkpoint import atomic_write_text
from ..engine.logging import json_safe
from ..engine.tasks import load_model, train
from ..engine.tasks.det.data import open_det_dataset
from ..engine.tasks.det.evaluate import evaluate_detection, format_det_report
from ..engine.tasks.det.predictor import load_detector_at_point
from ..engine.tasks.det.task import DetConfig
from ..engine.tasks.seg.data import open_seg_dataset
from ..engine.tasks.seg.evaluate import evaluate_segmentation, format_report
from .chest import (
    CHEST_PRESETS,
    SPLIT,
    chest_report,
    demo_unet_config,
    point_words,
    run_chest,
)

# (images, image side, epochs, U-Net depth, width, crop): a few minutes on 2 CPU cores, or seconds
PRESETS = {"full": (24, 128, 30, 3, 16, 96), "quick": (6, 64, 2, 2, 4, 32)}
# (patients, image side, epochs) of the detection part
DET_PRESETS = {"full": (64, 128, 12), "quick": (4, 64, 1)}
SPLITS = ("train", "val", "test")
# epochs of the instance part (on the segmentation's data)
INST_EPOCHS = {"full": 16, "quick": 1}


SMOKE = (
    "a smoke test (--quick): a few tiny images and one or two epochs per model, so its figures "
    "only show that every stage runs and writes its files, not what the models learn; "
    "`fastdet demo` (about 25 minutes on 2 CPU cores) gives figures that mean something"
)


def _stage(name: str, started: float) -> float:
    """One line per finished stage on stderr (a log shows the run's progress without the bars);
    returns the stage's seconds."""
    seconds = time.perf_counter() - started
    print(f"demo: {name} done in {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def run_demo(out, quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """Writes out/data and out/det_data (the datasets), out/seg, out/det, out/lungs, out/cls and
    out/inst (the runs: checkpoints, metrics.csv/png), out/figures (contour overlays; det/:
    boxes drawn, PR curve; lungs/, cls/, chest/: the chest section's, see demo_chest.run_chest;
    inst/), out/report.md and out/evaluation.json; returns {"segmentation", "detection",
    "chest", "instances"} (the evaluations)."""
    out = Path(out)
    preset = "quick" if quick else "full"
    if quick:
        print(f"demo: {SMOKE}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    seg, seg_history = _segmentation(out, PRESETS[preset], seed, progress)
    seg_seconds = _stage("segmentation", started)
    started = time.perf_counter()
    det, det_history = _detection(out, DET_PRESETS[preset], seed, progress)
    det_seconds = _stage("detection", started)
    started = time.perf_counter()
    chest = run_chest(out, DET_PRESETS[preset][1], CHEST_PRESETS[preset], seed, progress)
    _stage("chest (lungs, classifier, gated detection)", started)
    started = time.perf_counter()
    inst, inst_history = _instances(out, PRESETS[preset][1], INST_EPOCHS[preset], seed, progress)
    inst_seconds = _stage("instances", started)
    result = {"segmentation": seg, "detection": det, "chest": chest, "instances": inst}
    smoke = f"**This run is {SMOKE}.**\n\n" if quick else ""
    atomic_write_text(
        out / "report.md",
        _report(result, seg_history, det_history, out, (seg_seconds, det_seconds), smoke)
        + chest_report(chest, det, out)
        + _instance_report(inst, inst_history, inst_seconds, out),
    )
    atomic_write_text(
        out / "evaluation.json", json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n"
    )
    return result


def _segmentation(out: Path, preset, seed: int, progress: bool):

    n, side, epochs, depth, width, crop = preset
    data = synth_dsb2018(out / "data", n=n, seed=seed, size=side)
    train_set = open_seg_dataset("dsb2018", data, "train", seed=seed, val_fraction=0.25)
    val_set = open_seg_dataset("dsb2018", data, "val", seed=seed, val_fraction=0.25)
    extra = {"data": str(data), "layout": "dsb2018"}
    config = demo_unet_config(depth, width, epochs, crop, seed, progress, extra)
    history = train(config, train_set, val_set, out / "seg")
    model, saved = load_model(out / "seg" / "best.pt", "cpu")
    result = evaluate_segmentation(model, saved, val_set, "cpu", tile=0, figures=out / "figures")
    return result, history


def demo_det_config(
    side: int, epochs: int, seed: int = 0, progress: bool = False, **kw
) -> DetConfig:
    """The demo's (and the learning test's) detector settings: ResNet-18 + FPN from scratch on
    side x side images, anchors scaled to the synthetic opacities (side / 256 of the usual
    32..512), 64 RoIs per image, SGD at lr 0.01 after a 20-step warmup, horizontal flips."""
    base = dict(
        model="resnet18_fpn",
        epochs=epochs,
        batch_size=4,
        lr=0.01,
        weight_decay=1e-4,
        step_size=max(epochs, 1),
        min_size=side,
        max_size=side,
        seed=seed,
        device="cpu",
        progress=progress,
        anchor_sizes=[s * side // 256 for s in (32, 64, 128, 256, 512)],
        rois_per_image=64,
        hflip=0.5,
        warmup_steps=20,
    )
    return DetConfig(**{**base, **kw})


def demo_inst_config(
    side: int, epochs: int, seed: int = 0, progress: bool = False, **kw
) -> DetConfig:
    """The demo's (and the instance learning test's) Mask R-CNN settings: demo_det_config's
    (ResNet-18 + FPN from scratch, SGD at lr 0.01 after a 20-step warmup) on side x side nuclei
    images (one foreground class) at their own scale, with anchors of 8..128 px (the synthetic
    nuclei are 8-18 px across at any image size), 128 RoIs per image, up to 100 detections,
    gradients clipped to norm 5 and both flips."""
    mask = dict(
        model="maskrcnn_resnet18_fpn",
        anchor_sizes=[8, 16, 32, 64, 128],
        rois_per_image=128,
        detections_per_img=100,
        clip_grad=5.0,  # from scratch, the mask loss starts large and would diverge
        vflip=0.5,
    )
    return demo_det_config(side, epochs, seed, progress, **{**mask, **kw})


def _instances(out: Path, side: int, epochs: int, seed: int, progress: bool):
    """Mask R-CNN on the segmentation part's data (out/data), scored beside out/seg/best.pt."""
    data = out / "data"
    train_set = open_det_dataset("dsb2018", data, "train", seed=seed, val_fraction=0.25)
    val_set = open_det_dataset("dsb2018", data, "val", seed=seed, val_fraction=0.25)
    config = demo_inst_config(
        side, epochs, seed, progress, extra={"data": str(data), "layout": "dsb2018"}
    )
    history = train(config, train_set, val_set, out / "inst")
    model, saved = load_model(out / "inst" / "best.pt", "cpu")
    result = evaluate_detection(
        model,
        saved,
        val_set,
        "cpu",
        figures=out / "figures" / "inst",
        unet=load_model(out / "seg" / "best.pt", "cpu"),
        classical=True,
    )
    return result, history


def _instance_report(inst: dict, history: list, seconds: float, out: Path) -> str:
    best = max(history, key=lambda r: r["val_mask_map_50"] if r["val_mask_map_50"] >= 0 else -1)
    s = inst["instances"]
    lines = [
        "",
        "## Nuclei instances",
        "",
        f"Mask R-CNN (ResNet-18 + FPN, from scratch) on the same synthetic nuclei, trained for "
        f"{len(history)} epochs on the CPU (best validation mask AP50 "
        f"{best['val_mask_map_50']:.3f} at epoch {best['epoch']}); {seconds:.0f} s.",
        "",
        "DSB-2018 score on the held-out images (mean precision over IoU 0.5:0.95):",
        "",
        "| method | DSB score |",
        "| --- | --- |",
        f"| Mask R-CNN | {s['dsb']:.3f} |",
        f"| U-Net + watershed | {s['dsb_unet']:.3f} |",
        f"| classical | {s['dsb_classical']:.3f} |",
        "",
        f"Mask AP {s['mask_map']:.3f}, AP50 {s['mask_map_50']:.3f}, AP75 "
        f"{s['mask_map_75']:.3f}; box AP50 {inst['map_50']:.3f}. Training curves: "
        "`inst/metrics.png`; instance outlines: `figures/inst/instances/`.",
        "",
    ]
    shown = [r["overlay"] for r in inst["per_image"] if "overlay" in r]
    if shown:
        rel = Path(shown[0]).relative_to(out)
        lines += [f"![Mask R-CNN instances]({rel.as_posix()})", ""]
    return "\n".join(lines)


def _detection(out: Path, preset, seed: int, progress: bool):

    n, side, epochs = preset
    # look-alikes: the chest section's gate has false positives to remove
    data = synth_rsna(out / "det_data", n=n, seed=seed, size=side, lookalikes=True)
    parts = {p: open_det_dataset("rsna", data, p, seed=seed, **SPLIT) for p in SPLITS}
    config = demo_det_config(
        side, epochs, seed, progress, extra={"data": str(data), "layout": "rsna"}, **SPLIT
    )
    history = train(config, parts["train"], parts["val"], out / "det")
    model, saved, point = load_detector_at_point(out / "det" / "best.pt")
    figures = out / "figures" / "det"
    result = evaluate_detection(model, saved, parts["test"], "cpu", figures=figures, point=point)
    return result, history


def _report(result, seg_history, det_history, out: Path, seconds, smoke: str = "") -> str:
    seg, det = result["segmentation"], result["detection"]
    overlays = sorted((out / "figures").glob("*.png"))
    best = max(seg_history, key=lambda r: r["val_dice"])
    best_det = max(
        det_history, key=lambda r: r["val_map_50"] if r["val_map_50"] == r["val_map_50"] else -1
    )
    lines = [
        "# fastdet demo",
        "",
        *([smoke.rstrip()] if smoke else []),
        *([""] if smoke else []),
        "## Nuclei segmentation",
        "",
        f"Synthetic DSB-2018 layout in `data/`; U-Net trained for {len(seg_history)} epochs on "
        f"the CPU (best validation Dice {best['val_dice']:.3f} at epoch {best['epoch']}); "
        f"{seconds[0]:.0f} s.",
        "",
        "Held-out images, the U-Net beside the classical baseline:",
        "",
        "```",
        format_report(seg),
        "```",
        "",
        "Training curves: `seg/metrics.png`, `seg/metrics.csv`.",
        "",
    ]
    if overlays:
        rel = overlays[0].relative_to(out)
        lines += [
            f"![overlay: ground truth green, prediction red, both yellow]({rel.as_posix()})",
            "",
        ]
    lines += [
        "## Pneumonia detection",
        "",
        f"Synthetic RSNA Pneumonia layout in `det_data/` (chest DICOMs, labels CSV, negatives "
        "included, the Not Normal ones with findings that are not pneumonia); Faster R-CNN "
        "(ResNet-18 + FPN, from scratch) trained for "
        f"{len(det_history)} epochs on the CPU (best validation AP50 "
        f"{best_det['val_map_50']:.3f} at epoch {best_det['epoch']}); {seconds[1]:.0f} s.",
        "",
        f"Test patients (no choice saw them), {point_words(det)}:",
        "",
        "```",
        format_det_report(det),
        "```",
        "",
        "Training curves: `det/metrics.png`, `det/metrics.csv`; precision-recall: "
        "`figures/det/pr_curve.png`; boxes drawn: `figures/det/boxes/`.",
        "",
    ]
    drawn = [r["figure"] for r in det["per_image"] if "figure" in r and r["tp"] + r["fn"] > 0]
    for path in drawn[:2]:  # images with opacities
        rel = Path(path).relative_to(out)
        lines += [
            f"![predicted boxes at the operating point red, ground truth green]({rel.as_posix()})",
            "",
        ]
    return "\n".join(lines)
