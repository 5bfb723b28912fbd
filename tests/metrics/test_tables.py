"""Per-subject IoU/Dice tables, method summaries and the CSV round trip."""

import math

import numpy as np
import pytest

from fastdet.metrics import (
    dice,
    format_mean_std,
    iou,
    method_summary,
    read_csv,
    subject_table,
    subject_table_from_rows,
    wide_table,
    write_csv,
)


def samples(rng, subjects=("p01", "p02", "p03"), methods=("unet", "otsu"), slices=4):
    out = []
    for s in subjects:
        truth = rng.random((slices, 12, 12)) < 0.3
        truth[0] = False  # an empty slice in every subject
        for m in methods:
            noise = rng.random(truth.shape) < (0.05 if m == "unet" else 0.25)
            pred = truth ^ noise
            out += [(s, m, pred[k], truth[k]) for k in range(slices)]
    return out


def test_subject_table_pooled_and_mean(rng):
    data = samples(rng)
    pooled = subject_table(data)
    assert [(r["subject"], r["method"]) for r in pooled] == [
        (s, m) for s in ("p01", "p02", "p03") for m in ("unet", "otsu")
    ]
    for row in pooled:
        mine = [(p, t) for s, m, p, t in data if (s, m) == (row["subject"], row["method"])]
        vol_p, vol_t = np.stack([p for p, _ in mine]), np.stack([t for _, t in mine])
        assert row["n_images"] == 4
        assert row["iou"] == pytest.approx(iou(vol_p, vol_t))  # pooled = per volume
        assert row["dice"] == pytest.approx(dice(vol_p, vol_t))
    means = subject_table(data, reduction="mean")
    row = means[0]
    mine = [(p, t) for s, m, p, t in data if (s, m) == ("p01", "unet")]
    per = [dice(p, t) for p, t in mine]
    assert math.isnan(per[0])  # the empty slice is left out of the mean
    assert row["dice"] == pytest.approx(np.nanmean(per))


def test_rows_wide_summary_and_csv(rng, tmp_path):
    rows = [
        {"subject": "a", "method": "unet", "iou": 0.5, "dice": 0.6},
        {"subject": "a", "method": "unet", "iou": 0.7, "dice": float("nan")},
        {"subject": "a", "method": "otsu", "iou": 0.2, "dice": 0.3},
        {"subject": "b", "method": "unet", "iou": 0.9, "dice": 0.95},
    ]
    table = subject_table_from_rows(rows)
    assert table[0] == {
        "subject": "a",
        "method": "unet",
        "iou": pytest.approx(0.6),
        "dice": 0.6,
        "n_images": 2,
    }
    wide = wide_table(table)
    assert wide[0]["otsu iou"] == 0.2 and wide[1]["unet dice"] == 0.95
    assert math.isnan(wide[1]["otsu iou"])  # no otsu row for subject b
    summ = method_summary(table)
    assert summ[0]["method"] == "unet" and summ[0]["n_subjects"] == 2
    assert summ[0]["iou_mean"] == pytest.approx(0.75) and summ[0]["iou_std"] == pytest.approx(0.15)
    assert format_mean_std(summ[0]["iou_mean"], summ[0]["iou_std"]) == "0.750 ± 0.150"
    path = write_csv(table, tmp_path / "subjects.csv")
    back = read_csv(path)
    assert back[1] == {"subject": "a", "method": "otsu", "iou": 0.2, "dice": 0.3, "n_images": 1.0}
    assert path.read_text().splitlines()[0] == "subject,method,iou,dice,n_images"
    write_csv(subject_table(samples(rng, subjects=("007",))), tmp_path / "s.csv")
    assert read_csv(tmp_path / "s.csv")[0]["subject"] == "007"  # ids stay strings


def test_table_errors():
    with pytest.raises(ValueError, match="reduction must be one of"):
        subject_table([], reduction="median")
    with pytest.raises(
        ValueError, match=r"samples\[0\] must be \(subject, method, pred, target\), got 3 items"
    ):
        subject_table([("a", "m", np.zeros(2))])
    with pytest.raises(ValueError, match=r"rows\[0\] lacks \['dice'\]"):
        subject_table_from_rows([{"subject": "a", "method": "m", "iou": 1.0}])
    with pytest.raises(ValueError, match="same shape"):
        subject_table([("a", "m", np.zeros(2), np.zeros(3))])
