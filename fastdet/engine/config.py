"""RunConfig: the settings every training task shares, written once. Each task's config
(SegConfig, DetConfig, ...) subclasses it, adds its own fields and may change a default. A config
is saved as the run folder's config.json and inside every checkpoint, so a run can be resumed
and its model rebuilt; the command line's flags are made from the fields (see `cli_fields`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cosine")
HELD_OUT_TEST = (  # the help of test_fraction where a task holds out a test split by default
    "share of the images held out as a test split no choice sees (best.pt and every threshold "
    "are chosen on validation; `evaluate --split test` scores it)"
)
# Settings a resumed run may change: they do not alter what is computed (the weight files are
# read only by a fresh run; a resumed one takes every weight from last.pt).
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "progress",
        "num_workers",
        "device",
        "extra",
        "weights",
        "weights_backbone",
        "compile",
        "channels_last",
    }
)
# Segmentation keys of configs written before the configs were unified -> today's names.
RENAMED = {"encoder_weights": "weights_backbone", "init_checkpoint": "weights"}


def workers_arg(text: str):
    """--workers: "auto" or a count."""
    return "auto" if text.strip().lower() == "auto" else int(text)


def setting(default=None, help: str = "", *, factory=None, **cli):
    """A config field with its command-line description. cli: choices, flag (the flag's name
    when it is not the field's), aliases (more flag names), type, nargs, metavar, exempt=True
    (no flag: an internal setting), switches ((flag, value, help), ...: flags that set the
    field to a value, e.g. --no-hflip)."""
    meta = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Settings of one training run. Defaults here are the shared ones; tasks override some."""

    task: ClassVar[str] = ""

    model: str = setting("", "network")
    epochs: int = setting(50, "training epochs")
    batch_size: int = setting(8, "images per step (per process under torchrun)")
    lr: float = setting(0.01, "learning rate")
    optimizer: str = setting("sgd", "optimizer (SGD with momentum, or Adam)", choices=OPTIMIZERS)
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(0.0, "L2 weight decay")
    step_size: int = setting(10, "epochs between learning-rate decays (StepLR)")
    lr_schedule: str = setting(
        "step",
        "per-epoch decay of the learning rate: step (x --gamma every --step-size epochs) or "
        "cosine (from --lr after the warmup down to 0 at the last epoch)",
        choices=LR_SCHEDULES,
    )
    gamma: float = setting(0.5, "learning-rate factor every --step-size epochs")
    warmup_steps: int = setting(
        0, "linear learning-rate warmup from lr / 1000 over the first N steps", metavar="N"
    )
    clip_grad: float | None = setting(
        None, "clip the gradients' global L2 norm to this (none: no clipping)", metavar="NORM"
    )
    hflip: float = setting(0.5, "probability of a left-right flip of a training image", metavar="P")
    vflip: float = setting(0.5, "probability of a top-bottom flip of a training image", metavar="P")
    seed: int = setting(0, "seed of every random draw (weights, shuffles, augmentation)")
    device: str = setting("auto", "auto (CUDA when available), cpu, cuda, cuda:N")
    amp: bool = setting(True, "mixed precision (only ever used on CUDA)")
    bf16: bool = setting(
        False,
        "bfloat16 autocast, on the CPU too (replaces --amp's float16; ~1.9x faster Faster "
        "R-CNN steps on an AVX-512 BF16 CPU)",
    )
    compile: bool = setting(
        False, "torch.compile the model (the first steps trace and compile: minutes on a CPU)"
    )
    channels_last: bool = setting(
        False,
        "channels-last memory layout for the model's 4-D weights, so its convolutions run in "
        "NHWC (~1.07x faster Faster R-CNN steps on an AVX-512 CPU, more with --bf16)",
    )
    progress: bool = setting(True, "progress bar (also off when stderr is not a terminal)")
    deterministic: bool = setting(
        False, "deterministic kernels (cuDNN): bit-reproducible on CUDA, slower"
    )
    num_workers: int | str = setting(
        0,
        "data loader processes; auto: the cores, shared by torchrun's processes on the machine",
        flag="workers",
        type=workers_arg,
        metavar="N|auto",
    )
    val_fraction: float = setting(0.2, "share of the images held out for validation")
    test_fraction: float = setting(
        0.0,
        "share of the images held out as a test split that no choice sees (`evaluate --split "
        "test` scores it)",
    )
    weights: str | None = setting(None, "model state_dict or engine checkpoint to start from")
    weights_backbone: str | None = setting(
        None, "torchvision-format classification state_dict file for the backbone"
    )
    extra: dict = setting(factory=dict, exempt=True)  # free-form notes (layout, data folder, ...)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        self._check_choices()
        for name in ("epochs", "batch_size", "step_size"):
            self._check_at_least(name, 1)
        if self.num_workers != "auto":
            self._check_at_least("num_workers", 0)
        if not self.lr > 0:
            raise ValueError(f"{self._name}.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(
                f"{self._name}.val_fraction must be in [0, 1), got {self.val_fraction!r}"
            )
        if not (0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError(
                f"{self._name}.test_fraction must be in [0, 1) with val_fraction + "
                f"test_fraction < 1, got {self.test_fraction!r}"
            )
        for name in ("hflip", "vflip"):
            if isinstance(getattr(self, name), bool) or not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"{self._name}.{name} is a probability: in [0, 1], got {getattr(self, name)!r}"
                )
        if self.clip_grad is not None and not (
            isinstance(self.clip_grad, (int, float)) and 0 < self.clip_grad < float("inf")
        ):
            raise ValueError(
                f"{self._name}.clip_grad must be a positive finite norm or None, got "
                f"{self.clip_grad!r}"
            )
        if int(self.warmup_steps) != self.warmup_steps or self.warmup_steps < 0:
            raise ValueError(
                f"{self._name}.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}"
            )

    @property
    def _name(self) -> str:
        return type(self).__name__

    def _check_choices(self) -> None:
        for f in dataclasses.fields(self):
            allowed = f.metadata.get("choices")
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise ValueError(
                    f"{self._name}.{f.name} must be one of {tuple(allowed)}, "
                    f"got {getattr(self, f.name)!r}"
                )

    def _check_at_least(self, name: str, low: int) -> None:
        value = getattr(self, name)
        if int(value) != value or value < low:
            raise ValueError(f"{self._name}.{name} must be an integer >= {low}, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Inverse of to_dict; keys of older configs are mapped (see `upgrade`); unknown keys
        raise (a typo would otherwise pass unnoticed)."""
        d = cls.upgrade(dict(d))
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown setting(s) {unknown}")
        return cls(**d)

    @classmethod
    def upgrade(cls, d: dict) -> dict:
        """A saved config in today's keys: renamed settings take their new names, and flips saved
        as booleans (segmentation, before the configs were unified) become probabilities."""
        for old, new in RENAMED.items():
            if old in d:
                value = d.pop(old)
                d.setdefault(new, value)
        d.setdefault("test_fraction", 0.0)  # configs from before the test split had none
        for name in ("hflip", "vflip"):
            if isinstance(d.get(name), bool):
                d[name] = 0.5 if d[name] else 0.0
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"


def cli_fields(config_class) -> list:
    """The fields of a config class that the command line sets (all but the exempt ones)."""
    return [f for f in dataclasses.fields(config_class) if not f.metadata.get("exempt")]
