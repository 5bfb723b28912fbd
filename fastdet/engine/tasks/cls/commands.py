"""`fastdet train|predict|evaluate cls`."""

from __future__ import annotations

from pathlib import Path

from ...archive import Job, fingerprint, list_inputs, run, run_summary
from ...commands import (
    add_train_parser,
    archive_flags,
    batch_flag,
    device_flags,
    evaluate_flags,
    figures_folder,
    input_flags,
    open_split,
    speed,
    write_json,
)
from ...trainer import resolve_device
from .data import CLS_LAYOUTS, open_cls_dataset
from .evaluate import evaluate_classification, format_cls_report
from .predict import batch_predictor, merge, tables
from .task import ClsTask, load_classifier

CHECKPOINT = "classification checkpoint (a run's best.pt or last.pt)"


def open_sets(layout, root, split, config):
    rgb = config.extra.get("rgb", False)
    return open_cls_dataset(
        layout, root, split, config.seed, config.val_fraction, rgb, config.test_fraction
    )


def add_commands(train, predict, evaluate, tune) -> None:
    s = add_train_parser(train, ClsTask, CLS_LAYOUTS, open_sets)
    s.add_argument("--rgb", action="store_true", help="classes layout: 3 colour channels, not grey")
    s = predict.add_parser("cls", help="class probabilities (CSV) for PNG/TIFF/DICOM images")
    input_flags(s, "image files, folders (each DICOM file one image) or @FILE", CHECKPOINT)
    archive_flags(s, figures=False)
    device_flags(s)
    s.set_defaults(fn=predict_command)
    s = evaluate.add_parser(
        "cls",
        help="accuracy, balanced accuracy, per-class sensitivity/specificity/precision, ROC AUC, "
        "confusion matrix",
    )
    evaluate_flags(s, CLS_LAYOUTS, CHECKPOINT)
    s.add_argument(
        "--figures",
        type=Path,
        metavar="DIR",
        help="folder for confusion_matrix.csv/.png, roc.png and predictions.csv "
        "(default: the --json folder; none without either)",
    )
    batch_flag(s)
    device_flags(s)
    s.set_defaults(fn=evaluate_command)


def predict_command(args) -> int:
    """`predict cls` over any number of inputs: predictions.csv (path, predicted class, P per
    class) in --out (engine.archive: loading, batching, resume, torchrun shards, errors)."""
    device = resolve_device(args.device)
    model, config, _ = load_classifier(args.checkpoint, device, **speed(args))
    settings = {
        "task": "cls",
        "checkpoint": str(args.checkpoint.resolve()),
        "checkpoint_sha256": fingerprint(args.checkpoint),
        "classes": list(config.classes),
        "bf16": args.bf16,
        "channels_last": args.channels_last,
    }
    predict = batch_predictor(model, config, device, args.batch_size)
    job = Job(tables(config.classes), predict, merge, pin=device.type == "cuda")
    result = run(
        job,
        args.out,
        list_inputs(args.inputs, series=False),
        settings,
        args.batch_size,
        args.workers,
        args.strict,
        not args.no_progress,
    )
    print(run_summary(result, args.out))
    return 0


def evaluate_command(args) -> int:
    device = resolve_device(args.device)
    model, config, threshold = load_classifier(args.checkpoint, device, **speed(args))
    data = open_split(open_cls_dataset, args, config, rgb=config.extra.get("rgb", False))
    result = evaluate_classification(
        model, config, data, device, figures_folder(args), threshold, args.batch_size
    )
    print(format_cls_report(result))
    for path in result.get("files", {}).values():
        print(f"wrote {path}")
    if args.json:
        write_json(args.json, result)
    return 0
