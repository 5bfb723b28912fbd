"""`fastdet demo`'s chest section: lung fields -> a three-class classifier -> the detector gated
by it, on the detection part's synthetic RSNA folder (out/det_data, written with look-alikes:
"No Lung Opacity / Not Normal" patients carry findings that are not pneumonia) and its detector
(out/det/best.pt: no second detector is trained).

A small U-Net learns the lung fields (out/det_data/lungs, the folders layout) on the detection
split's training patients; a ResNet-18 learns Normal / Not Normal / Lung Opacity on the same
patients, each image cropped to its predicted lung fields (ClsConfig.lungs). Every model and
threshold is chosen on the validation patients (best.pt, the gate's threshold, the detector's
operating point) and scored on the test patients, which no choice saw: the detector at its
operating point, with and without the gate (boxes dropped where P(Lung Opacity) is below the
classifier's stored threshold)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import torch

from ..engine.tasks import load_model, train
from ..engine.tasks.cls.data import class_name_list, open_cls_dataset
from ..engine.tasks.cls.evaluate import evaluate_classification, format_cls_report
from ..engine.tasks.cls.task import ClsConfig
from ..engine.tasks.det.data import open_det_dataset
from ..engine.tasks.det.evaluate import evaluate_detection
from ..engine.tasks.det.gate import load_gate
from ..engine.tasks.det.predictor import load_detector_at_point
from ..engine.tasks.seg.data import open_seg_dataset
from ..engine.tasks.seg.evaluate import evaluate_segmentation
from ..engine.tasks.seg.task import SegConfig

NOT_NORMAL = "No Lung Opacity / Not Normal"
SOURCES = {
    "checkpoint": "the Youden's J threshold the classifier stored, chosen on the validation "
    "patients",
    "default": "0.5: the classifier stored no threshold",
    "argument": "given",
}
# (lung U-Net epochs, depth, width; classifier epochs, its lr step size)
CHEST_PRESETS = {"full": (5, 3, 8, 8, 6), "quick": (1, 2, 4, 1, 1)}
# The patients of the demo's RSNA folder: validation chooses, test scores.
SPLIT = dict(val_fraction=0.25, test_fraction=0.2)


def demo_unet_config(
    depth: int, width: int, epochs: int, size: int, seed: int, progress: bool, extra: dict, **kw
) -> SegConfig:
    """The demos' U-Net settings (the nuclei and the lung fields): Adam at 3e-3, BCE + Dice,
    size x size crops, on the CPU, no learning-rate step within the run; kw overrides."""
    base = dict(
        model="unet",
        depth=depth,
        width=width,
        epochs=epochs,
        batch_size=4,
        optimizer="adam",
        lr=3e-3,
        loss="bce_dice",
        size=size,
        seed=seed,
        device="cpu",
        step_size=max(epochs, 1),
        progress=progress,
        extra=extra,
    )
    return SegConfig(**{**base, **kw})


def run_chest(out, side: int, preset, seed: int = 0, progress: bool = False) -> dict:
    """The chest section on out/det_data and out/det/best.pt (the detection part's), same
    patient split (seed, SPLIT). Writes out/lungs and out/cls (the runs),
    out/figures/lungs (lung contour overlays), out/figures/cls (ROC curves, confusion matrix)
    and out/figures/chest (gated boxes, PR curve). Returns {"lungs": {"dice", "iou" (means
    over the test patients), "images", "per_image", "overlays"}, "classifier":
    evaluate_classification's result, "detection": evaluate_detection's with the gate (its
    "ungated" beside; rows get "class"), "seconds": per stage}."""
    out = Path(out)
    lung_epochs, depth, width, cls_epochs, step = preset
    split = dict(seed=seed, **SPLIT)  # the detection part's
    t0 = time.perf_counter()
    lungs = _lungs(out, side, (lung_epochs, depth, width), seed, progress)
    t1 = time.perf_counter()
    cls = _classifier(out, side, cls_epochs, step, seed, progress)
    t2 = time.perf_counter()
    det_model, det_config, point = load_detector_at_point(out / "det" / "best.pt")
    test = open_det_dataset("rsna", out / "det_data", "test", **split)
    gate = load_gate(_best(out / "cls"))
    figures = out / "figures" / "chest"
    det = evaluate_detection(
        det_model, det_config, test, "cpu", figures=figures, gate=gate, point=point
    )
    for row, name in zip(det["per_image"], class_name_list(test)):
        row["class"] = name
    seconds = {"lungs": t1 - t0, "classifier": t2 - t1, "gated": time.perf_counter() - t2}
    return {"lungs": lungs, "classifier": cls, "detection": det, "seconds": seconds}


def _best(run: Path) -> Path:
    """run/best.pt, or run/last.pt where no epoch had a finite validation AUC (the quick
    preset's single validation patient has one class only)."""
    best = run / "best.pt"
    return best if best.is_file() else run / "last.pt"


def _lung_sets(data: Path, seed: int):
    """The lung-field images (folders layout) of the detection split's training, validation
    and test patients: the RSNA split is stratified by Target, the folders one is not, so the
    folders are subset by patient id (no validation or test patient is trained on)."""
    lungs = open_seg_dataset("folders", data / "lungs")
    where = {pid: i for i, pid in enumerate(lungs.ids)}
    sets = []
    for part in ("train", "val", "test"):
        ids = open_det_dataset("rsna", data, part, seed=seed, **SPLIT).ids
        sets.append(torch.utils.data.Subset(lungs, [where[pid] for pid in ids]))
    return sets


def _lungs(out: Path, side: int, preset, seed: int, progress: bool) -> dict:
    epochs, depth, width = preset
    data = out / "det_data"
    train_set, val_set, test_set = _lung_sets(data, seed)
    config = demo_unet_config(
        depth,
        width,
        epochs,
        side,
        seed,
        progress,
        {"data": str(data / "lungs"), "layout": "folders"},
        batch_size=8,
        vflip=0.0,  # chest films are not upside down
    )
    train(config, train_set, val_set, out / "lungs")
    model, saved = load_model(out / "lungs" / "best.pt", "cpu")
    figures = out / "figures" / "lungs"
    result = evaluate_segmentation(
        model, saved, test_set, "cpu", tile=0, classical=False, figures=figures
    )
    overall = result["overall"]["model"]
    return {
        "images": len(test_set),
        "dice": overall["dice"]["mean"],
        "iou": overall["iou"]["mean"],
        "per_image": result["images"],
        "overlays": [str(p) for p in sorted(figures.glob("*.png"))],
    }


def _classifier(out: Path, side: int, epochs: int, step: int, seed: int, progress: bool) -> dict:
    """ResNet-18 on the three RSNA classes, each image cropped to its predicted lung fields
    (out/lungs/best.pt); the gate-learning test's settings."""
    data = out / "det_data"
    split = dict(seed=seed, **SPLIT)
    config = ClsConfig(
        model="resnet18",
        size=side,
        epochs=epochs,
        batch_size=8,
        lr=1e-3,
        step_size=step,
        gamma=0.1,
        lungs=str(out / "lungs" / "best.pt"),
        seed=seed,
        device="cpu",
        progress=progress,
        extra={"data": str(data), "layout": "rsna"},
    )
    val = open_cls_dataset("rsna", data, "val", **split)
    train(config, open_cls_dataset("rsna", data, "train", **split), val, out / "cls")
    gate = load_gate(_best(out / "cls"))
    return evaluate_classification(
        gate.model,
        gate.config,
        open_cls_dataset("rsna", data, "test", **split),
        "cpu",
        figures=out / "figures" / "cls",
        threshold=gate.threshold,
    )


def chest_report(chest: dict, det: dict, out: Path) -> str:
    """The report's chest section (markdown); det: the detection part's (ungated) evaluation
    of the same patients, whose box figures are shown beside the gated ones."""
    lungs, cls, gated = chest["lungs"], chest["classifier"], chest["detection"]
    s = chest["seconds"]
    lines = [
        "",
        "## Chest X-ray: lungs -> classifier -> gated detector",
        "",
        f'The same synthetic RSNA patients (`det_data/`, whose "{NOT_NORMAL}" images carry '
        "findings that are not pneumonia: a mass, an effusion, an enlarged heart, haze) and the "
        f"same detector. A U-Net learns the lung fields (`det_data/lungs/`; {s['lungs']:.0f} s): "
        f"held-out Dice {lungs['dice']:.3f}, IoU {lungs['iou']:.3f} on {lungs['images']} "
        "test patients.",
        "",
    ]
    lines += _figure(lungs["overlays"][:1], out, "lung fields: truth green, U-Net red")
    lines += [
        f"A ResNet-18 (from scratch, {_epochs(out / 'cls')} epochs; {s['classifier']:.0f} s) "
        "is trained to tell Normal, Not Normal and Lung Opacity apart on each image cropped to "
        "its predicted lung fields; test patients:",
        "",
        "```",
        format_cls_report(cls),
        "```",
        "",
    ]
    lines += _figure([cls["files"]["roc_png"]], out, "ROC curves, one class vs the rest")
    lines += _gate_table(gated, s["gated"]) + _box_figures(gated, det, out)
    lines += [
        "Training curves: `lungs/metrics.png`, `cls/metrics.png`; confusion matrix and "
        "predictions: `figures/cls/`; lung contours: `figures/lungs/`; gated boxes and PR curve: "
        "`figures/chest/`.",
        "",
    ]
    return "\n".join(lines)


def _epochs(run: Path) -> int:

    with open(run / "metrics.csv", newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def _figure(paths, out: Path, caption: str) -> list:
    lines = []
    for p in paths:
        if Path(p).is_file():
            lines += [f"![{caption}]({Path(p).relative_to(out).as_posix()})", ""]
    return lines


def _fp(r: dict, cls: str | None = None) -> float:
    if cls is None:
        return r["fp_per_negative_image"]
    return r["fp_per_negative_image_by_class"].get(cls, float("nan"))


def _gate_table(gated: dict, seconds: float) -> list:
    u, g = gated["ungated"], gated
    gate = g["gate"]
    rows = [
        f"| {name} | {r['rsna']:.3f} | {r['map_50']:.3f} | {_fp(r):.3f} | "
        f"{_fp(r, NOT_NORMAL):.3f} | {_fp(r, 'Normal'):.3f} | "
        f"{r['missed_positives']} of {r['positive_images']} |"
        for name, r in (("detector alone", u), ("gated", g))
    ]
    return [
        f"The gate drops every box of an image whose P(Lung Opacity) < {gate['threshold']:.3g} "
        f"({SOURCES.get(gate['threshold_source'], gate['threshold_source'])}); it dropped the "
        "boxes of "
        f"{gate['gated_images']} of {g['images']} test images ({seconds:.0f} s). At IoU 0.5, "
        f"{point_words(g)}:",
        "",
        "| | RSNA score | AP50 | FP / negative image | FP / Not Normal image | "
        "FP / Normal image | missed positives |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        _verdict(g, u),
        "",
    ]


def point_words(result: dict) -> str:
    """How the boxes were kept: the operating point and where it was chosen, or the plain score
    threshold."""
    p = result.get("operating_point")
    if p is None:
        return f"box score >= {result['score_threshold']:g}"
    contain = "off" if p["containment"] is None else f"{p['containment']:g}"
    return (
        f"the detector's operating point chosen on the {p['split']} patients (score >= "
        f"{p['score_threshold']:g}, NMS IoU {p['nms_iou']:g}, containment {contain}, at most "
        f"{p['max_boxes']} boxes per image)"
    )


def _change(before: float, after: float, what: str, lower_is_better: bool) -> str:
    if math.isnan(before) or math.isnan(after):
        return f"has no held-out image to change {what} on"
    if after == before:
        return f"leaves {what} unchanged ({after:.3f})"
    better = (after < before) == lower_is_better
    verb = "lowers" if after < before else "raises"
    return f"{verb} {what} from {before:.3f} to {after:.3f}" + ("" if better else " (worse)")


def _verdict(g: dict, u: dict) -> str:
    """One sentence, from the figures, of what the gate did here."""
    missed = g["missed_positives"] - u["missed_positives"]
    return (
        "Here the gate "
        + _change(_fp(u, NOT_NORMAL), _fp(g, NOT_NORMAL), "the FP boxes per Not Normal image", True)
        + ", "
        + _change(u["rsna"], g["rsna"], "the RSNA score", False)
        + (
            f" and misses {missed} more positive image(s)."
            if missed > 0
            else " and misses no more positive images."
        )
    )


def _box_figures(gated: dict, det: dict, out: Path) -> list:
    """A Not Normal image whose false positives the gate removed (the detector's boxes, then
    the gated result), if any, and a positive image the gate kept (else the first image)."""
    ungated = {r["id"]: r for r in det["per_image"] if "figure" in r}
    rows = [r for r in gated["per_image"] if "figure" in r]
    fixed = [
        r
        for r in rows
        if r["class"] == NOT_NORMAL and not r["gate_kept"] and ungated.get(r["id"], {}).get("fp")
    ]
    kept = [r for r in rows if r["gate_kept"] and r["tp"] > 0]
    lines = []
    for r in fixed[:1]:
        u = ungated[r["id"]]
        lines += _figure(
            [u["figure"]], out, f"{NOT_NORMAL}, the detector alone: {u['fp']} false positive(s)"
        )
        lines += _figure(
            [r["figure"]], out, f"the same image gated: P(Lung Opacity) {r['p_gate']:.2g}, dropped"
        )
    for r in (kept or rows)[:1]:  # a quick run may have no such image: then the first one
        lines += _figure(
            [r["figure"]],
            out,
            f"{r['class']}, gated: P(Lung Opacity) {r['p_gate']:.2g}, boxes "
            f"{'kept' if r['gate_kept'] else 'dropped'}: predicted red, truth green",
        )
    return lines
