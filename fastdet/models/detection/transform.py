"""Input transform of the detectors (torchvision's GeneralizedRCNNTransform rules).

Each image [C, H, W] (float) is normalized ((x - mean) / std, per channel, after reversing the
channels when bgr is set (Caffe models: RGB in, BGR to the network); skipped when image_mean is
None, for data already normalized by the data pipeline), resized by
s = min(min_size / min(H, W), max_size / max(H, W)) with bilinear interpolation
(align_corners=False, recompute_scale_factor=True, so the output size is floor(H * s),
floor(W * s) exactly as torchvision), then the batch is zero-padded at the bottom/right to a
common size that is a multiple of size_divisible. Boxes (x1, y1, x2, y2, pixels) are scaled with
the per-axis ratio new / old in float32, and detections are scaled back by postprocess.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ImageList:
    """A padded batch tensors [B, C, Hp, Wp] and each image's size (h, w) before padding."""

    def __init__(self, tensors: Tensor, image_sizes: list[tuple[int, int]]):
        self.tensors = tensors
        self.image_sizes = image_sizes

    def to(self, device) -> ImageList:
        return ImageList(self.tensors.to(device), self.image_sizes)


def resize_boxes(boxes: Tensor, old: tuple[int, int], new: tuple[int, int]) -> Tensor:
    """boxes [N, 4] from an image of size old (h, w) to one of size new (h, w)."""
    ratio_h, ratio_w = (
        torch.tensor(n, dtype=torch.float32, device=boxes.device)
        / torch.tensor(o, dtype=torch.float32, device=boxes.device)
        for n, o in zip(new, old)
    )
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 [N, h, w]: masks [N, H, W] resized to size (h, w) by nearest neighbour."""
    if masks.ndim != 3:
        raise ValueError(f"target masks must have shape [N, H, W], got {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.uint8)
    return F.interpolate(masks[:, None].float(), size=size)[:, 0].byte()


class DetectionTransform(nn.Module):
    """min_size: an int, or a tuple from which training draws one per image (evaluation uses the
    last); image_mean / image_std: per-channel lists, or None for no normalization; bgr: reverse
    the channels before normalizing (Caffe's channel order)."""

    def __init__(
        self,
        min_size=800,
        max_size: int = 1333,
        image_mean=None,
        image_std=None,
        size_divisible: int = 32,
        bgr: bool = False,
    ):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (int(min_size),)
        self.max_size = max_size
        if (image_mean is None) != (image_std is None):
            raise ValueError("give both image_mean and image_std, or neither (no normalization)")
        self.image_mean, self.image_std = image_mean, image_std
        self.bgr = bool(bgr)
        self.size_divisible = size_divisible

    def forward(self, images: list[Tensor], targets=None):
        """images: list of [C, H, W] float tensors; targets: None or a list of dicts with "boxes"
        [N, 4] and optionally "masks" [N, H, W]. Returns (ImageList, targets with resized boxes and
        masks; other keys kept, dicts copied)."""
        out, new_targets = [], None if targets is None else []
        for i, img in enumerate(images):
            if img.dim() != 3:
                raise ValueError(f"images[{i}] must have shape [C, H, W], got {tuple(img.shape)}")
            if not img.is_floating_point():
                raise TypeError(f"images[{i}] must be a float tensor, got {img.dtype}")
            resized = self.resize(self.normalize(img))
            out.append(resized)
            if targets is not None:
                t = dict(targets[i])
                t["boxes"] = resize_boxes(
                    t["boxes"], tuple(img.shape[-2:]), tuple(resized.shape[-2:])
                )
                if "masks" in t:  # instance masks [N, H, W]: nearest, as torchvision
                    t["masks"] = resize_masks(t["masks"], tuple(resized.shape[-2:]))
                new_targets.append(t)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in out]
        return ImageList(self.batch(out), sizes), new_targets

    def normalize(self, image: Tensor) -> Tensor:
        if self.image_mean is None:
            return image
        if self.bgr:
            image = image.flip(0)
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def resize(self, image: Tensor) -> Tensor:
        if self.training:
            # one uniform draw from torch's generator per training image, even for a single
            # size, as torchvision: the samplers after it then draw what torchvision's draw.
            # One size needs no value read back (no host sync, nothing for torch.compile to
            # break on); several pick a shape from the draw, which compile cannot trace.
            u = torch.empty(1).uniform_(0.0, float(len(self.min_size)))
            size = self.min_size[int(u)] if len(self.min_size) > 1 else self.min_size[0]
        else:
            size = self.min_size[-1]
        h, w = image.shape[-2:]
        scale = min(size / min(h, w), self.max_size / max(h, w))
        return F.interpolate(
            image[None],
            scale_factor=scale,
            mode="bilinear",
            recompute_scale_factor=True,
            align_corners=False,
        )[0]

    def batch(self, images: list[Tensor]) -> Tensor:
        """Zero-pads to the largest size rounded up to a multiple of size_divisible."""
        c = max(im.shape[0] for im in images)
        d = float(self.size_divisible)
        h = int(math.ceil(max(im.shape[1] for im in images) / d) * d)
        w = int(math.ceil(max(im.shape[2] for im in images) / d) * d)
        out = images[0].new_zeros((len(images), c, h, w))
        for i, im in enumerate(images):
            out[i, : im.shape[0], : im.shape[1], : im.shape[2]].copy_(im)
        return out

    def postprocess(self, detections: list[dict], image_sizes, original_sizes) -> list[dict]:
        """Scales each detection's boxes from the resized image back to the original one."""
        for det, size, orig in zip(detections, image_sizes, original_sizes):
            det["boxes"] = resize_boxes(det["boxes"], size, orig)
        return detections
