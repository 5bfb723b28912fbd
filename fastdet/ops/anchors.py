"""AnchorGenerator: torchvision's anchors, in torchvision's order, from a C++/CUDA kernel.

For each feature map (one per level), anchors are laid position-major (row, column) and, at each
position, in cell-anchor order: for each aspect ratio, for each size. Strides are
image_size // feature_size per axis; base anchors are round([-w, -h, w, h] / 2) with
h = size * sqrt(ratio), w = size / sqrt(ratio), as in torchvision.

Differences from torchvision: float16 and bfloat16 anchors are computed in float32 and rounded
once (torchvision computes them in the half type, off by several pixels at larger offsets).
Anchors are cached per (feature sizes, strides, dtype, device), and every image of a batch
receives the same cached tensor, so repeated calls cost no recomputation. Treat them as
read-only; an in-place change is detected and the anchors recomputed.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
from torch import Tensor, nn

from . import _arrays as arrays


def cell_anchors(sizes, aspect_ratios, dtype=torch.float32, device="cpu") -> Tensor:
    """Base anchors [len(ratios) * len(sizes), 4] centred on 0 (torchvision's generate_anchors)."""
    for name, values in (("sizes", sizes), ("aspect_ratios", aspect_ratios)):
        if not isinstance(values, (list, tuple)) or not values:
            raise TypeError(f"{name} must be a non-empty tuple of numbers, got {values!r}")
        for x in values:
            if not arrays.check_real(x, name, finite=True) > 0:
                raise ValueError(f"{name} must be positive, got {values}")
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round().to(dtype=dtype, device=device)


def _grid(base, grid_sizes, strides):
    total = sum(int(h) * int(w) * b.shape[0] for b, (h, w) in zip(base, grid_sizes))
    arrays.check_output_size("AnchorGenerator", (total, 4), base[0])
    out = torch.empty((total, 4), dtype=base[0].dtype, device=base[0].device)
    start = 0
    for b, (gh, gw), (sh, sw) in zip(base, grid_sizes, strides):
        n = int(gh) * int(gw) * b.shape[0]
        if n:
            part = out[start : start + n]
            arrays.launch(
                b,
                "grid_anchors",
                arrays.dtype_code(b),
                arrays.ptr(b),
                b.shape[0],
                int(gh),
                int(gw),
                float(sh),
                float(sw),
                arrays.ptr(part),
            )
        start += n
    return out


@torch.library.custom_op("fastdet::grid_anchors", mutates_args=())
def _grid_op(base: list[Tensor], grid_sizes: list[int], strides: list[int]) -> Tensor:
    pairs = lambda v: list(zip(v[0::2], v[1::2]))  # noqa: E731
    return _grid([b.contiguous() for b in base], pairs(grid_sizes), pairs(strides))


@_grid_op.register_fake
def _(base, grid_sizes, strides):
    total = sum(h * w * b.shape[0] for b, h, w in zip(base, grid_sizes[0::2], grid_sizes[1::2]))
    return base[0].new_empty((total, 4))


class AnchorGenerator(nn.Module):
    """torchvision.models.detection.anchor_utils.AnchorGenerator with the same arguments:
    sizes and aspect_ratios are tuples with one entry per feature map."""

    def __init__(
        self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),), cache_size: int = 8
    ):
        super().__init__()
        for name, v in (("sizes", sizes), ("aspect_ratios", aspect_ratios)):
            if not isinstance(v, (list, tuple)) or not v:
                raise TypeError(f"{name} must be a non-empty tuple, got {v!r}")
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"sizes has {len(sizes)} levels but aspect_ratios has {len(aspect_ratios)}"
            )
        for s, r in zip(sizes, aspect_ratios):
            for name, level in (("sizes", s), ("aspect_ratios", r)):
                if not isinstance(level, (list, tuple)) or not level:
                    raise TypeError(f"{name} must hold non-empty tuples, got {level!r}")
                for x in level:
                    if not arrays.check_real(x, name, finite=True) > 0:
                        raise ValueError(
                            f"sizes and aspect_ratios must be positive, got {s} and {r}"
                        )
        self._cache_size = arrays.check_int(cache_size, "cache_size", minimum=0)
        self.sizes, self.aspect_ratios = sizes, aspect_ratios
        self.cell_anchors = [cell_anchors(s, r) for s, r in zip(sizes, aspect_ratios)]
        self._cache: OrderedDict = OrderedDict()

    @classmethod
    def faster_rcnn(cls) -> AnchorGenerator:
        """The original Faster R-CNN preset (Ren et al.): one stride-16 map, sizes 128, 256, 512,
        ratios 1:2, 1:1, 2:1, 9 anchors per position."""
        return cls(((128, 256, 512),), ((0.5, 1.0, 2.0),))

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes, strides, dtype=torch.float32, device="cpu") -> Tensor:
        """Anchors of all levels, concatenated: [sum(h * w * A), 4]."""
        if len(grid_sizes) != len(self.cell_anchors):
            raise ValueError(
                f"got {len(grid_sizes)} feature maps but the generator has "
                f"{len(self.cell_anchors)} levels of sizes and aspect ratios"
            )
        for name, pairs in (("grid_sizes", grid_sizes), ("strides", strides)):
            for p in pairs:
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    raise ValueError(f"{name} must hold (height, width) pairs, got {p!r}")
                for v in p:
                    arrays.check_int(v, name, minimum=0)
        work = (
            torch.float64 if dtype == torch.float64 else torch.float32
        )  # half: computed in float32
        base = [b.to(dtype=work, device=device) for b in self.cell_anchors]
        flat = lambda v: [int(x) for p in v for x in p]  # noqa: E731
        return _grid_op(base, flat(grid_sizes), flat(strides)).to(dtype)

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        """image_list: anything with .tensors [B, C, H, W] (torchvision's ImageList, or fastdet's).
        Returns B tensors [sum(h * w * A), 4], one per image (the same cached tensor)."""
        tensors = getattr(image_list, "tensors", None)
        if not isinstance(tensors, Tensor) or tensors.ndim < 2:
            raise TypeError(
                "image_list must have .tensors, a [B, C, H, W] tensor (an ImageList), "
                f"got {type(image_list).__name__}"
            )
        image_size = tensors.shape[-2:]
        if not isinstance(feature_maps, (list, tuple)) or not feature_maps:
            raise TypeError(
                f"feature_maps must be a non-empty list of tensors, got {feature_maps!r}"
            )
        for i, fm in enumerate(feature_maps):
            if not isinstance(fm, Tensor) or fm.ndim < 2 or 0 in fm.shape[-2:]:
                what = tuple(fm.shape) if isinstance(fm, Tensor) else type(fm).__name__
                raise ValueError(
                    f"feature_maps[{i}] must be a tensor [..., H, W] with H, W >= 1 "
                    f"(the stride is image size // feature size), got {what}"
                )
        grid_sizes = [tuple(int(s) for s in fm.shape[-2:]) for fm in feature_maps]
        strides = [(int(image_size[0]) // g[0], int(image_size[1]) // g[1]) for g in grid_sizes]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        anchors = self._cached(tuple(grid_sizes), tuple(strides), dtype, device)
        return [anchors] * len(image_list.tensors)

    def _cached(self, grid_sizes, strides, dtype, device) -> Tensor:
        key = (grid_sizes, strides, dtype, str(device))
        hit = self._cache.get(key)
        if hit is not None and hit[0]._version == hit[1]:  # unchanged since we made it
            with contextlib.suppress(KeyError):  # another thread may have evicted it since get
                self._cache.move_to_end(key)
            return hit[0]
        anchors = self.grid_anchors(grid_sizes, strides, dtype, device)
        if torch.compiler.is_compiling():
            return anchors
        self._cache[key] = (anchors, anchors._version)
        while len(self._cache) > self._cache_size:
            with contextlib.suppress(KeyError):  # emptied by another thread meanwhile
                self._cache.popitem(last=False)
        return anchors
