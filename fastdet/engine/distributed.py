"""torchrun / DDP support. torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; when WORLD_SIZE > 1
the engine joins the process group (gloo on CPU, nccl on CUDA), shards the data with a
DistributedSampler and wraps the model in DistributedDataParallel. Only rank 0 writes files."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False  # this module called init_process_group (so it tears down)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistInfo:
    """Joins the process group when torchrun started several processes; else a 1-process info.
    On CUDA each process uses the GPU LOCAL_RANK (the caller's device index is overridden)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
        here = True
    return DistInfo(rank, world, local, here)


def device_for(device: torch.device, info: DistInfo) -> torch.device:
    """One GPU per process under DDP."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def all_reduce_sum(values, device) -> list[float]:
    """Sums a list of floats over the processes (identity without DDP)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def any_true(flag: bool, device) -> bool:
    """True on every process when it is True on any (so all stop together)."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copies rank `src`'s buffers (BatchNorm running statistics) to every process. DDP syncs
    buffers only at the start of a training forward, so after the last step each process holds
    its own statistics; call this before evaluating, on every process."""
    if dist.is_available() and dist.is_initialized():
        for b in module.buffers():
            dist.broadcast(b, src)


def all_gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process ([obj] without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
