"""DDP through torchrun: 2 CPU processes on gloo train a tiny U-Net; rank 0 writes the run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdet.engine.checkpoint import load_checkpoint
from fastdet.engine.logging import read_metrics_csv

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_cpu_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}"
               f"{os.environ.get('PYTHONPATH', '')}")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(WORKER), str(tmp_path)]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun timed out; output:\n{e.stdout}\n{e.stderr}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    shards = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [s["world"] for s in shards] == [2, 2]
    assert [s["train_batches"] for s in shards] == [2, 2]  # 8 images / 2 ranks / batch 2
    assert sorted(s["val_images"] for s in shards) == [1, 2]  # 3 images, none counted twice
    assert [s["epochs"] for s in shards] == [2, 2]
    assert shards[0]["weights"] == shards[1]["weights"]  # DDP kept the replicas equal
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 4  # steps per process
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped
    assert len(read_metrics_csv(tmp_path / "metrics.csv")) == 2
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "config.json").is_file()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
