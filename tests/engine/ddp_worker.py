"""Run by test_distributed under torchrun: each process trains the same tiny config; the run
folder is argv[1]. Each process then writes what it saw (shard sizes, a weight checksum) to
rank<r>.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import DiscDataset  # noqa: E402

from fastdet.engine import TrainConfig  # noqa: E402
from fastdet.engine.seg import SegTrainer  # noqa: E402


def main(out: str) -> None:
    cfg = TrainConfig(model="unet", depth=2, width=4, epochs=2, batch_size=2, size=32,
                      progress=False, device="cpu", seed=0)
    train, val = DiscDataset(8, 32, seed=0), DiscDataset(3, 32, seed=1)
    trainer = SegTrainer(cfg, train, val, Path(out), resume=False)  # train_segmentation's body
    try:
        hist = trainer.fit()
        shard = {"rank": trainer.dist.rank, "world": trainer.dist.world_size,
                 "train_batches": len(trainer.train_loader),
                 "val_images": len(trainer.val_loader), "epochs": len(hist),
                 "weights": float(sum(p.double().sum() for p in trainer.model.parameters()))}
    finally:
        trainer.close()
    Path(out, f"rank{shard['rank']}.json").write_text(json.dumps(shard))


if __name__ == "__main__":
    main(sys.argv[1])
