"""Segmentation's data: from the datasets' sample dicts to training tensors (augmentation drawn
from (seed, epoch, index), channel matching, per-image standardization), and the datasets of
the layouts that have masks."""

from __future__ import annotations

import torch

from ....data import datasets as ds
from ....data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    Resize,
)
from ...sampling import EpochDataset

_NO_LIMIT = 1 << 20  # Resize's max_size when only the shorter side matters


def standardize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image zero mean, unit std over [C, H, W] of a [B, C, H, W] batch: the datasets give
    file units (0..255 PNG, HU, raw MR values), and this makes them comparable."""
    dims = tuple(range(1, x.ndim))
    mean = x.mean(dims, keepdim=True)
    std = x.std(dims, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


def match_channels(image: torch.Tensor, channels: int | None) -> torch.Tensor:
    """[C, H, W] -> [channels, H, W]: grey repeated, colour averaged (as the datasets'
    rgb=False)."""
    c = image.shape[0]
    if channels is None or c == channels:
        return image
    if c == 1:
        return image.expand(channels, -1, -1).contiguous()
    if channels == 1:
        return image[:3].mean(0, keepdim=True) if c == 4 else image.mean(0, keepdim=True)
    raise ValueError(f"cannot turn a {c}-channel image into {channels} channels")


def train_transform(config, generator: torch.Generator) -> Compose:
    """Resize (shorter side to `size`), RandomCrop(size) and flips, all drawing from generator."""
    steps = [Resize(config.size, _NO_LIMIT)] if config.resize else []
    steps.append(RandomCrop(config.size, generator))
    if config.hflip > 0:
        steps.append(RandomHorizontalFlip(config.hflip, generator))
    if config.vflip > 0:
        steps.append(RandomVerticalFlip(config.vflip, generator))
    return Compose(steps)


def eval_transform(config) -> Compose:
    return Compose([Resize(config.size, _NO_LIMIT)] if config.resize else [])


class SegTensors(EpochDataset):
    """(image float32 [C, H, W], mask float32 [1, H, W] 0/1) pairs from a dataset of sample
    dicts. The mask is "mask" > 0 (label volumes with several values become foreground).
    With `augment`, sample i of epoch e is transformed with the generator of (seed, e, i)."""

    def __init__(self, base, config, augment: bool):
        super().__init__(base, config.seed)
        self.channels, self.augment = config.in_channels, augment
        self.transform = (
            train_transform(config, self.generator) if augment else eval_transform(config)
        )

    def __getitem__(self, index: int):
        s = self.base[index]
        if "mask" not in s:
            raise ValueError(
                f"sample {s.get('id', index)!r} has no 'mask': segmentation needs "
                "a dataset with masks"
            )
        sample = {
            "image": torch.as_tensor(s["image"]).float(),
            "mask": torch.as_tensor(s["mask"]),
            "meta": {},
        }  # boxes/instances dropped: not needed, and cheaper to transform
        if self.augment:
            self.generator_for(index)
        sample = self.transform(sample)
        image = match_channels(sample["image"], self.channels)
        mask = (sample["mask"] > 0).float()[None]
        return image, mask


SEG_LAYOUTS = ("dsb2018", "folders", "mri")


def open_seg_dataset(
    layout: str,
    root,
    split=None,
    seed: int = 0,
    val_fraction: float = 0.2,
    rgb: bool = False,
    plane: str = "transverse",
    test_fraction: float = 0.0,
):
    """The dataset of one on-disk layout with masks: "dsb2018" (DSB2018Dataset), "folders"
    (ImageFolderDataset: root/images, root/masks) or "mri" (MRISliceDataset). split None/"train"/
    "val"/"test" as the datasets define it (by subject for MRI), with split_seed=seed."""
    if layout == "rsna":
        raise ValueError("the rsna layout has boxes, not masks: train it with `train det`")
    if layout not in SEG_LAYOUTS:
        raise ValueError(f"layout must be one of {SEG_LAYOUTS}, got {layout!r}")
    kw = dict(split=split, split_seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    if layout == "dsb2018":
        return ds.DSB2018Dataset(root, rgb=rgb, **kw)
    if layout == "folders":
        return ds.ImageFolderDataset(root, rgb=rgb, **kw)
    return ds.MRISliceDataset(root, plane=plane, **kw)
