"""The registry of training tasks, and models back from checkpoints of any task.

Adding a task: one module with its config (a RunConfig subclass with a `task` name) and its
Task subclass (engine.trainer.Task), registered in TASKS below; the trainer, the checkpoints and
the `fastdet train|predict|evaluate <task>` flags follow from them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._pytree import tree_map_only

from .checkpoint import load_checkpoint, model_state
from .cls import ClsTask
from .det import DetTask
from .seg import SegTask
from .trainer import autocast

TASKS = {t.name: t for t in (SegTask, DetTask, ClsTask)}
_NAMES = {"seg": "segmentation", "det": "detection", "cls": "classification"}


def task_class(config) -> type:
    """The Task class of a config (by its `task` name)."""
    name = getattr(config, "task", "")
    if name not in TASKS:
        raise TypeError(f"no training task for a {type(config).__name__} (task {name!r})")
    return TASKS[name]


def checkpoint_task(ckpt: dict, path) -> type:
    """The Task class that wrote an engine checkpoint (by its "format"; checkpoints of the first
    segmentation engine may lack one and count as segmentation)."""
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a fastdet training checkpoint (no 'config' and 'model')")
    fmt = ckpt.get("format", SegTask.checkpoint_format)
    for task in TASKS.values():
        if task.checkpoint_format == fmt:
            return task
    known = sorted(t.checkpoint_format for t in TASKS.values())
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
    bf16: the model's forward runs under bfloat16 autocast (bf16_forward); channels_last: its
    4-D weights in channels-last layout (NHWC convolutions), whatever the run trained with."""
    ckpt = load_checkpoint(path)
    found = checkpoint_task(ckpt, path)
    if task is not None and found.name != task:
        raise ValueError(
            f"{path}: a {_NAMES.get(found.name, found.name)} checkpoint ({found.checkpoint_format})"
            f", not {_NAMES.get(task, task)}: use the `{found.name}` commands"
        )
    config = found.config_class.from_dict(ckpt["config"])
    model = found(config).build_model(config, pretrained=False)
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
