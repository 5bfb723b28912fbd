"""DDP through torchrun: 2 CPU processes on gloo train a tiny U-Net, and a tiny Faster R-CNN;
rank 0 writes the run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdet.engine.checkpoint import load_checkpoint
from fastdet.engine.logging import read_metrics_csv

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]


def torchrun(worker: Path, *args, timeout: int = 120) -> None:
    """worker on 2 gloo processes through torch.distributed.run; fails with its output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}"
               f"{os.environ.get('PYTHONPATH', '')}")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(worker), *map(str, args)]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun timed out; output:\n{e.stdout}\n{e.stderr}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_torchrun_two_cpu_processes(tmp_path):
    torchrun(WORKER, tmp_path)
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


DET_WORKER = Path(__file__).with_name("ddp_det_worker.py")


def test_torchrun_detection_two_cpu_processes(tmp_path):
    """Faster R-CNN (ResNet-18 FPN, 64 px) on 2 gloo processes: 4 training images (2 without
    boxes) in batches of 1 per process, flips and warmup on, one epoch, then a resume to two."""
    from fastdet.data.synthetic import synth_rsna
    from fastdet.engine.det import load_detector

    data = synth_rsna(tmp_path / "rsna", n=6, seed=0, size=64)
    out = tmp_path / "run"
    torchrun(DET_WORKER, data, out, timeout=240)
    shards = [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [s["world"] for s in shards] == [2, 2] and [s["train_images"] for s in shards] == [4, 4]
    assert [s["train_batches"] for s in shards] == [2, 2]  # 4 images / 2 processes / batch 1
    assert sorted(s["val_images"] for s in shards) == [1, 1]  # 2 images, none counted twice
    assert [s["epochs"] for s in shards] == [2, 2] and [s["global_step"] for s in shards] == [4, 4]
    assert shards[0]["weights"] == shards[1]["weights"]  # DDP kept the replicas equal
    assert shards[0]["losses"] == shards[1]["losses"]  # means over both processes' batches
    assert shards[0]["val_map_50"] == shards[1]["val_map_50"]  # gathered, scored alike
    assert all(s["rng_restored"] for s in shards)  # each process resumed its own RNG stream
    assert shards[1]["replaced"] == []  # only rank 0 writes
    assert {"config.json", "last.pt", "metrics.csv", "metrics.png"} <= set(shards[0]["replaced"])
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 4 and len(ckpt["rng_ranks"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped
    assert len(read_metrics_csv(out / "metrics.csv")) == 2
    assert (out / "best.pt").is_file()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    model, config = load_detector(out / "last.pt")
    assert config.hflip == 0.5 and config.warmup_steps == 2 and not model.training
    with torch.no_grad():
        assert set(model([torch.rand(3, 64, 64)])[0]) == {"boxes", "scores", "labels"}
