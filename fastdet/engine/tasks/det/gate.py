"""Gated detection: an image-level classifier removes every box of an image it judges negative
(P(positive class) < threshold), as strong RSNA pneumonia entries did against the detector's
false positives on abnormal but not pneumonic lungs. Also the figures `evaluate det` reports on
negative images (false positives per image, overall and by the image's RSNA class) and on
positive images (missed positives), with and without the gate, from one detector pass."""

from __future__ import annotations

import dataclasses
import math

import torch

from ....metrics import coco_map, match_detections, rsna_score
from ..cls.task import load_classifier, positive_probability

DEFAULT_GATE_THRESHOLD = 0.5


@dataclasses.dataclass
class Gate:
    """A loaded classifier and the threshold on P(config.positive) below which an image's boxes
    are dropped. threshold_source: "argument", "checkpoint" (the Youden's J threshold stored by
    `train cls`) or "default" (0.5, a checkpoint without one)."""

    model: torch.nn.Module
    config: object
    threshold: float
    threshold_source: str
    checkpoint: str = ""

    def probability(self, image, device=None) -> float:
        """P(positive class) of one image ([C, H, W] or [H, W], any units: see cls.data)."""
        return float(positive_probability(self.model, self.config, [image], device=device)[0])

    def describe(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "positive_class": self.config.positive,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
        }


def gate_threshold(threshold: float | None, stored: float | None) -> tuple[float, str]:
    """(threshold, source): the given one, else the checkpoint's stored one, else 0.5. A given
    threshold must be a finite number in [0, 1] (ValueError naming --gate-threshold)."""
    if threshold is not None:
        t = float(threshold)
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise ValueError(f"--gate-threshold must be a number in [0, 1], got {threshold!r}")
        return t, "argument"
    if stored is not None and math.isfinite(float(stored)):
        return float(stored), "checkpoint"
    return DEFAULT_GATE_THRESHOLD, "default"


def load_gate(path, device="cpu", threshold: float | None = None, **speed) -> Gate:
    """A Gate from a classification checkpoint (`train cls`); another kind of checkpoint is a
    ValueError saying so. speed: load_classifier's bf16 and channels_last."""
    try:
        model, config, stored = load_classifier(path, device, **speed)
    except ValueError as e:
        raise ValueError(f"the gate needs a classification checkpoint (`train cls`): {e}") from e
    t, source = gate_threshold(threshold, stored)
    return Gate(model, config, t, source, str(path))


def gate_keeps(probability: float, threshold: float) -> bool:
    """Whether an image's boxes survive: P >= threshold (a probability exactly at the threshold
    keeps them; NaN drops them)."""
    return bool(probability >= threshold)


def apply_gate(pred: dict, probability: float, threshold: float) -> dict:
    """One image's prediction dict (boxes [D, 4], scores [D], labels [D][, masks]) unchanged when
    gate_keeps(probability, threshold), else with every entry cut to 0 detections."""
    if gate_keeps(probability, threshold):
        return pred
    return {k: v[:0] for k, v in pred.items()}


def above(pred: dict, score_threshold: float) -> dict:
    """The detections scoring >= score_threshold."""
    keep = torch.as_tensor(pred["scores"]) >= score_threshold
    return {k: v[keep] for k, v in pred.items()}


def negative_figures(kept: list, targets: list, classes: list) -> dict:
    """False positives on negative images and missed positives, from the detections kept at the
    score threshold (one dict per image) and the targets (boxes [M, 4]).

    fp_per_negative_image: boxes on images without ground-truth boxes / such images (NaN when
    there are none); fp_per_negative_image_by_class: the same per image class (classes[i]: RSNA's
    class name from the sample's meta; images without one are left out of it);
    fp_per_positive_image: kept boxes matching no ground truth at IoU 0.5 on images with ground
    truth / such images (NaN when there are none); missed_positives: images with ground-truth
    boxes but no kept detection matching one at IoU 0.5 (so a positive image with only
    misplaced boxes counts as missed)."""
    if not len(kept) == len(targets) == len(classes):
        raise ValueError(
            f"kept, targets and classes must have one entry per image, got {len(kept)}, "
            f"{len(targets)} and {len(classes)}"
        )
    neg_boxes, by_class = [], {}
    missed = positives = unmatched = 0
    for pred, target, cls in zip(kept, targets, classes):
        n_truth = len(torch.as_tensor(target["boxes"]).reshape(-1, 4))
        if n_truth == 0:
            n = int(len(pred["boxes"]))
            neg_boxes.append(n)
            if cls is not None:
                by_class.setdefault(str(cls), []).append(n)
        else:
            positives += 1
            tp = match_detections(pred, target)
            missed += int(not tp.any())
            unmatched += int((~tp).sum())
    return {
        "negative_images": len(neg_boxes),
        "fp_per_negative_image": sum(neg_boxes) / len(neg_boxes) if neg_boxes else math.nan,
        "fp_per_negative_image_by_class": {c: sum(v) / len(v) for c, v in sorted(by_class.items())},
        "fp_per_positive_image": unmatched / positives if positives else math.nan,
        "positive_images": positives,
        "missed_positives": missed,
    }


def detection_figures(
    preds: list, targets: list, classes: list, score_threshold: float, max_detections: int
) -> dict:
    """The summary figures of evaluate_detection (RSNA score of all and of thresholded
    detections, COCO mAP / AP50 / AP75, TP / FP / FN at IoU 0.5 at the score threshold) and
    negative_figures, of a list of predictions: used for the ungated side of a gated evaluation,
    from the same detector outputs."""
    kept = [above(p, score_threshold) for p in preds]
    tps = [match_detections(k, t) for k, t in zip(kept, targets)]
    coco = coco_map(preds, targets, max_detections=max_detections)
    return {
        "rsna": float(rsna_score(preds, targets)),
        "rsna_thresholded": float(rsna_score(kept, targets)),
        "map": float(coco["map"]),
        "map_50": float(coco["map_50"]),
        "map_75": float(coco["map_75"]),
        "tp": int(sum(int(t.sum()) for t in tps)),
        "fp": int(sum(int((~t).sum()) for t in tps)),
        "fn": int(sum(len(t["boxes"]) - int(tp.sum()) for t, tp in zip(targets, tps))),
        **negative_figures(kept, targets, classes),
    }


def format_negative_report(result: dict) -> list:
    """Text lines of negative_figures (and, for a gated evaluation, the ungated ones and the
    gate's threshold)."""

    def line(r: dict, label: str) -> str:
        by_class = r.get("fp_per_negative_image_by_class", {})
        by = ", ".join(f"{c} {v:.3f}" for c, v in by_class.items())
        return (
            f"{label}FP per negative image: {r['fp_per_negative_image']:.3f}"
            + (f" ({by})" if by else "")
            + f"; missed positives: {r['missed_positives']} of {r['positive_images']}"
        )

    if "fp_per_negative_image" not in result:
        return []
    if "ungated" not in result:
        return [line(result, "")]
    g, u = result["gate"], result["ungated"]
    return [
        f"gate: P({g['positive_class']}) >= {g['threshold']:.4f} ({g['threshold_source']}); "
        f"boxes dropped on {g['gated_images']} of {result['images']} images",
        line(result, "gated: "),
        line(u, "ungated: "),
        f"ungated: RSNA score {u['rsna']:.4f} (all), {u['rsna_thresholded']:.4f} (thresholded); "
        f"AP50 {u['map_50']:.4f}; TP {u['tp']}, FP {u['fp']}, FN {u['fn']}",
    ]


def gate_summary(
    gate: Gate,
    probabilities: list,
    ungated: list,
    targets: list,
    classes: list,
    rows: list,
    score_threshold: float,
    max_detections: int,
) -> dict:
    """The "gate" (its threshold, the images whose boxes it dropped) and "ungated" (figures of
    the detector's own outputs) entries of a gated evaluation; adds each image's P and whether
    its boxes were kept to its row ("p_gate", "gate_kept")."""
    kept = [gate_keeps(p, gate.threshold) for p in probabilities]
    for row, p, k in zip(rows, probabilities, kept):
        row["p_gate"], row["gate_kept"] = float(p), k
    return {
        "gate": {**gate.describe(), "gated_images": int(sum(not k for k in kept))},
        "ungated": detection_figures(ungated, targets, classes, score_threshold, max_detections),
    }
