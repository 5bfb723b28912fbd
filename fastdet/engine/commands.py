"""The command-line pieces every task's commands share: the training flags made from the
config's fields (engine.config.setting: a field's help, choices and default are its flag's, so a
new setting gets its flag by being declared), `train <task>` itself, the flags of loading a
checkpoint, reading inputs and scoring a split, and the JSON figures."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from pathlib import Path

from .checkpoint import load_checkpoint
from .config import cli_fields
from .loading import load_task_model
from .logging import json_safe
from .trainer import fit, resolve_device


def _field_type(f):
    """The argparse type of a config field (annotations are strings: "int | None", ...)."""
    if "type" in f.metadata:
        return f.metadata["type"]
    name = str(f.type).replace(" | None", "").strip()
    return {"int": int, "float": float, "str": str, "bool": bool}[name]


def add_config_flags(parser, config_class, required=()) -> None:
    """One flag per user-facing field of config_class: --name (a bool defaulting to True: its
    --no-name switch), plus the field's aliases and extra switches. Unset flags stay None, so
    only the flags given override a default or a resumed run's saved config. required: fields
    a fresh run must be given (their help says so instead of naming a default)."""
    for f in cli_fields(config_class):
        md = f.metadata
        name = md.get("flag", f.name).replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = _field_type(f)
        if kind is bool:
            flag, const = (f"--no-{name}", False) if default else (f"--{name}", True)
            words = f"off: {md['help']}" if default else md["help"]
            parser.add_argument(flag, dest=f.name, action="store_const", const=const, help=words)
            continue
        names = [f"--{name}", *(f"--{a}" for a in md.get("aliases", ()))]
        parser.add_argument(
            *names,
            dest=f.name,
            type=kind,
            choices=md.get("choices"),
            nargs=md.get("nargs"),
            metavar=md.get("metavar"),
            help=md["help"] + _default_words(f.name in required, default),
        )
        for switch, value, words in md.get("switches", ()):
            parser.add_argument(
                f"--{switch}", dest=f.name, action="store_const", const=value, help=words
            )


def _default_words(required: bool, default) -> str:
    if required:
        return " (required unless --resume)"
    return "" if default is None else f" (default {default})"


def config_from_args(task, args):
    """A fresh run: the flags given over the config's defaults (--data, --layout, --model
    required). A resumed run: the saved config with the flags given over it (the trainer
    refuses changes other than engine.config.RESUMABLE_CHANGES)."""
    cls = task.config_class
    given = {f.name: getattr(args, f.name) for f in cli_fields(cls)}
    given = {k: v for k, v in given.items() if v is not None}
    if args.resume:
        saved = cls.upgrade(dict(load_checkpoint(args.out / "last.pt")["config"]))
        return cls.from_dict({**saved, "progress": True, **given})
    missing = [f"--{n}" for n in ("data", "layout", "model") if getattr(args, n) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (unless --resume)")
    extra = {"data": str(args.data.resolve()), "layout": args.layout}
    extra.update({k: getattr(args, k) for k in ("rgb", "plane") if hasattr(args, k)})
    return cls(**given, extra=extra)


def add_train_parser(kinds, task, layouts, open_sets):
    """`train <task.name>`'s parser: data, layout, run folder, resume and the config's flags.
    open_sets(layout, root, split, config): the task's dataset of a split (None: all)."""
    s = kinds.add_parser(task.name, help=task.description, description=task.description)
    s.add_argument("--data", type=Path, help="dataset folder (required unless --resume)")
    s.add_argument(
        "--layout", choices=layouts, help="on-disk layout of --data (required unless --resume)"
    )
    s.add_argument("--out", type=Path, required=True, help="run folder")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_config_flags(s, task.config_class, required=("model",))
    s.set_defaults(fn=functools.partial(train_command, task, open_sets))
    return s


def train_command(task, open_sets, args) -> int:
    """`train <task>`: config, datasets (split by val_fraction), training, a line per epoch."""
    config = config_from_args(task, args)
    x = config.extra
    if "data" not in x or "layout" not in x:  # a run started from Python, not from here
        raise ValueError(
            f"{args.out}: the run's config does not name its data (extra.data, "
            "extra.layout); resume it from Python with the datasets"
        )
    if config.val_fraction <= 0:
        train_set, val_set = open_sets(x["layout"], x["data"], None, config), None
    else:
        train_set = open_sets(x["layout"], x["data"], "train", config)
        val_set = open_sets(x["layout"], x["data"], "val", config)
    main = is_rank0()  # under torchrun every process runs this; one report is enough
    if main:
        n_val = len(val_set) if val_set else 0
        print(
            f"training {config.model} on {len(train_set)} images ({n_val} for validation), "
            f"{config.epochs} epochs -> {args.out}",
            file=sys.stderr,
        )
    history = fit(task(config), train_set, val_set, args.out, resume=args.resume)
    if main:
        for row in history:
            print(f"epoch {row['epoch']}: {task(config).epoch_line(row)}")
        print(f"wrote {args.out}/last.pt, best.pt, metrics.csv, metrics.png")
    return 0


def is_rank0() -> bool:
    """False in the processes torchrun started with RANK > 0 (True without torchrun)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def loaded(args, task):
    """(device, eval-mode model, config) of --checkpoint, which must be a `task` checkpoint."""
    device = resolve_device(args.device)
    return (device, *load_task_model(task, args.checkpoint, device, **speed(args)))


def speed(args) -> dict:
    """load_model's speed options from --bf16 and --channels-last."""
    return {"bf16": args.bf16, "channels_last": args.channels_last}


def open_split(open_dataset, args, config, **kw):
    """The dataset of --data / --layout / --split that `evaluate` scores (all: every image),
    split as the run split it; an empty one is a ValueError."""
    split = None if args.split == "all" else args.split
    data = open_dataset(
        args.layout,
        args.data,
        split,
        seed=config.seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        **kw,
    )
    if len(data) == 0:
        raise ValueError(f"no images in {args.data} ({args.split})")
    return data


def write_json(path: Path, result: dict) -> None:
    """An evaluation's figures as JSON (NaN as null), its folder made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
    print(f"wrote {path}")


def figures_folder(args):
    """--figures, else the --json folder, else None (never the working folder unasked)."""
    return args.figures or (args.json.parent if args.json else None)


def input_flags(s, what: str, checkpoint: str) -> None:
    s.add_argument("--checkpoint", type=Path, required=True, help=checkpoint)
    s.add_argument("inputs", nargs="+", type=Path, help=what)
    s.add_argument("--out", type=Path, required=True, help="output folder")


def evaluate_flags(s, layouts, checkpoint: str, split: str = "all") -> None:
    """--checkpoint, --data, --layout, --split (default `split`) and, for evaluate, --json."""
    s.add_argument("--checkpoint", type=Path, required=True, help=checkpoint)
    s.add_argument("--data", type=Path, required=True, help="dataset folder to score")
    s.add_argument("--layout", required=True, choices=layouts, help="on-disk layout of --data")
    s.add_argument(
        "--split",
        choices=["all", "val", "train", "test"],
        default=split,
        help=f"the training run's split to use (default {split}"
        + (": every image)" if split == "all" else ")"),
    )
    if split == "all":
        s.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")


def device_flags(s) -> None:
    s.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda or cuda:N (default auto: CUDA when available, else CPU)",
    )
    s.add_argument(
        "--bf16",
        action="store_true",
        help="run the models under bfloat16 autocast (faster on CPUs with bf16 and on GPUs; "
        "outputs in float32)",
    )
    s.add_argument(
        "--channels-last",
        action="store_true",
        help="the models' convolutions in channels-last (NHWC) layout",
    )


def batch_flag(s) -> None:
    s.add_argument("--batch-size", type=int, default=16, help="images per forward pass")


def archive_flags(s, figures: bool = True, batch: bool = True) -> None:
    """The flags of predicting over archives (engine.archive); figures: --max-figures; batch:
    --batch-size."""
    if batch:
        s.add_argument(
            "--batch-size", type=int, default=8, help="images per forward pass (default 8)"
        )
    s.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes decoding the inputs (default: the cores, shared by torchrun's local "
        "processes, at most 8; 0: in the main process)",
    )
    if figures:
        s.add_argument(
            "--max-figures",
            type=int,
            default=20,
            metavar="N",
            help="figures drawn for the first N inputs in sorted order (default 20)",
        )
    s.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first input that cannot be read (default: list it in errors.csv)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
