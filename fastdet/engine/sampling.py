"""Sampling that a resume can replay: per-sample seeds from (seed, epoch, index), a shuffle that
depends only on (seed, epoch), and the loaders of a run (sharded under DDP). With all randomness
a function of those numbers, a resumed run sees exactly the batches an uninterrupted one would,
whatever the number of workers."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from . import distributed


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (numpy's SeedSequence mixes the numbers;
    index -1 is the epoch's shuffle). Arguments must be >= -1."""
    entropy = [int(seed), int(epoch), int(index) + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


class EpochDataset(Dataset):
    """Base of a task's training tensors over a dataset of sample dicts: call set_epoch(e)
    before each epoch; `generator_for(i)` is the generator of sample i in epoch e, seeded by
    (seed, e, i) whatever the process, worker or order that asks for it."""

    def __init__(self, base, seed: int):
        self.base, self.seed, self.epoch = base, int(seed), 0
        self.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def generator_for(self, index: int) -> torch.Generator:
        return self.generator.manual_seed(item_seed(self.seed, self.epoch, index))


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


def default_workers(world: int = 1) -> int:
    """DataLoader workers per process: the cores this process may use, shared by the `world`
    processes on this machine, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // max(world, 1)))


def workers_of(config) -> int:
    """config.num_workers, with "auto" resolved for torchrun's processes on this machine."""
    if config.num_workers != "auto":
        return config.num_workers
    return default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def train_loader(data, config, dist_info, pin: bool, collate=None, drop_single=False):
    """Shuffled batches; under DDP each process gets its shard. drop_single: drop the last batch
    when it would hold a single image (batch norm cannot train on one value per channel)."""
    if dist_info.enabled:
        sampler = DistributedSampler(
            data, dist_info.world_size, dist_info.rank, shuffle=True, seed=config.seed
        )
    else:
        sampler = EpochSampler(len(data), config.seed)
    per_rank = len(sampler)
    drop = drop_single and per_rank > config.batch_size and per_rank % config.batch_size == 1
    return DataLoader(
        data,
        config.batch_size,
        sampler=sampler,
        num_workers=workers_of(config),
        drop_last=drop,
        pin_memory=pin,
        collate_fn=collate,
    )


def val_loader(data, batch_size: int, config, dist_info, pin: bool, collate=None):
    """In order; under DDP process r takes images r, r + world, ... (no padding, so no image
    counts twice; gather_shards puts the results back in order)."""
    if dist_info.enabled:
        data = Subset(data, range(dist_info.rank, len(data), dist_info.world_size))
    return DataLoader(
        data,
        batch_size,
        shuffle=False,
        num_workers=workers_of(config),
        pin_memory=pin,
        collate_fn=collate,
    )


def gather_shards(items: list, world: int) -> list:
    """The lists of all processes, process r holding items r, r + world, ..., merged back into
    one list in the original order (a collective: every process calls it)."""
    parts = distributed.all_gather_object(items)
    n = sum(len(p) for p in parts)
    return [parts[i % world][i // world] for i in range(n)]
