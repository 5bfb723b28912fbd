"""The detector's operating point: the grid search against the metrics it optimises, its
post-processing, and the checkpoint entry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdet.engine import ClsConfig, DetConfig
from fastdet.engine.tasks.det import point as P
from fastdet.engine.tasks.det.gate import negative_figures
from fastdet.metrics import match_detections, rsna_score


def _cloud(seed: int, images: int = 16):
    """Images with 0-2 opacities, each found by a large box and a few boxes nested inside it
    (NMS keeps them: their IoU with the large box is low), plus scattered false boxes."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(images):
        gt = []
        for _ in range(rng.integers(0, 3)):
            xy = rng.uniform(0, 150, 2)
            gt.append([*xy, *(xy + rng.uniform(40, 80, 2))])
        boxes, scores = [], []
        for b in gt:
            boxes.append(np.add(b, rng.uniform(-3, 3, 4)))
            scores.append(rng.uniform(0.6, 1.0))
            for _ in range(rng.integers(1, 4)):  # nested, lower scores
                c = rng.uniform(0.3, 0.6, 2) * (b[2] - b[0]) + b[0]
                boxes.append([c[0] - 8, c[1] - 8, c[0] + 8, c[1] + 8])
                scores.append(rng.uniform(0.4, 0.7))
        for _ in range(rng.integers(0, 2)):
            xy = rng.uniform(0, 200, 2)
            boxes.append([*xy, *(xy + 20)])
            scores.append(rng.uniform(0.05, 0.55))
        preds.append(
            {
                "boxes": torch.tensor(np.reshape(boxes, (-1, 4)), dtype=torch.float32),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.ones(len(boxes), dtype=torch.int64),
            }
        )
        targets.append({"boxes": torch.tensor(np.reshape(gt, (-1, 4)), dtype=torch.float32)})
    return preds, targets


def _f1(kept, targets):
    tp = sum(int(match_detections(k, t).sum()) for k, t in zip(kept, targets))
    found = sum(len(k["boxes"]) for k in kept)
    return 2 * tp / (found + sum(len(t["boxes"]) for t in targets))


@pytest.mark.parametrize("objective", ["rsna", "f1"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_chosen_point_beats_the_default_and_scores_what_the_metric_says(objective, seed):
    preds, targets = _cloud(seed)
    point = P.choose_point(preds, targets, objective, "val")
    assert (point.split, point.objective) == ("val", objective)
    kept = [P.apply_point(p, point) for p in preds]
    default = [P.apply_point(p, P.OperatingPoint()) for p in preds]
    score = rsna_score if objective == "rsna" else _f1
    assert point.value == pytest.approx(score(kept, targets))
    assert point.value > score(default, targets)
    # the nested boxes are what it removes: one box per opacity is left
    assert point.containment is not None or point.nms_iou < 0.3 or point.max_boxes <= 2


def test_a_tie_keeps_the_simplest_setting():
    """Perfect detections: every setting scores 1, so nothing beyond the default is chosen."""
    boxes = torch.tensor([[10.0, 10, 50, 50], [100, 100, 150, 140]])
    preds = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.8]), "labels": torch.ones(2).long()}]
    point = P.choose_point(preds, [{"boxes": boxes}], "f1")
    assert point.value == 1.0
    assert (point.score_threshold, point.nms_iou, point.containment) == (0.5, 0.5, None)
    assert point.max_boxes == P.PERMISSIVE_CAP


def test_suppress_applies_nms_containment_and_the_cap_in_that_order():
    boxes = torch.tensor(
        [[0.0, 0, 100, 100], [2, 2, 100, 100], [10, 10, 30, 30], [200, 0, 220, 20]]
    )
    pred = {
        "boxes": boxes,
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
        "labels": torch.ones(4).long(),
    }
    plain = P.suppress(pred, P.OperatingPoint(nms_iou=0.5))
    assert plain["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])  # NMS keeps the nested one
    nested = P.suppress(pred, P.OperatingPoint(nms_iou=0.5, containment=0.5))
    assert nested["scores"].tolist() == pytest.approx([0.9, 0.6])
    capped = P.apply_point(
        pred, P.OperatingPoint(containment=0.5, max_boxes=1, score_threshold=0.95)
    )
    assert len(capped["boxes"]) == 0


def test_points_round_trip_and_bad_parts_are_refused():
    point = P.OperatingPoint(0.3, 0.4, 0.7, 3, "val", "rsna", 0.25)
    assert P.OperatingPoint.from_dict(point.as_dict()) == point
    assert P.stored_point({}) is None
    with pytest.raises(ValueError, match="--nms-iou"):
        point.replace(nms_iou=1.5)
    with pytest.raises(ValueError, match="--max-boxes"):
        point.replace(max_boxes=0)
    with pytest.raises(ValueError, match="unknown"):
        P.OperatingPoint.from_dict({**point.as_dict(), "iou": 0.5})
    assert math.isnan(P.OperatingPoint().value)
    assert "containment off" in P.describe(P.OperatingPoint())


def test_configs_from_before_the_test_split_load_without_one():
    for cls in (DetConfig, ClsConfig):
        saved = cls().to_dict()
        del saved["test_fraction"]
        assert cls.from_dict(saved).test_fraction == 0.0 and cls().test_fraction == 0.2
    with pytest.raises(ValueError, match="test_fraction"):
        DetConfig(val_fraction=0.5, test_fraction=0.5)


def test_false_positives_per_positive_image_count_unmatched_boxes_on_images_with_truth():
    box = [10.0, 10, 50, 50]
    kept = [
        {"boxes": torch.tensor([box, [12, 12, 30, 30], [60, 60, 90, 90]]), "scores": torch.ones(3)},
        {"boxes": torch.tensor([[0.0, 0, 5, 5]]), "scores": torch.ones(1)},  # a miss
        {"boxes": torch.tensor([[0.0, 0, 5, 5]]), "scores": torch.ones(1)},  # a negative's FP
    ]
    targets = [{"boxes": torch.tensor([box])}] * 2 + [{"boxes": torch.zeros(0, 4)}]
    r = negative_figures(kept, targets, [None] * 3)
    assert r["fp_per_positive_image"] == 1.5 and r["positive_images"] == 2  # (2 + 1) / 2
    assert r["fp_per_negative_image"] == 1.0 and r["missed_positives"] == 1
