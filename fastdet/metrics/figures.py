"""Figures for reports: contour overlays of segmentations, detections drawn as boxes and
precision-recall curves, as PNG.

Overlay colours follow the field's convention: ground truth green, prediction red, and yellow
where they agree (the two contours coincide, or, with `fill`, the regions overlap).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _inputs as inputs

GREEN, RED, YELLOW = (0, 255, 0), (255, 0, 0), (255, 255, 0)


def _as_numpy(x, name: str, sequence: bool = False) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if sequence and isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=np.float64)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


def _gray_rgb(image: np.ndarray) -> np.ndarray:
    """[H, W] (any range) or [H, W, 3] -> uint8 RGB, min-max scaled."""
    img = image.astype(np.float64)
    lo, hi = np.nanmin(img), np.nanmax(img)
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    img = np.nan_to_num(img)
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    return (rgb * 255 + 0.5).astype(np.uint8)


def overlay(image, gt_mask, pred_mask, fill: float = 0.0) -> np.ndarray:
    """uint8 RGB [H, W, 3]: image in grey with the ground-truth contour in green, the predicted
    contour in red and their common contour pixels in yellow. fill in (0, 1] also tints the
    regions: ground truth only green, prediction only red, both yellow, at that opacity."""
    from skimage.segmentation import find_boundaries

    image, gt, pred = (
        _as_numpy(v, n)
        for v, n in ((image, "image"), (gt_mask, "gt_mask"), (pred_mask, "pred_mask"))
    )
    if image.ndim not in (2, 3) or gt.shape != image.shape[:2] or pred.shape != image.shape[:2]:
        raise ValueError(
            f"image {image.shape}, gt_mask {gt.shape} and pred_mask {pred.shape} must share [H, W]"
        )
    if not 0 <= fill <= 1:
        raise ValueError(f"fill must be in [0, 1], got {fill}")
    gt, pred = gt.astype(bool), pred.astype(bool)
    out = _gray_rgb(image).astype(np.float64)
    if fill > 0:
        for region, colour in ((gt & ~pred, GREEN), (pred & ~gt, RED), (gt & pred, YELLOW)):
            out[region] = (1 - fill) * out[region] + fill * np.array(colour)
    g, p = find_boundaries(gt, mode="inner"), find_boundaries(pred, mode="inner")
    out[g & ~p], out[p & ~g], out[g & p] = GREEN, RED, YELLOW
    return out.round().astype(np.uint8)


def save_overlay(path, image, gt_mask, pred_mask, fill: float = 0.0) -> Path:
    """Writes overlay(...) as a PNG; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, gt_mask, pred_mask, fill)).save(path)
    return path


def pr_curve(scores, is_tp, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each detection in decreasing score: scores [D], is_tp [D]
    (arrays, tensors or sequences; whether detection d matched a ground truth), num_gt ground
    truths in all."""
    scores = _as_numpy(scores, "scores", sequence=True).ravel()
    tp = _as_numpy(is_tp, "is_tp", sequence=True).ravel().astype(bool)
    if scores.shape != tp.shape:
        raise ValueError(
            f"scores {scores.shape} and is_tp {tp.shape} must have one entry per detection"
        )
    if num_gt < 0:
        raise ValueError(f"num_gt must be >= 0, got {num_gt}")
    order = np.argsort(-scores, kind="stable")
    ctp = np.cumsum(tp[order])
    precision = ctp / np.arange(1, len(order) + 1)
    recall = ctp / num_gt if num_gt else np.zeros(len(order))
    return precision, recall


def save_instance_overlay(path, image, labels) -> Path:
    """Writes a PNG of the image ([H, W] or [C, H, W], shown grey) with the outline of each
    instance of the label image [H, W] (0 background) in its own colour (matplotlib's tab20,
    cycled); returns the path."""
    from matplotlib import colormaps
    from PIL import Image
    from skimage.segmentation import find_boundaries

    labels = np.asarray(_as_numpy(labels, "labels"))
    x = _as_numpy(image, "image")
    out = _gray_rgb(x.mean(0) if x.ndim == 3 else x)  # channels-first in, grey out
    edges = find_boundaries(labels, mode="inner") & (labels > 0)
    colours = (np.asarray(colormaps["tab20"].colors) * 255).round().astype(np.uint8)
    out[edges] = colours[(labels[edges] - 1) % len(colours)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(path)
    return path


def save_pr_curves(path, curves: dict, title: str = "Precision-recall") -> Path:
    """curves: {name: (precision, recall)} -> one PNG with a line per name (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    try:
        for name, (precision, recall) in curves.items():
            ax.plot(np.r_[0, recall], np.r_[1 if len(precision) else 0, precision], label=name)
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
        if curves:
            ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def draw_boxes(path, image, pred: dict, truth=None, scale: int = 1) -> Path:
    """A PNG of the image ([H, W] or channels-first [C, H, W]: grey, min-max scaled, enlarged
    `scale` times) with the detections pred {"boxes" [D, 4], "scores" [D]} in red, their scores
    beside, and the ground-truth boxes `truth` [K, 4] (if given) in green."""
    from PIL import Image, ImageDraw

    x = np.asarray(_as_numpy(image, "image", sequence=True), np.float32)
    x = x.mean(0) if x.ndim == 3 else x
    lo, hi = float(x.min()), float(x.max())
    grey = ((x - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(x)).astype(np.uint8)
    im = Image.fromarray(grey).convert("RGB")
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    truth = [] if truth is None else _as_numpy(truth, "truth", sequence=True).reshape(-1, 4)
    for box in np.asarray(truth, np.float64).tolist():
        draw.rectangle([v * scale for v in box], outline=GREEN, width=2)
    boxes = _as_numpy(pred["boxes"], "boxes", sequence=True).reshape(-1, 4).tolist()
    for box, score in zip(boxes, _as_numpy(pred["scores"], "scores", sequence=True).tolist()):
        draw.rectangle([v * scale for v in box], outline=RED, width=2)
        draw.text((box[0] * scale + 2, box[1] * scale + 1), f"{score:.2f}", fill=YELLOW)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def save_roc_curves(path, curves: dict, title: str = "ROC") -> Path:
    """curves: {name: (fpr, tpr)} (e.g. from metrics.roc_curve; a name may carry the AUC) ->
    one PNG with a line per name and the chance diagonal (matplotlib, Agg). Curves holding NaN
    (a class without positives or negatives) are left out."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    try:
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
        drawn = 0
        for name, (fpr, tpr) in curves.items():
            fpr = _as_numpy(fpr, "fpr", sequence=True).astype(np.float64)
            tpr = _as_numpy(tpr, "tpr", sequence=True).astype(np.float64)
            if fpr.size and not (np.isnan(fpr).any() or np.isnan(tpr).any()):
                ax.plot(fpr, tpr, label=name, drawstyle="default")
                drawn += 1
        ax.set(
            xlabel="false positive rate (1 - specificity)",
            ylabel="true positive rate (sensitivity)",
            xlim=(0, 1),
            ylim=(0, 1.02),
            title=title,
        )
        if drawn:
            ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def save_confusion_matrix(path, cm, names=None, title: str = "Confusion matrix") -> Path:
    """A [K, K] confusion matrix (rows = true class, columns = predicted) as a PNG heat map
    with the counts and each row's share written in its cells. names: K class names."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(_as_numpy(cm, "cm", sequence=True), dtype=np.int64)
    names = inputs.square_matrix_names(cm, names)
    k = cm.shape[0]
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = 2.5 + 1.1 * k
    fig, ax = plt.subplots(figsize=(side, side * 0.85), dpi=100)
    try:
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]}\n{share[i, j]:.0%}",
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=8,
                )
        short = [n if len(n) <= 18 else n[:16] + "…" for n in names]
        ax.set_xticks(range(k), short, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(k), short, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
