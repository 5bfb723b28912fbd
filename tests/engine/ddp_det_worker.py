"""Run by test_distributed under torchrun: each process trains the same tiny detection config
(argv[1]: a synthetic RSNA folder, argv[2]: the run folder) for one epoch, then resumes it for a
second. Each process records what it saw (shard sizes, losses, a weight checksum, its random
state across the resume, the files it replaced) in rank<r>.json."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import det_tiny  # noqa: E402

from fastdet.data import RSNADataset  # noqa: E402
from fastdet.engine import Trainer, task_for  # noqa: E402

_replaced = []
_os_replace = os.replace


def _recording_replace(src, dst, *args, **kwargs):  # every engine file write ends in os.replace
    _replaced.append(Path(dst).name)
    return _os_replace(src, dst, *args, **kwargs)


def _rng_digest() -> str:
    return hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()


def main(data: str, out: str) -> None:
    os.replace = _recording_replace
    base = dict(batch_size=1, max_size=64, hflip=0.5, warmup_steps=2)
    train, val = (
        RSNADataset(data, split="train", val_fraction=0.34),
        RSNADataset(data, split="val", val_fraction=0.34),
    )
    first = Trainer(task_for(det_tiny(epochs=1, **base)), train, val, Path(out), resume=False)
    try:  # joins the process group (torchrun's environment) and leaves it in `close`
        first.fit()
        rank, world = first.dist.rank, first.dist.world_size
        rng_after_first = _rng_digest()
        second = Trainer(task_for(det_tiny(epochs=2, **base)), train, val, Path(out), resume=True)
        rng_at_resume = _rng_digest()
        hist = second.fit()
        second.close()  # not the group's owner: leaves it joined
        shard = {
            "rank": rank,
            "world": world,
            "train_images": len(train),
            "train_batches": len(second.train_loader),
            "val_images": len(second.val_loader.dataset),
            "epochs": len(hist),
            "global_step": second.global_step,
            "losses": [r["loss"] for r in hist],
            "val_map_50": [r["val_map_50"] for r in hist],
            "rng_restored": rng_after_first == rng_at_resume,
            "weights": float(sum(p.double().sum() for p in second.model.parameters())),
            "replaced": sorted(set(_replaced)),
        }
    finally:
        first.close()
        os.replace = _os_replace
    Path(out, f"rank{rank}.json").write_text(json.dumps(shard))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
