"""Models back from engine checkpoints, given the Task that wrote them (engine.tasks finds the
Task of any checkpoint), and the speed options applied to a loaded model."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._pytree import tree_map_only

from .checkpoint import load_checkpoint, model_state
from .trainer import Task, autocast


def checkpoint_format(ckpt: dict, path) -> str | None:
    """The "format" of an engine checkpoint (None: written before formats were stored)."""
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a fastdet training checkpoint (no 'config' and 'model')")
    return ckpt.get("format")


def writes(task: type[Task], fmt: str | None) -> bool:
    """Whether checkpoints of format `fmt` are `task`'s."""
    return fmt == task.checkpoint_format or (fmt is None and task.reads_unversioned)


def wrong_task(path, found: type[Task] | None, fmt, task: type[Task]) -> ValueError:
    """The error of a checkpoint of another task than `task` (found: its Task, when known)."""
    if found is None:
        return ValueError(f"{path}: a {fmt} checkpoint, not {task.title}")
    return ValueError(
        f"{path}: a {found.title} checkpoint ({found.checkpoint_format}), not {task.title}: "
        f"use the `{found.name}` commands"
    )


def _known_tasks(base=Task):
    for t in base.__subclasses__():
        yield t
        yield from _known_tasks(t)


def load_task_model(
    task: type[Task], path, device="cpu", bf16: bool = False, channels_last: bool = False
) -> tuple[nn.Module, object]:
    """(model in eval mode on `device`, its config) from a checkpoint that `task` wrote; another
    task's checkpoint is a ValueError naming both. bf16: the model's forward runs under bfloat16
    autocast (bf16_forward); channels_last: its 4-D weights in channels-last layout (NHWC
    convolutions), whatever the run trained with."""
    model, config, _ = load_task_checkpoint(task, path, device, bf16, channels_last)
    return model, config


def load_task_checkpoint(
    task: type[Task], path, device="cpu", bf16: bool = False, channels_last: bool = False
) -> tuple[nn.Module, object, dict]:
    """load_task_model's (model, config) and the checkpoint itself, the file read once (for
    what a task stores beside the model: a threshold, an operating point)."""
    ckpt = load_checkpoint(path)
    fmt = checkpoint_format(ckpt, path)
    if not writes(task, fmt):
        found = next((t for t in _known_tasks() if writes(t, fmt)), None)
        raise wrong_task(path, found, fmt, task)
    return (*model_from(task, ckpt, device, bf16, channels_last), ckpt)


def model_from(task: type[Task], ckpt: dict, device, bf16: bool, channels_last: bool):
    """load_task_model of a checkpoint already read and checked."""
    config = task.config_class.from_dict(ckpt["config"])
    model = task(config).build_model(config, pretrained=False)
    model.load_state_dict(model_state(ckpt))
    return with_options(model.to(device).eval(), device, bf16, channels_last), config


def with_options(model: nn.Module, device, bf16: bool = False, channels_last: bool = False):
    """`model` with load_model's speed options applied (in place; returned)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return bf16_forward(model, device) if bf16 else model


def bf16_forward(model: nn.Module, device) -> nn.Module:
    """`model`, its forward now run under bfloat16 autocast (the trainer's --bf16) with every
    floating output back in float32, so what reads the outputs (thresholds, numpy, box math)
    runs as before. Weights, attributes and state_dict are untouched."""
    forward = model.forward

    def run(*args, **kwargs):
        with autocast(device, bf16=True):
            out = forward(*args, **kwargs)
        return tree_map_only(torch.Tensor, _float32, out)

    model.forward = run
    return model


def _float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t
