"""Checkpoints: atomic writes and the random-number-generator states a run needs to resume
exactly.

A checkpoint is written to a temporary file in the destination folder and renamed over the
old one with os.replace, so a crash or Ctrl-C mid-write leaves the previous checkpoint whole
(the rename is atomic on POSIX and Windows within one file system)."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import distributed


def atomic_write(path, write) -> Path:
    """Calls write(tmp_path) for a temporary file next to `path`, then renames it to `path`.
    The temporary file is removed if `write` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def remove_stale_temporaries(folder) -> list[Path]:
    """Deletes the temporary files atomic_write leaves behind when its process is killed
    mid-write (".<name>.<random>.tmp"); returns them. The finished files are never touched."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_save(obj, path) -> Path:
    """torch.save(obj) to `path` atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_copy(src, path) -> Path:
    """`path` becomes a file with src's bytes, atomically: a hard link where the file system
    allows one (no second copy on disk; safe because every checkpoint write replaces its file
    with a new one rather than rewriting it in place), else a copy."""
    src = Path(src)

    def link(tmp):
        os.remove(tmp)  # os.link wants a free name: the one mkstemp reserved
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (FAT, some network file systems)
            shutil.copyfile(src, tmp)

    return atomic_write(path, link)


def atomic_write_text(path, text: str) -> Path:
    """Writes a text file atomically, UTF-8 whatever the locale."""

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def rng_state() -> dict:
    """The states of torch (CPU and every CUDA device), numpy's global and Python's random, as
    tensors and plain Python values (so checkpoints load with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restores what rng_state() returned (the CUDA states only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def gather_rng_states(info) -> list | None:
    """Every process's rng_state() in rank order under DDP (a collective: every process calls
    it), None in a single process. Processes draw differently (their own shards, anchors,
    RoIs), so an exact DDP resume needs each one's state, not only rank 0's."""
    return distributed.all_gather_object(rng_state()) if info.enabled else None


def resume_rng_state(ckpt: dict, info) -> dict:
    """The RNG states a process resumes with: its own from ckpt["rng_ranks"] when the checkpoint
    was written by as many processes as now run, else rank 0's (ckpt["rng"])."""
    ranks = ckpt.get("rng_ranks")
    if ranks is not None and len(ranks) == info.world_size:
        return ranks[info.rank]
    return ckpt["rng"]


class CheckpointError(ValueError):
    """A checkpoint file that exists but cannot be read (truncated, not a torch.save file, or
    holding more than tensors and plain values). The message starts with the path."""


def load_checkpoint(path, map_location="cpu") -> dict:
    """Reads a checkpoint written by the engine (tensors and plain Python values only, so with
    weights_only=True: loading a checkpoint cannot run code). Raises FileNotFoundError, or
    CheckpointError naming the file when its content is not a readable checkpoint."""
    path = Path(path)
    if not path.is_file():  # str(): "[Errno 2] checkpoint not found: 'PATH'"; the CLI: "PATH: ..."
        raise FileNotFoundError(2, "checkpoint not found", str(path))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file fails in any of torch.load's layers
        raise CheckpointError(f"{path}: not a readable checkpoint: {_unreadable(path)}") from e


def _unreadable(path: Path) -> str:
    """Why torch.load (safe mode) could not read the file, and what was expected; never the
    advice to turn the safe loader off (loading would then run the file's code)."""
    expected = (
        "expected a training run's best.pt or last.pt (fastdet train), or a state_dict saved "
        "with torch.save"
    )
    if zipfile.is_zipfile(path):
        return f"it holds Python objects other than tensors and plain values; {expected}"
    return f"not a file torch.save wrote, or a truncated one; {expected}"


def model_state(checkpoint) -> dict:
    """The model state_dict inside an engine checkpoint, or the checkpoint itself when it is a
    bare state_dict (e.g. a U-Net saved with torch.save(model.state_dict()))."""
    if (
        isinstance(checkpoint, dict)
        and "model" in checkpoint
        and isinstance(checkpoint["model"], dict)
    ):
        return checkpoint["model"]
    return checkpoint


def run_checkpoint(out, resume: bool) -> dict | None:
    """The checkpoint a run starts from: out/last.pt when resuming (an error if missing), None
    for a fresh run (an error if out already holds one, so runs are never overwritten)."""
    last = Path(out) / "last.pt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"{last}: nothing to resume (no last.pt in {out})")
        return load_checkpoint(last)
    if last.exists():
        raise FileExistsError(
            f"{out} already holds a run (last.pt); resume it with "
            "resume=True (--resume) or choose a new folder"
        )
    return None


def check_resumable(config, saved: dict, allowed) -> None:
    """A resumed run must compute what the interrupted one would have: only the settings in
    `allowed` may differ from the saved config (ValueError naming the changed ones)."""
    now = config.to_dict()
    diff = sorted(k for k in now if k not in allowed and now[k] != saved.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
        raise ValueError(
            f"cannot resume with changed settings ({detail}); only {sorted(allowed)} may change"
        )


def training_state(trainer, fmt: str, rng_ranks: list | None = None) -> dict:
    """What every trainer saves: model, optimizer, scheduler, scaler, counters, best score,
    history, config and RNG states (tensors and plain values only); rng_ranks: every
    process's states, from gather_rng_states (under DDP)."""
    t = trainer
    state = {
        "format": fmt,
        "model": t.model.state_dict(),
        "optimizer": t.opt.state_dict(),
        "scheduler": t.sched.state_dict(),
        "scaler": t.scaler.state_dict(),
        "epoch": t.epoch,
        "global_step": t.global_step,
        "best": t.best,
        "best_epoch": t.best_epoch,
        "history": t.history,
        "config": t.config.to_dict(),
        "rng": rng_state(),
        "torch_version": str(torch.__version__),
    }
    if rng_ranks is not None:
        state["rng_ranks"] = rng_ranks
    return state


def restore_training_state(trainer, ckpt: dict) -> None:
    """The inverse of training_state (the RNG states last: this process's own when the
    checkpoint holds every process's, see resume_rng_state)."""
    t = trainer
    t.model.load_state_dict(ckpt["model"])
    t.opt.load_state_dict(ckpt["optimizer"])
    t.sched.load_state_dict(ckpt["scheduler"])
    t.scaler.load_state_dict(ckpt["scaler"])
    t.epoch, t.global_step = ckpt["epoch"], ckpt["global_step"]
    t.best, t.best_epoch = ckpt["best"], ckpt["best_epoch"]
    t.history = list(ckpt["history"])
    set_rng_state(resume_rng_state(ckpt, t.dist))
