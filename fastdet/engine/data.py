"""From the datasets' sample dicts to training tensors: augmentation whose randomness depends
only on (seed, epoch, index), channel matching, per-image standardization and samplers whose
order depends only on (seed, epoch). With all randomness a function of those numbers, a resumed
run sees exactly the batches an uninterrupted one would, whatever the number of workers."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomVerticalFlip, Resize

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


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (numpy's SeedSequence mixes the numbers;
    index -1 is the epoch's shuffle). Arguments must be >= -1."""
    entropy = [int(seed), int(epoch), int(index) + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def train_transform(config, generator: torch.Generator) -> Compose:
    """Resize (shorter side to `size`), RandomCrop(size) and flips, all drawing from generator."""
    steps = [Resize(config.size, _NO_LIMIT)] if config.resize else []
    steps.append(RandomCrop(config.size, generator))
    if config.hflip:
        steps.append(RandomHorizontalFlip(0.5, generator))
    if config.vflip:
        steps.append(RandomVerticalFlip(0.5, generator))
    return Compose(steps)


def eval_transform(config) -> Compose:
    return Compose([Resize(config.size, _NO_LIMIT)] if config.resize else [])


class SegTensors(Dataset):
    """(image float32 [C, H, W], mask float32 [1, H, W] 0/1) pairs from a dataset of sample
    dicts. The mask is "mask" > 0 (label volumes with several values become foreground).
    With `augment`, call set_epoch(e) before each epoch: sample i of epoch e is transformed with
    a generator seeded by (seed, e, i)."""

    def __init__(self, base, config, augment: bool):
        self.base, self.channels = base, config.in_channels
        self.seed, self.epoch = int(config.seed), 0
        self.generator = torch.Generator() if augment else None
        self.transform = (
            train_transform(config, self.generator) if augment else eval_transform(config)
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

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
        if self.generator is not None:
            self.generator.manual_seed(item_seed(self.seed, self.epoch, index))
        sample = self.transform(sample)
        image = match_channels(sample["image"], self.channels)
        mask = (sample["mask"] > 0).float()[None]
        return image, mask


class EpochSampler(Sampler):
    """A shuffled order of range(n) that depends only on (seed, epoch): set_epoch before each
    epoch, as with DistributedSampler."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, -1))
        return iter(torch.randperm(self.n, generator=g).tolist())


def train_loader(data: SegTensors, config, dist_info, pin: bool) -> DataLoader:
    """Shuffled batches; under DDP each process gets its shard. The last batch is dropped only
    when it would hold a single image (batch norm cannot train on one value per channel)."""
    if dist_info.enabled:
        sampler = DistributedSampler(
            data, dist_info.world_size, dist_info.rank, shuffle=True, seed=config.seed
        )
    else:
        sampler = EpochSampler(len(data), config.seed)
    per_rank = len(sampler)
    drop = per_rank > config.batch_size and per_rank % config.batch_size == 1
    return DataLoader(
        data,
        config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=drop,
        pin_memory=pin,
    )


def val_loader(data: SegTensors, config, dist_info, pin: bool) -> DataLoader:
    """One image per batch (validation images may differ in size); under DDP process r takes
    images r, r + world, ... (no padding, so no image counts twice)."""
    if dist_info.enabled:
        data = torch.utils.data.Subset(data, range(dist_info.rank, len(data), dist_info.world_size))
    return DataLoader(data, 1, shuffle=False, num_workers=config.num_workers, pin_memory=pin)


SEG_LAYOUTS = ("dsb2018", "folders", "mri")


def open_seg_dataset(
    layout: str,
    root,
    split=None,
    seed: int = 0,
    val_fraction: float = 0.2,
    rgb: bool = False,
    plane: str = "transverse",
):
    """The dataset of one on-disk layout with masks: "dsb2018" (DSB2018Dataset), "folders"
    (ImageFolderDataset: root/images, root/masks) or "mri" (MRISliceDataset). split None/"train"/
    "val" as the datasets define it (by subject for MRI), with split_seed=seed."""
    from ..data import datasets as ds

    if layout == "rsna":
        raise ValueError("the rsna layout has boxes, not masks: train it with `train det`")
    if layout not in SEG_LAYOUTS:
        raise ValueError(f"layout must be one of {SEG_LAYOUTS}, got {layout!r}")
    kw = dict(split=split, split_seed=seed, val_fraction=val_fraction)
    if layout == "dsb2018":
        return ds.DSB2018Dataset(root, rgb=rgb, **kw)
    if layout == "folders":
        return ds.ImageFolderDataset(root, rgb=rgb, **kw)
    return ds.MRISliceDataset(root, plane=plane, **kw)
