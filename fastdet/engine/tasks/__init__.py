"""The registry of training tasks: one package per task, listed in PACKAGES.

A task package holds its config (a RunConfig subclass with a `task` name) and its Task
(engine.trainer.Task), its dataset layouts, evaluation, prediction and commands; its face
exports `Task` and `add_commands(train, predict, evaluate, tune)` (the `fastdet
train|predict|evaluate|tune <task>` parsers; a task without a tuning step adds no tune
parser) and, where it predicts over archives (engine.archive), `merge(out, settings)`. Adding a
task is its package plus its line in PACKAGES: the trainer, the checkpoints
and the command line follow from them."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..archive import finish
from ..checkpoint import load_checkpoint
from ..loading import checkpoint_format, model_from, writes, wrong_task
from ..trainer import fit
from . import cls, det, seg

PACKAGES = [
    seg,
    det,
    cls,
]


def tasks() -> dict:
    """{name: Task class} of the registered packages."""
    return {p.Task.name: p.Task for p in PACKAGES}


TASKS = tasks()


def task_class(config) -> type:
    """The Task class of a config (by its `task` name)."""
    found = tasks().get(getattr(config, "task", ""))
    if found is None:
        name = getattr(config, "task", "")
        raise TypeError(f"no training task for a {type(config).__name__} (task {name!r})")
    return found


def task_for(config):
    """The Task of a config, ready for engine.trainer.Trainer / fit."""
    return task_class(config)(config)


def checkpoint_task(ckpt: dict, path) -> type:
    """The Task class that wrote an engine checkpoint (by its "format"; checkpoints of the first
    segmentation engine may lack one and count as segmentation)."""
    fmt = checkpoint_format(ckpt, path)
    for task in tasks().values():
        if writes(task, fmt):
            return task
    known = sorted(t.checkpoint_format for t in tasks().values())
    raise ValueError(f"{path}: unknown checkpoint format {fmt!r} (this fastdet reads {known})")


def load_model(
    path,
    device="cpu",
    task: str | None = None,
    bf16: bool = False,
    channels_last: bool = False,
) -> tuple[nn.Module, object]:
    """(model in eval mode on `device`, its config) from an engine checkpoint of any task;
    task ("seg", "det", ...): the kind expected, another kind is a ValueError naming both.
    bf16, channels_last: engine.loading.load_task_model's."""
    ckpt = load_checkpoint(path)
    found = checkpoint_task(ckpt, path)
    if task is not None and found.name != task:
        expected = tasks().get(task)
        if expected is None:
            raise ValueError(f"task must be one of {sorted(tasks())}, got {task!r}")
        raise wrong_task(path, found, found.checkpoint_format, expected)
    return model_from(found, ckpt, device, bf16, channels_last)


def train(config, train_set, val_set=None, out_dir=None, resume=False) -> list[dict]:
    """Trains the task of `config` (SegConfig, DetConfig, ...): engine.trainer.fit of its Task
    (same arguments and result)."""
    return fit(task_for(config), train_set, val_set, out_dir, resume)


def merge_run(out) -> list[Path]:
    """`fastdet merge OUT`: the final files of a prediction run from its parts (after a rank
    failed, or to write them again), by the task its run.json names."""
    out = Path(out)
    path = out / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no run.json here (not a prediction run's --out)")
    settings = json.loads(path.read_text())
    merges = {p.Task.name: getattr(p, "merge", None) for p in PACKAGES}
    merge = merges.get(settings.get("task"))
    if merge is None:
        raise ValueError(f"{path}: task {settings.get('task')!r} writes no merged files")
    return finish(out, settings, merge)
