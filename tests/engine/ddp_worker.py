"""Run by test_distributed under torchrun: each process trains the same tiny config for one
epoch, then resumes it for a second; the run folder is argv[1]. Each process then writes what
it saw (shard sizes, a weight checksum, its BatchNorm buffers at each validation, its random
state across the resume) to rank<r>.json."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import DiscDataset, seg_tiny  # noqa: E402

from fastdet.engine import Trainer, task_for  # noqa: E402


def _rng_digest() -> str:
    return hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()


def _record_buffers(trainer: Trainer, seen: list) -> None:
    """Appends a digest of the model's buffers after each validation (which leaves them as it
    used them: eval mode does not update BatchNorm statistics)."""
    validate = trainer._validate

    def recording():
        result = validate()
        seen.append(
            hashlib.sha1(
                b"".join(b.detach().cpu().numpy().tobytes() for b in trainer.model.buffers())
            ).hexdigest()
        )
        return result

    trainer._validate = recording


def main(out: str) -> None:
    base = dict(batch_size=2, seed=0)
    train, val = DiscDataset(8, 32, seed=0), DiscDataset(3, 32, seed=1)
    bn_at_val = []
    first = Trainer(task_for(seg_tiny(epochs=1, **base)), train, val, Path(out), resume=False)
    try:  # joins the process group (torchrun's environment) and leaves it in `close`
        rank, world = first.dist.rank, first.dist.world_size
        torch.manual_seed(100 + rank)  # the processes' streams differ (as with dropout)
        _record_buffers(first, bn_at_val)
        first.fit()
        rng_after_first = _rng_digest()
        second = Trainer(task_for(seg_tiny(epochs=2, **base)), train, val, Path(out), resume=True)
        rng_at_resume = _rng_digest()
        _record_buffers(second, bn_at_val)
        hist = second.fit()
        second.close()  # not the group's owner: leaves it joined
        shard = {
            "rank": rank,
            "world": world,
            "train_batches": len(second.train_loader),
            "val_images": len(second.val_loader),
            "epochs": len(hist),
            "global_step": second.global_step,
            "rng": rng_after_first,
            "rng_restored": rng_after_first == rng_at_resume,
            "bn_at_val": bn_at_val,
            "weights": float(sum(p.double().sum() for p in second.model.parameters())),
        }
    finally:
        first.close()
    Path(out, f"rank{rank}.json").write_text(json.dumps(shard))


if __name__ == "__main__":
    main(sys.argv[1])
