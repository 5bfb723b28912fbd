"""Transforms on sample dicts, applied to the image, boxes and masks together.

A sample is the datasets' dict: "image" float32 [C, H, W]; optional "boxes" float32 [K, 4]
(x1, y1, x2, y2 in pixels) with "labels" [K]; optional "mask" [H, W] and "instances" [H, W]
(integer label images). Each transform returns a new dict (the input is not modified); geometric
ones record what they did in sample["meta"] (e.g. "scale") so predictions can be mapped back.
Random transforms draw from a torch.Generator when given one, so pipelines are reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

CAFFE_BGR_MEANS = (102.9801, 115.9465, 122.7717)  # Faster R-CNN (Ren et al.), pixels 0..255
_MASKS = ("mask", "instances")


def _copy(sample: dict) -> dict:
    out = dict(sample)
    out["meta"] = dict(sample.get("meta", {}))
    return out


def _image(sample: dict) -> torch.Tensor:
    img = sample.get("image")
    if not isinstance(img, torch.Tensor) or img.ndim != 3:
        got = tuple(img.shape) if hasattr(img, "shape") else type(img).__name__
        raise ValueError(f"sample['image'] must be a [C, H, W] tensor, got {got}")
    return img


def _random(generator) -> float:
    return float(torch.rand((), generator=generator))


class Compose:
    """Applies the transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Scales so the shorter side is `min_size` unless the longer side would pass `max_size`
    (then the longer side is `max_size`), as Faster R-CNN does (600 / 1000 in the original work).
    The image is resampled bilinearly (antialiased when shrinking), masks by nearest neighbour,
    boxes by the per-axis ratio of the new to the old size."""

    def __init__(self, min_size: int = 600, max_size: int = 1000):
        if min_size <= 0 or max_size < min_size:
            raise ValueError(
                f"need 0 < min_size <= max_size, got min_size={min_size}, max_size={max_size}"
            )
        self.min_size, self.max_size = int(min_size), int(max_size)

    def size_for(self, h: int, w: int) -> tuple[int, int]:
        scale = min(self.min_size / min(h, w), self.max_size / max(h, w))
        return max(1, round(h * scale)), max(1, round(w * scale))

    def __call__(self, sample: dict) -> dict:
        img = _image(sample)
        h, w = img.shape[-2:]
        nh, nw = self.size_for(h, w)
        out = _copy(sample)
        out["image"] = F.interpolate(
            img[None],
            size=(nh, nw),
            mode="bilinear",
            align_corners=False,
            antialias=nh < h or nw < w,
        )[0]
        for k in _MASKS:
            if k in sample:
                m = torch.as_tensor(sample[k])
                out[k] = F.interpolate(m[None, None].float(), size=(nh, nw), mode="nearest-exact")[
                    0, 0
                ].to(m.dtype)
        sy, sx = nh / h, nw / w
        if "boxes" in sample:
            out["boxes"] = torch.as_tensor(sample["boxes"], dtype=torch.float32) * torch.tensor(
                [sx, sy, sx, sy]
            )
        out["meta"]["scale"] = (sy, sx)
        return out


class RandomCrop:
    """A random (height, width) window, at most the image's size. Boxes are clipped to it; boxes
    left with no area are dropped with their labels (their count goes to meta["dropped_boxes"])."""

    def __init__(self, size, generator: torch.Generator | None = None):
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
        self.size, self.generator = size, generator

    def __call__(self, sample: dict) -> dict:
        img = _image(sample)
        h, w = img.shape[-2:]
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        y0 = int(_random(self.generator) * (h - ch + 1))
        x0 = int(_random(self.generator) * (w - cw + 1))
        out = _copy(sample)
        out["image"] = img[:, y0 : y0 + ch, x0 : x0 + cw]
        for k in _MASKS:
            if k in sample:
                out[k] = torch.as_tensor(sample[k])[y0 : y0 + ch, x0 : x0 + cw]
        if "boxes" in sample:
            b = torch.as_tensor(sample["boxes"], dtype=torch.float32) - torch.tensor(
                [x0, y0, x0, y0]
            )
            b[:, 0::2] = b[:, 0::2].clamp(0, cw)
            b[:, 1::2] = b[:, 1::2].clamp(0, ch)
            keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            out["boxes"] = b[keep]
            if "labels" in sample:
                out["labels"] = torch.as_tensor(sample["labels"])[keep]
            out["meta"]["dropped_boxes"] = int((~keep).sum())
        out["meta"]["crop"] = (y0, x0, ch, cw)
        return out


class _Flip:
    axis = -1  # -1: horizontal (x), -2: vertical (y)

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def __call__(self, sample: dict) -> dict:
        if self.p < 1 and _random(self.generator) >= self.p:
            return sample
        img = _image(sample)
        out = _copy(sample)
        out["image"] = img.flip(self.axis)
        for k in _MASKS:
            if k in sample:
                out[k] = torch.as_tensor(sample[k]).flip(self.axis)
        if "boxes" in sample:
            b = torch.as_tensor(sample["boxes"], dtype=torch.float32).clone()
            size = img.shape[self.axis]
            lo, hi = (0, 2) if self.axis == -1 else (1, 3)
            b[:, lo], b[:, hi] = size - b[:, hi], size - b[:, lo]
            out["boxes"] = b
        out["meta"]["flipped"] = out["meta"].get("flipped", ()) + ("x" if self.axis == -1 else "y",)
        return out


class RandomHorizontalFlip(_Flip):
    """Mirrors left-right with probability p (x -> width - x)."""

    axis = -1


class RandomVerticalFlip(_Flip):
    """Mirrors top-bottom with probability p (y -> height - y)."""

    axis = -2


class HistogramEqualization:
    """Per-channel histogram equalization (scikit-image), output in [0, 1]; geometry unchanged.
    `mask_background`: equalize over pixels above the image minimum only (radiographs' collimated
    borders would otherwise take a large share of the grey levels)."""

    def __init__(self, nbins: int = 256, mask_background: bool = False):
        self.nbins, self.mask_background = int(nbins), mask_background

    def __call__(self, sample: dict) -> dict:
        from skimage.exposure import equalize_hist

        img = _image(sample).detach().cpu().numpy().astype(np.float64)
        eq = np.empty_like(img)
        for c, plane in enumerate(img):
            mask = plane > plane.min() if self.mask_background else None
            if mask is not None and not mask.any():
                mask = None
            eq[c] = equalize_hist(plane, nbins=self.nbins, mask=mask)
        out = _copy(sample)
        out["image"] = torch.from_numpy(eq.astype(np.float32))
        return out


class Window:
    """Linear intensity window (center, width) to [0, 1], as radiology viewers show CT/X-ray:
    values below center - width/2 -> 0, above center + width/2 -> 1 (e.g. lung: -600, 1500 HU)."""

    def __init__(self, center: float, width: float):
        if not (width > 0 and math.isfinite(width) and math.isfinite(center)):
            raise ValueError(
                f"window width must be a finite number > 0 and center finite, got "
                f"center={center}, width={width}"
            )
        self.center, self.width = float(center), float(width)

    def __call__(self, sample: dict) -> dict:
        img = _image(sample)
        out = _copy(sample)
        out["image"] = ((img - (self.center - self.width / 2)) / self.width).clamp(0, 1)
        out["meta"]["window"] = (self.center, self.width)
        return out


class CaffeNormalize:
    """The original Faster R-CNN input: 3 channels in BGR order, 0..255, minus the Caffe BGR means
    (102.9801, 115.9465, 122.7717), no division by a std. A 1-channel image is replicated; an RGB
    image is reordered. `input_max`: the value that means 255 in the input (1.0 for [0, 1]
    images)."""

    def __init__(self, input_max: float = 255.0):
        if not input_max > 0:
            raise ValueError(f"input_max must be > 0, got {input_max}")
        self.input_max = float(input_max)

    def __call__(self, sample: dict) -> dict:
        img = _image(sample)
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        elif img.shape[0] == 3:
            img = img.flip(0)  # RGB -> BGR
        else:
            raise ValueError(f"CaffeNormalize needs 1 or 3 channels, got {img.shape[0]}")
        means = torch.tensor(CAFFE_BGR_MEANS, dtype=torch.float32)[:, None, None]
        out = _copy(sample)
        out["image"] = img.float() * (255.0 / self.input_max) - means
        return out
