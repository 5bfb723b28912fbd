"""`fastdet train|predict|evaluate seg`."""

from __future__ import annotations

from pathlib import Path

from ....data.datasets import PLANES
from ...archive import Job, fingerprint, list_inputs, run, run_summary
from ...commands import (
    add_train_parser,
    archive_flags,
    device_flags,
    evaluate_flags,
    input_flags,
    loaded,
    open_split,
    write_json,
)
from .data import SEG_LAYOUTS, open_seg_dataset
from .evaluate import evaluate_segmentation, format_report
from .predict import MASKS, batch_predictor, merge
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
    input_flags(s, "files, series folders, image folders or @FILE (a path per line)", CHECKPOINT)
    archive_flags(s, figures=False, batch=False)
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
    """`predict seg` over any number of inputs: a mask file per input and masks.csv in --out
    (engine.archive: DataLoader reading, resume, torchrun shards, errors)."""
    device, model, config = loaded(args, SegTask)
    tile, overlap = _tiling(args, config)
    if tile and not 0 <= overlap < tile:
        raise ValueError(f"--overlap must be in [0, --tile), got {overlap} with tile {tile}")
    opts = dict(
        config=config,
        tile=tile,
        overlap=overlap,
        device=device,
        post_process=args.post_process,
        min_size=args.min_size,
    )
    settings = {
        "task": "seg",
        "checkpoint": str(args.checkpoint.resolve()),
        "checkpoint_sha256": fingerprint(args.checkpoint),
        **{k: v for k, v in opts.items() if k not in ("config", "device")},
        "bf16": args.bf16,
        "channels_last": args.channels_last,
    }
    predict = batch_predictor(model, args.out, **opts)
    job = Job({"masks": MASKS}, predict, merge, images_only=False, pin=device.type == "cuda")
    inputs = list_inputs(args.inputs, series=True)
    show = not args.no_progress
    result = run(job, args.out, inputs, settings, 1, args.workers, args.strict, show)
    print(run_summary(result, args.out))
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
