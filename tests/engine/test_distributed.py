"""DDP through torchrun: 2 CPU processes on gloo train a tiny U-Net, and a tiny Faster R-CNN,
each resumed once; rank 0 writes the run. Also, without torchrun: the NaN/inf report of a
process whose own loss was finite, and the command line's report on rank 0 only."""

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
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(worker),
        *map(str, args),
    ]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun timed out; output:\n{e.stdout}\n{e.stderr}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_torchrun_two_cpu_processes(tmp_path):
    """A tiny U-Net on 2 gloo processes: one epoch, then a resume to two."""
    torchrun(WORKER, tmp_path)
    shards = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [s["world"] for s in shards] == [2, 2]
    assert [s["train_batches"] for s in shards] == [2, 2]  # 8 images / 2 ranks / batch 2
    assert sorted(s["val_images"] for s in shards) == [1, 2]  # 3 images, none counted twice
    assert [s["epochs"] for s in shards] == [2, 2] and [s["global_step"] for s in shards] == [4, 4]
    assert shards[0]["weights"] == shards[1]["weights"]  # DDP kept the replicas equal
    # both validated with rank 0's BatchNorm statistics (they differ after each process's
    # last training step)
    assert len(shards[0]["bn_at_val"]) == 2 and shards[0]["bn_at_val"] == shards[1]["bn_at_val"]
    assert shards[0]["rng"] != shards[1]["rng"]  # the worker gave each process its own stream
    assert all(s["rng_restored"] for s in shards)  # each process resumed its own RNG stream
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 4  # steps per process
    assert len(ckpt["rng_ranks"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped
    assert len(read_metrics_csv(tmp_path / "metrics.csv")) == 2
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "config.json").is_file()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


DET_WORKER = Path(__file__).with_name("ddp_det_worker.py")


def test_torchrun_detection_two_cpu_processes(tmp_path):
    """Faster R-CNN (ResNet-18 FPN, 64 px) on 2 gloo processes: 4 training images (2 without
    boxes) in batches of 1 per process, flips and warmup on, one epoch, then a resume to two."""
    from fastdet.data.synthetic import synth_rsna
    from fastdet.engine import load_detector

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


def test_non_finite_loss_on_another_process(monkeypatch):
    """Under DDP every process stops at a NaN/inf loss; one whose own loss is finite says the
    NaN/inf came from another process (both trainers' checks, without torchrun)."""
    from types import SimpleNamespace

    from fastdet.engine import NonFiniteLossError, Trainer, distributed

    monkeypatch.setattr(distributed, "any_true", lambda flag, device: True)  # some process saw NaN
    stub = SimpleNamespace(
        dist=distributed.DistInfo(rank=1, world_size=2), device=torch.device("cpu")
    )
    for check in (Trainer.check_loss,):
        with pytest.raises(
            NonFiniteLossError,
            match=r"^loss is NaN or inf on another process "
            r"\(on this one it is 0\.53\) at epoch 1, step 2 ",
        ) as e:
            check(stub, torch.tensor(0.53, dtype=torch.float64), (1, 2, 3))
        assert e.value.elsewhere and e.value.value == 0.53
        with pytest.raises(NonFiniteLossError, match=r"^loss is nan at epoch 1") as e:
            check(stub, torch.tensor(float("nan")), (1, 2, 3))
        assert not e.value.elsewhere


def test_cli_train_reports_on_rank_0_only(tmp_path, monkeypatch, capsys):
    """`fastdet train` under torchrun: processes with RANK > 0 print no report (simulated in
    one process: RANK set, WORLD_SIZE not)."""
    from fastdet.cli import main
    from fastdet.data.synthetic import synth

    data = synth("dsb2018", tmp_path / "data", n=4)
    tiny = [
        "--data",
        str(data),
        "--layout",
        "dsb2018",
        "--model",
        "unet",
        "--epochs",
        "1",
        "--depth",
        "2",
        "--width",
        "4",
        "--size",
        "32",
        "--device",
        "cpu",
        "--no-progress",
    ]
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for rank, printed in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        assert main(["train", "seg", "--out", str(tmp_path / f"run{rank}"), *tiny]) == 0
        out, err = capsys.readouterr()
        assert ("epoch 1:" in out and "wrote" in out and "training unet" in err) == printed
        assert (out + err == "") == (not printed)
