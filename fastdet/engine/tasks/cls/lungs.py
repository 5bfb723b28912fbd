"""The classifier's optional lung stage: each image cropped to the bounding box of its lung
fields, as a segmentation checkpoint predicts them, widened by a margin, before classification
(the original study's intent: the classifier looks at the lungs, not the film's edges, labels
and devices). A classifier trained with it stores the checkpoint's path and the margin in its
config, so training, prediction, evaluation and a detection gate all crop the same way."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...loading import load_task_model
from ..seg.predict import predict_mask
from ..seg.task import SegTask


def lung_box(mask, margin: float) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2), half-open pixel bounds, of a bool [H, W] mask's foreground, widened on
    each side by margin x the box's height (rows) and width (columns), rounded outwards and
    clipped to the image. An empty mask gives the whole image (no lungs found: nothing to crop
    to, and the classifier still sees the image)."""
    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {m.shape}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    h, w = m.shape
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if len(rows) == 0:
        return 0, h, 0, w
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    dy, dx = margin * (y2 - y1), margin * (x2 - x1)
    return (
        max(0, math.floor(y1 - dy)),
        min(h, math.ceil(y2 + dy)),
        max(0, math.floor(x1 - dx)),
        min(w, math.ceil(x2 + dx)),
    )


class LungCropper:
    """Crops images ([C, H, W] or [H, W], any units) to lung_box of the lung fields that the
    segmentation checkpoint `path` predicts (logits > 0 at the image's own size, as `predict
    seg`), widened by `margin`."""

    def __init__(self, path, margin: float, device="cpu"):
        self.path, self.margin, self.device = str(path), float(margin), torch.device(device)
        self.model, self.config = load_task_model(SegTask, path, self.device)

    def box(self, image) -> tuple[int, int, int, int]:
        x = torch.as_tensor(image).float()
        x = x[None] if x.ndim == 2 else x
        with torch.no_grad():
            mask = predict_mask(self.model, x, self.config, device=self.device)
        return lung_box(mask, self.margin)

    def crop(self, image, box=None):
        """The image cut to `box` (default: self.box(image)), same type and channels."""
        y1, y2, x1, x2 = self.box(image) if box is None else box
        return image[..., y1:y2, x1:x2]


_CROPPERS: dict = {}


def lung_cropper(config, device="cpu") -> LungCropper | None:
    """The LungCropper of a classification config (config.lungs, config.lung_margin), loaded
    once per checkpoint, margin and device; None when the config has no lung stage."""
    if getattr(config, "lungs", None) is None:
        return None
    path = Path(config.lungs)
    if not path.is_file():
        raise FileNotFoundError(
            f"the classifier's lung stage: segmentation checkpoint {path} does not exist"
        )
    # the file's mtime too: a checkpoint rewritten at the same path is loaded afresh
    key = (str(path), path.stat().st_mtime_ns, float(config.lung_margin), str(torch.device(device)))
    if key not in _CROPPERS:
        _CROPPERS[key] = LungCropper(config.lungs, config.lung_margin, device)
    return _CROPPERS[key]
