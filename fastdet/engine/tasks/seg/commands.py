"""`fastdet train|predict|evaluate seg`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ....data.datasets import PLANES
from ...commands import (
    add_train_parser,
    device_flags,
    evaluate_flags,
    input_flags,
    loaded,
    open_split,
    write_json,
)
from ...inputs import input_files, read_input
from .data import SEG_LAYOUTS, open_seg_dataset
from .evaluate import evaluate_segmentation, format_report
from .predict import predict_mask, write_png_mask, write_volume_mask
from .task import SegTask

CHECKPOINT = "segmentation checkpoint (a run's best.pt or last.pt)"


def open_sets(layout, root, split, config):
    """The run's dataset of a split, read as its config says (colour, MRI plane)."""
    x = config.extra
    kw = dict(rgb=x.get("rgb", False), plane=x.get("plane", "transverse"))
    return open_seg_dataset(
        layout,
        root,
        split,
        config.seed,
        config.val_fraction,
        test_fraction=config.test_fraction,
        **kw,
    )


def add_commands(train, predict, evaluate, tune) -> None:
    # rsna is listed so that choosing it says to use `train det`
    s = add_train_parser(train, SegTask, SEG_LAYOUTS + ("rsna",), open_sets)
    s.add_argument("--rgb", action="store_true", help="3 colour channels instead of grey")
    s.add_argument("--plane", default="transverse", choices=PLANES, help="MRI slices")
    s = predict.add_parser(
        "seg",
        help="masks for PNG/TIFF/DICOM files or DICOM series folders",
        description="0/255 PNG masks of 2-D images; NIfTI masks of DICOM series (volumes)",
    )
    input_flags(s, "files, series folders or image folders", CHECKPOINT)
    _inference_flags(s)
    s.add_argument("--min-size", type=int, default=16, help="post-processing: smallest object")
    s.set_defaults(fn=predict_command)
    s = evaluate.add_parser(
        "seg",
        help="IoU, Dice, sensitivity, specificity (and DSB score) beside the classical baseline",
    )
    evaluate_flags(s, SEG_LAYOUTS, CHECKPOINT)
    s.add_argument("--figures", type=Path, metavar="DIR", help="write contour overlays")
    s.add_argument("--no-classical", action="store_true", help="skip the classical baseline")
    _inference_flags(s)
    s.set_defaults(fn=evaluate_command)


def _inference_flags(s) -> None:
    device_flags(s)
    s.add_argument(
        "--post-process", action="store_true", help="remove small objects and fill holes"
    )
    s.add_argument(
        "--tile",
        type=int,
        help="sliding-window side (default: the training size; 0: whole image at once)",
    )
    s.add_argument("--overlap", type=int, help="pixels between windows (default tile // 4)")


def _tiling(args, config) -> tuple[int, int]:
    tile = config.size if args.tile is None else args.tile
    return tile, tile // 4 if args.overlap is None else args.overlap


def predict_command(args) -> int:
    device, model, config = loaded(args, SegTask)
    tile, overlap = _tiling(args, config)
    if tile and not 0 <= overlap < tile:
        raise ValueError(f"--overlap must be in [0, --tile), got {overlap} with tile {tile}")
    files = input_files(args.inputs)
    opts = dict(
        config=config,
        tile=tile,
        overlap=overlap,
        device=device,
        post_process=args.post_process,
        min_size=args.min_size,
    )
    for path in files:
        kind, data, meta = read_input(path)
        stem = path.name.split(".")[0] if path.is_file() else path.name
        if kind == "image":
            out = write_png_mask(args.out / f"{stem}_mask.png", predict_mask(model, data, **opts))
        else:
            masks = np.stack([predict_mask(model, torch.from_numpy(s[None]), **opts) for s in data])
            out = write_volume_mask(args.out / f"{stem}_mask", masks, meta.get("spacing"))
        print(f"{path} -> {out}")
    return 0


def evaluate_command(args) -> int:
    device, model, config = loaded(args, SegTask)
    x = config.extra
    data = open_split(
        open_seg_dataset,
        args,
        config,
        rgb=x.get("rgb", False),
        plane=x.get("plane", "transverse"),
    )
    tile, overlap = _tiling(args, config)
    result = evaluate_segmentation(
        model,
        config,
        data,
        device,
        tile,
        overlap,
        args.post_process,
        classical=not args.no_classical,
        figures=args.figures,
    )
    print(format_report(result))
    if args.json:
        write_json(args.json, result)
    return 0
