"""The documentation works: every ```python block of README.md and docs/**/*.md runs (a page's
blocks in order, in one namespace, as a reader would paste them), the examples say what they
claim, the generated figures are those the results files give (docs/figures.py --check), and
the README keeps its shape (short, its links resolving, nothing users do not have).

Blocks that must not run take another fence: ```bash for shell, ```text for anything else.
Examples that train do so at the tests' small settings (a few tiny synthetic images, one
epoch, a small network)."""

from __future__ import annotations

import importlib.util
import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
LANGUAGES = {"python", "bash", "text"}  # python runs; the others are shown only


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def blocks(page: Path, language: str = "python") -> list[tuple[int, str]]:
    """(first line number of the code, code) of each fenced block of `language`."""
    text = page.read_text()
    found = []
    for m in FENCE.finditer(text):
        if m.group(1).strip() == language:
            found.append((text.count("\n", 0, m.start(2)) + 1, m.group(2)))
    return found


RUNNABLE = [p for p in PAGES if blocks(p)]


def test_pages_found():
    assert blocks(README), "the README has no Python example"
    assert len(RUNNABLE) >= 8, [_rel(p) for p in RUNNABLE]


@pytest.mark.parametrize("page", RUNNABLE, ids=_rel)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """Each page's blocks, in order, in one namespace; files land under tmp_path (the current
    folder and tempfile's), so nothing is left behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict = {"__name__": "__docs__"}
    for line, code in blocks(page):
        # padded so a traceback names the Markdown file's own line
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_fences_have_known_languages(page):
    """A block in an unknown fence (```py, or none) would silently never run."""
    for m in FENCE.finditer(page.read_text()):
        assert m.group(1).strip() in LANGUAGES, (_rel(page), m.group(1), m.group(2)[:80])


def test_generated_figures_are_fresh(capsys):
    spec = importlib.util.spec_from_file_location("docs_figures", DOCS / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    assert figures.main(["--check"]) == 0, capsys.readouterr().out


def test_readme_shape():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert 'pip install ".[bench]" && fastdet bench' in text
    assert 'pip install -e ".[test]" && python -m pytest -n auto' in text


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_no_private_paths(page):
    """Users have the repository, not the development notes beside it."""
    text = page.read_text()
    assert "shared/" not in text and "DESIGN.md" not in text, _rel(page)


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text()):
        if "://" not in target:
            assert (ROOT / target).exists(), target


# -- what the examples claim --------------------------------------------------------------------


def test_ops_claimed_outputs():
    import torch

    from fastdet import ops

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert ops.batched_nms(boxes, scores, torch.tensor([0, 1, 1]), 0.5).tolist() == [0, 1, 2]
    assert ops.nms(boxes.numpy(), scores.numpy(), 0.5).tolist() == [0, 2]
    assert ops.box_iou(boxes.view(1, 3, 4), boxes[:2], fmt="xyxy").shape == (1, 3, 2)
    assert ops.box_iou(boxes.int(), boxes.int()).dtype == torch.float32
    masks = ops.masks_to_boxes(torch.zeros(2, 64, 64, dtype=torch.bool))
    assert masks.shape == (2, 4) and masks.dtype == torch.float32
    probs = torch.rand(3, 28, 28)
    assert ops.paste_masks(probs, boxes, (100, 120)).shape == (3, 100, 120)
    assert ops.paste_masks(probs, boxes, (100, 120), threshold=0.5).dtype == torch.bool
    labels = ops.masks_to_labels(probs, boxes, scores, (100, 120))
    assert labels.shape == (100, 120) and labels.dtype == torch.int32


def test_rotated_claims():
    import torch

    from fastdet import ops

    rboxes = torch.tensor([[50, 50, 40, 20, 0], [50, 50, 20, 40, 90], [60, 50, 40, 20, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    iou = ops.box_iou_rotated(rboxes, rboxes)
    assert iou[0, 1] == 1 and round(float(iou[0, 2]), 2) == 0.45
    assert ops.nms_rotated(rboxes, scores, 0.5).tolist() == [0, 2]
    idxs = torch.tensor([0, 1, 1])
    assert ops.batched_nms_rotated(rboxes, scores, idxs, 0.5).tolist() == [0, 1, 2]
    corners = torch.tensor([[30, 40, 70, 40, 70, 60, 30, 60.0]])
    assert ops.rotated_to_cxcywhr(corners, "xyxyxyxy").tolist() == [[50, 50, 40, 20, 0]]
    assert ops.box_iou_rotated(corners, corners, fmt="xyxyxyxy").tolist() == [[1.0]]


def test_weighted_boxes_fusion_claims():
    import numpy as np

    from fastdet import ops

    boxes = [[[0.10, 0.10, 0.50, 0.50], [0.60, 0.60, 0.90, 0.90]], [[0.12, 0.10, 0.52, 0.50]]]
    b, s, lab = ops.weighted_boxes_fusion(boxes, [[0.9, 0.6], [0.8]], [[0, 1], [0]], iou_thr=0.55)
    np.testing.assert_allclose(b, [[0.1094, 0.1, 0.5094, 0.5], [0.6, 0.6, 0.9, 0.9]], atol=1e-4)
    np.testing.assert_allclose(s, [0.85, 0.3], atol=1e-6)
    assert lab.tolist() == [0, 1] and lab.dtype == np.int64


def test_metrics_claims():
    import numpy as np
    import torch

    from fastdet import metrics

    gt = np.zeros((64, 64), bool)
    gt[10:40, 10:40] = True
    pred = np.zeros_like(gt)
    pred[15:45, 12:42] = True
    assert (round(metrics.dice(pred, gt), 3), round(metrics.iou(pred, gt), 3)) == (0.778, 0.636)
    preds = [
        {
            "boxes": torch.tensor([[10.0, 10, 50, 50], [60, 60, 90, 90]]),
            "scores": torch.tensor([0.9, 0.3]),
            "labels": torch.tensor([1, 1]),
        }
    ]
    targets = [{"boxes": torch.tensor([[12.0, 8, 52, 48]]), "labels": torch.tensor([1])}]
    assert metrics.coco_map(preds, targets)["map_50"] == pytest.approx(1.0)
    assert metrics.rsna_score(preds, targets) == pytest.approx(0.5)
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 2, 1])
    np.testing.assert_allclose(metrics.roc_auc(probs, labels), [1.0, 0.875, 1.0])
    assert metrics.roc_auc(probs[:, 2], labels == 2) == pytest.approx(1.0)
    assert metrics.accuracy(probs, labels) == pytest.approx(0.75)
    assert metrics.balanced_accuracy(probs, labels) == pytest.approx(5 / 6)
    assert metrics.class_scores(probs, labels, names=["a", "b", "c"])["b"][
        "sensitivity"
    ] == pytest.approx(0.5)
    t, j = metrics.youden_threshold(probs[:, 2], labels == 2)
    assert (t, j) == pytest.approx((0.6, 1.0))
