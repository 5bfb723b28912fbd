"""MultiScaleRoIAlign: RoIAlign over an FPN's levels, as torchvision.ops.MultiScaleRoIAlign.

Differences from torchvision.ops: the level scales come from each call's largest image size
(torchvision computes them on the first call and keeps them, so a later batch of larger images
pools from the wrong scale); inverted boxes go to the lowest level (torchvision: NaN level).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import _arrays as arrays
from .box_iou import box_area
from .nms import _guard_or_false
from .roi_align import _pair, _sampling_ratio, roi_align


def _infer_scale(feature: Tensor, image_size: tuple[int, int]) -> float:
    """The level's scale, a power of 2 nearest to feature height / image height (torchvision's
    rule). Plain float math on the sizes, no tensor: nothing for torch.compile to break on. It
    equals torchvision's float32 rounding for every feature height < 1,500 and image height
    < 3,000 (checked: log2 of a ratio of integers is never a half-integer)."""
    approx = float(feature.shape[-2]) / float(image_size[0])
    return 2.0 ** round(math.log2(approx))


def box_levels(
    boxes: list[Tensor], k_min: int, k_max: int, canonical_scale: int, canonical_level: int
) -> Tensor:
    """int64 [sum Ni]: each box's level index in 0..k_max - k_min, FPN's rule
    k = floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6), clamped."""
    s = torch.sqrt(torch.cat([box_area(b) for b in boxes]))
    k = torch.floor(
        canonical_level + torch.log2(s / canonical_scale) + torch.tensor(1e-6, dtype=s.dtype)
    )
    return k.clamp(min=k_min, max=k_max).to(torch.int64) - k_min


@torch.fx.wrap  # one leaf of torch.fx traces: the level assignment reads real values
def _multiscale_roi_align(
    features: dict,
    boxes: list[Tensor],
    image_sizes,
    featmap_names: list[str],
    output_size: tuple[int, int],
    sampling_ratio: int,
    canonical_scale: int,
    canonical_level: int,
) -> Tensor:
    for i, b in enumerate(boxes):
        arrays.kind(b, f"boxes[{i}]")
        arrays.check_shape(b, f"boxes[{i}]", 4, 2, "[Ni, 4]", arrays.RoIBoxesError)
    feats = [v for k, v in features.items() if k in featmap_names]
    if not feats:
        raise ValueError(f"features hold none of featmap_names {featmap_names}")
    if not image_sizes:
        raise ValueError("image_sizes must name at least one image size")
    max_size = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
    scales = [_infer_scale(f, max_size) for f in feats]
    # each image's boxes with its index in front: one op per image
    parts = [torch.constant_pad_nd(b, (1, 0), float(i)) for i, b in enumerate(boxes)]
    rois = parts[0] if len(parts) == 1 else torch.cat(parts)
    if len(feats) == 1:
        return roi_align(feats[0], rois, output_size, scales[0], sampling_ratio)
    k_min = int(-math.log2(scales[0]))
    k_max = int(-math.log2(scales[-1]))
    lv = box_levels(boxes, k_min, k_max, canonical_scale, canonical_level)
    out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1]) + tuple(output_size))
    for f, scale, idx in zip(feats, scales, _level_indices(lv, len(feats))):
        if not _guard_or_false(idx.numel() == 0):  # tracing: an unknown count takes the call
            # Levels may differ in dtype under autocast; the result keeps the first level's.
            out[idx] = roi_align(f, rois[idx], output_size, scale, sampling_ratio).to(out.dtype)
    return out


def _level_indices(lv: Tensor, levels: int) -> list[Tensor]:
    """Each level's box indices, increasing. Eager: one host sync for all levels (the counts of
    a stable sort by level), where a nonzero per level costs one each; traced (torch.compile),
    a nonzero per level, whose sizes the graph keeps unbacked."""
    if torch.compiler.is_compiling() or arrays.is_fake(lv):
        return [torch.where(lv == level)[0] for level in range(levels)]
    order = torch.sort(lv, stable=True).indices
    return list(order.split(torch.bincount(lv, minlength=levels).tolist()))


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over the feature maps named featmap_names (torchvision's MultiScaleRoIAlign):
    each box goes to level k = floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6),
    clamped to the available levels (FPN's rule); with a single level, every box goes to it.
    Scales come from the largest image size of the batch (before padding)."""

    def __init__(
        self,
        featmap_names: list[str],
        output_size=7,
        sampling_ratio: int = 2,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        self.featmap_names = list(featmap_names)
        # Checked here, not at the first RoI: a bad value raises even for a batch of no boxes.
        self.output_size = _pair(output_size)
        _sampling_ratio(sampling_ratio)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level

    def levels(self, boxes: list[Tensor], k_min: int, k_max: int) -> Tensor:
        """int64 [sum Ni]: each box's level index in 0..k_max - k_min."""
        return box_levels(boxes, k_min, k_max, self.canonical_scale, self.canonical_level)

    def forward(self, features: dict, boxes: list[Tensor], image_sizes) -> Tensor:
        """features: dict of [B, C, Hl, Wl]; boxes: per image [Ni, 4] in image pixels ->
        [sum Ni, C, PH, PW] in the order of the concatenated boxes."""
        return _multiscale_roi_align(
            features,
            boxes,
            image_sizes,
            self.featmap_names,
            self.output_size,
            self.sampling_ratio,
            self.canonical_scale,
            self.canonical_level,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})"
        )
