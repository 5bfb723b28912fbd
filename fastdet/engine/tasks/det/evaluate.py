"""Evaluation of a detector: RSNA score (all detections and thresholded), COCO AP / AP50 / AP75,
per-image TP / FP / FN at IoU 0.5, the precision-recall curve and the boxes drawn."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ....metrics import (
    bootstrap_intervals,
    classical_segment,
    coco_map,
    draw_boxes,
    dsb_image_score,
    froc,
    match_detections,
    pr_curve,
    rsna_score,
    save_instance_overlay,
    save_pr_curves,
)
from ..seg.evaluate import _methods
from .data import instance_image, instance_masks, prepare_image
from .ensemble import check_members, fuse_members, member_predictions, parse_tta, tta_views
from .gate import apply_gate, format_negative_report, gate_summary, negative_figures
from .point import suppress
from .task import has_masks, instance_outputs, labels_of, mask_scores, predict_detections


def evaluate_detection(
    model,
    config,
    dataset,
    device,
    score_threshold: float = 0.5,
    figures=None,
    max_figures: int = 20,
    unet=None,
    classical: bool = False,
    ensemble=(),
    tta=(),
    fuse: str = "wbf",
    fuse_iou: float = 0.55,
    fuse_skip: float = 0.0,
    gate=None,
    point=None,
) -> dict:
    """RSNA score (of all detections, and of those scoring >= score_threshold, as a thresholded
    submission would be scored), COCO mAP / AP50 / AP75 over `dataset`, and per image the TP / FP
    / FN at IoU 0.5 among detections scoring >= score_threshold. figures: a folder for
    pr_curve.png and, for the first max_figures images, boxes/<id>.png (detections >=
    score_threshold red, ground truth green; the row's "figure").

    Mask R-CNN adds "instances": the DSB-2018 score and COCO mask AP / AP50 / AP75 (per image:
    "dsb"), and beside them, on the same images, the DSB score of `unet` ((model, config) of a
    segmentation checkpoint, instances split by watershed) and of the classical baseline
    (classical=True); figures then also get instances/<id>.png overlays (the row's
    "overlay").

    ensemble: more (model, config) detectors; tta: words of ensemble.TTA_WORDS. With
    either, the detections scored are those of ensemble.fuse_members (fuse, at IoU
    fuse_iou, boxes scoring < fuse_skip dropped first) over the members [model, *ensemble] and
    the views, so every top-level figure is the fused result's; "members" then lists each
    member's plain (one model, no TTA) figures {"model", "rsna", "rsna_thresholded", "map",
    "map_50"} in that order, and "fusion" the settings {"tta", "views", "fuse", "fuse_iou",
    "fuse_skip"}. Mask R-CNN cannot be fused (ValueError).

    Always: gate.negative_figures (fp_per_negative_image[_by_class], fp_per_positive_image,
    missed_positives). gate: a gate.Gate; every figure above is then of the gated detections,
    and "gate" and "ungated" (the detector's own figures, from the same pass) are added.

    point: a point.OperatingPoint applied to each image's detections (the model should run
    with point.permissive's NMS and cap): AP is measured after its NMS, containment and cap,
    the counts at its score threshold (which replaces score_threshold); "operating_point"
    echoes it. Also "froc" (sensitivity at FROC_RATES false positives per image) and "ci"
    (95% bootstrap intervals over images of AP50, the RSNA score and FP per image)."""

    tta = parse_tta(tta)
    if point is not None:
        score_threshold = point.score_threshold
    members = [(model, config), *ensemble]
    fused = len(members) > 1 or bool(tta)
    if fused:
        check_members(members)
    singles = [[] for _ in members]
    masks = has_masks(config.model)
    preds, kept, targets, rows = [], [], [], []
    classes, ungated, probabilities = [], [], []
    for i in range(len(dataset)):
        s = dataset[i]
        if fused:
            per = member_predictions(members, s["image"], tta, device)
            for got, views in zip(singles, per):
                got.append(views[0])
            size = tuple(torch.as_tensor(s["image"]).shape[-2:])
            pred = fuse_members(per, members, size, fuse, fuse_iou, fuse_skip)
        else:
            pred = predict_detections(model, [prepare_image(s["image"], config)], device)[0]
        if point is not None:
            pred = suppress(pred, point)
        classes.append(s.get("meta", {}).get("class"))
        if gate is not None:
            ungated.append(pred)
            probabilities.append(gate.probability(s["image"], device))
            pred = apply_gate(pred, probabilities[-1], gate.threshold)
        target = {
            "boxes": torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1),
        }
        if masks:
            target["masks"] = instance_masks(instance_image(s), len(target["boxes"]))
        preds.append(pred)
        kept.append({k: v[pred["scores"] >= score_threshold] for k, v in pred.items()})
        targets.append(target)
        rows.append(_image_row(s.get("id", str(i)), kept[-1], target))
        if masks:
            rows[-1].update(_instance_row(s, pred, target, config, unet, classical, device))
        if figures is not None and i < max_figures:
            rows[-1]["figure"] = str(_box_figure(Path(figures), s, kept[-1]))
            if masks:
                rows[-1]["overlay"] = str(_instance_figure(Path(figures), s, pred, config))
    cap = max(c.detections_per_img for _, c in members)  # the fused detections' cut
    if point is not None:
        cap = min(cap, point.max_boxes)
    coco = coco_map(preds, targets, max_detections=cap)
    result = {
        "images": len(preds),
        "rsna": float(rsna_score(preds, targets)),
        "rsna_thresholded": float(rsna_score(kept, targets)),
        "map": float(coco["map"]),
        "map_50": float(coco["map_50"]),
        "map_75": float(coco["map_75"]),
        "score_threshold": score_threshold,
        "tp": sum(r["tp"] for r in rows),
        "fp": sum(r["fp"] for r in rows),
        "fn": sum(r["fn"] for r in rows),
        "per_image": rows,
    }
    if fused:
        result["fusion"] = {
            "tta": list(tta),
            "views": len(tta_views(tta)),
            "fuse": fuse,
            "fuse_iou": fuse_iou,
            "fuse_skip": fuse_skip,
        }
        result["members"] = [
            _member_figures(got, targets, c, score_threshold)
            for got, (_, c) in zip(singles, members)
        ]
    result.update(negative_figures(kept, targets, classes))
    result["froc"] = froc(preds, targets)
    result["ci"] = bootstrap_intervals(preds, kept, targets, cap)
    if point is not None:
        result["operating_point"] = point.as_dict()
    if gate is not None:
        result.update(
            gate_summary(
                gate,
                probabilities,
                ungated,
                targets,
                classes,
                rows,
                score_threshold,
                cap,
            )
        )
    if masks:
        result["instances"] = _instance_summary(preds, targets, rows, config)
    if figures is not None:
        result["pr_curve"] = str(_pr_figure(Path(figures), preds, targets))
    return result


def _member_figures(preds, targets, config, score_threshold) -> dict:
    """RSNA score (all and thresholded detections), COCO AP and AP50 of one member's plain
    predictions."""
    kept = [{k: v[p["scores"] >= score_threshold] for k, v in p.items()} for p in preds]
    coco = coco_map(preds, targets, max_detections=config.detections_per_img)
    return {
        "model": config.model,
        "rsna": float(rsna_score(preds, targets)),
        "rsna_thresholded": float(rsna_score(kept, targets)),
        "map": float(coco["map"]),
        "map_50": float(coco["map_50"]),
    }


def _instance_row(sample, pred, target, config, unet, classical, device) -> dict:
    """DSB score of this image's Mask R-CNN instances and, when asked, of U-Net + watershed
    and of the classical baseline."""

    size = tuple(target["masks"].shape[-2:])
    truth = labels_of(target["masks"]).numpy()
    _, labels = instance_outputs(pred, size, config)
    row = {"dsb": dsb_image_score(labels.numpy(), truth)}
    if unet is not None:
        seg_model, seg_config = unet
        tile = seg_config.size  # as `evaluate seg` does by default
        got = _methods(
            seg_model,
            seg_config,
            {**sample, "instances": truth},
            device,
            tile,
            tile // 4,
            True,
            False,
        )
        row["dsb_unet"] = dsb_image_score(got["model"][1], truth)
    if classical:
        image = torch.as_tensor(sample["image"]).float().numpy()
        row["dsb_classical"] = dsb_image_score(classical_segment(image, channel_axis=0)[1], truth)
    return row


def _instance_summary(preds, targets, rows, config) -> dict:
    """DSB score (mean over images) of each method, COCO mask AP / AP50 / AP75."""
    m = mask_scores(preds, targets, config)
    out = {"dsb": m["dsb"], "mask_map": m["map"], "mask_map_50": m["map_50"]}
    out["mask_map_75"] = m["map_75"]
    for key in ("dsb_unet", "dsb_classical"):
        if rows and key in rows[0]:
            out[key] = float(np.mean([r[key] for r in rows]))
    return out


def _instance_figure(folder: Path, sample: dict, pred: dict, config) -> Path:
    """instances/<id>.png: the image with each predicted instance's outline in its colour."""
    name = re.sub(r"[^\w.-]", "_", str(sample.get("id", "image")))
    image = torch.as_tensor(sample["image"])
    _, labels = instance_outputs(pred, tuple(image.shape[-2:]), config)
    return save_instance_overlay(folder / "instances" / f"{name}.png", image, labels.numpy())


def _image_row(image_id: str, kept: dict, target: dict) -> dict:
    tp = match_detections(kept, target)
    return {
        "id": image_id,
        "tp": int(tp.sum()),
        "fp": int((~tp).sum()),
        "fn": int(len(target["boxes"]) - tp.sum()),
    }


def _box_figure(folder: Path, sample: dict, kept: dict) -> Path:
    """boxes/<id>.png, enlarged to about 512 px when the image is smaller."""
    name = re.sub(r"[^\w.-]", "_", str(sample.get("id", "image")))
    side = max(torch.as_tensor(sample["image"]).shape[-2:])
    return draw_boxes(
        folder / "boxes" / f"{name}.png",
        sample["image"],
        kept,
        truth=sample["boxes"],
        scale=max(1, 512 // int(side)),
    )


def _pr_figure(folder: Path, preds: list, targets: list) -> Path:
    """pr_curve.png of all detections matched at IoU 0.5."""
    scores = [p["scores"].numpy() for p in preds]
    tps = [match_detections(p, t) for p, t in zip(preds, targets)]
    curve = pr_curve(
        np.concatenate(scores) if scores else np.zeros(0),
        np.concatenate(tps) if tps else np.zeros(0, bool),
        sum(len(t["boxes"]) for t in targets),
    )
    return save_pr_curves(folder / "pr_curve.png", {"IoU 0.5": curve}, "Precision-recall (IoU 0.5)")


def format_det_report(result: dict) -> str:
    """The figures of evaluate_detection as text lines."""
    lines = [
        f"images: {result['images']}",
        f"RSNA score: {result['rsna']:.4f} (all detections), "
        f"{result['rsna_thresholded']:.4f} (score >= {result['score_threshold']:g})",
        f"COCO AP: {result['map']:.4f}",
        f"AP50: {result['map_50']:.4f}",
        f"AP75: {result['map_75']:.4f}",
        f"at IoU 0.5, score >= {result['score_threshold']:g}: TP {result['tp']}, "
        f"FP {result['fp']}, FN {result['fn']}",
        "id\tTP\tFP\tFN",
    ]
    fusion = result.get("fusion")
    if fusion:
        lines[1:1] = [
            f"fused: {len(result['members'])} model(s) x {fusion['views']} view(s) "
            f"(tta: {','.join(fusion['tta']) or 'none'}), {fusion['fuse']} at IoU "
            f"{fusion['fuse_iou']:g}, boxes < {fusion['fuse_skip']:g} skipped; the figures "
            "below are the fused ones"
        ] + [
            f"member {i} ({m.get('checkpoint', m['model'])}), one model, no TTA: RSNA score "
            f"{m['rsna']:.4f} (all), {m['rsna_thresholded']:.4f} (thresholded), AP50 "
            f"{m['map_50']:.4f}, COCO AP {m['map']:.4f}"
            for i, m in enumerate(result["members"])
        ]
    lines += [f"{r['id']}\t{r['tp']}\t{r['fp']}\t{r['fn']}" for r in result["per_image"]]
    lines += format_negative_report(result)
    if result.get("instances"):
        lines.append(format_instance_report(result["instances"]))
    return "\n".join(lines)


def format_instance_report(inst: dict) -> str:
    """Mask AP and the DSB score of each method, two lines."""
    lines = [
        f"mask AP: {inst['mask_map']:.4f}, AP50: {inst['mask_map_50']:.4f}, "
        f"AP75: {inst['mask_map_75']:.4f}",
        "DSB-2018 score (mean over images): "
        + ", ".join(
            f"{name} {inst[key]:.4f}"
            for key, name in (
                ("dsb", "Mask R-CNN"),
                ("dsb_unet", "U-Net + watershed"),
                ("dsb_classical", "classical"),
            )
            if key in inst
        ),
    ]
    return "\n".join(lines)
