"""Overlays colour the right pixels; PR curves are the running precision and recall; PNGs load."""

import numpy as np
import pytest
from PIL import Image

from fastdet.metrics import figures as Fg


def square(h, w, y0, x0, s):
    m = np.zeros((h, w), bool)
    m[y0 : y0 + s, x0 : x0 + s] = True
    return m


def test_overlay_contour_colours():
    img = np.random.default_rng().random((40, 50))
    gt, pred = square(40, 50, 5, 5, 20), square(40, 50, 5, 15, 20)
    out = Fg.overlay(img, gt, pred)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    assert tuple(out[5, 5]) == Fg.GREEN  # gt contour only (left edge)
    assert tuple(out[10, 34]) == Fg.RED  # prediction contour only (right edge)
    assert tuple(out[5, 20]) == Fg.YELLOW  # both top edges
    grey = out[30, 45]
    assert grey[0] == grey[1] == grey[2]  # untouched background stays grey
    assert tuple(out[15, 10]) not in (Fg.GREEN, Fg.RED, Fg.YELLOW)  # interiors: no fill by default


def test_overlay_fill_tints_regions():
    img = np.zeros((20, 20))
    gt, pred = square(20, 20, 2, 2, 10), square(20, 20, 2, 6, 10)
    out = Fg.overlay(img, gt, pred, fill=1.0)
    assert (
        tuple(out[6, 4]) == Fg.GREEN
        and tuple(out[6, 13]) == Fg.RED
        and tuple(out[6, 9]) == Fg.YELLOW
    )


def test_overlay_errors():
    with pytest.raises(ValueError, match=r"must share \[H, W\]"):
        Fg.overlay(np.zeros((4, 4)), np.zeros((4, 5)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"fill must be in \[0, 1\]"):
        Fg.overlay(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)), fill=2)
    with pytest.raises(TypeError, match="image must be a numpy array or torch tensor, got list"):
        Fg.overlay([[0]], np.zeros((1, 1)), np.zeros((1, 1)))


def test_save_overlay_writes_png(tmp_path):
    p = Fg.save_overlay(tmp_path / "a" / "o.png", np.eye(8), np.eye(8), np.eye(8))
    assert np.asarray(Image.open(p)).shape == (8, 8, 3)


def test_pr_curve_against_a_loop():
    rng = np.random.default_rng()
    scores, tp = rng.random(30), rng.random(30) < 0.6
    precision, recall = Fg.pr_curve(scores, tp, 25)
    order = sorted(range(30), key=lambda i: -scores[i])
    hits = 0
    for k, i in enumerate(order):
        hits += tp[i]
        assert precision[k] == pytest.approx(hits / (k + 1)) and recall[k] == pytest.approx(
            hits / 25
        )
    with pytest.raises(ValueError, match="one entry per detection"):
        Fg.pr_curve(scores, tp[:5], 3)


def test_save_pr_curves_png(tmp_path):
    p = Fg.save_pr_curves(
        tmp_path / "pr.png", {"a": Fg.pr_curve([0.9, 0.5], [1, 0], 2), "empty": ([], [])}
    )
    assert Image.open(p).size == (500, 400)
