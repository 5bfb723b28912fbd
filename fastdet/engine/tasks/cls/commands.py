"""`fastdet train|predict|evaluate cls`."""

from __future__ import annotations

import csv
from pathlib import Path

from ...commands import (
    add_train_parser,
    batch_flag,
    device_flags,
    evaluate_flags,
    figures_folder,
    input_flags,
    open_split,
    speed,
    write_json,
)
from ...inputs import input_files, read_input
from ...trainer import resolve_device
from .data import CLS_LAYOUTS, open_cls_dataset
from .evaluate import evaluate_classification, format_cls_report
from .task import ClsTask, load_classifier, predict_probabilities

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
    input_flags(s, "image files or folders", CHECKPOINT)
    batch_flag(s)
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
    """`predict cls`: predictions.csv (path, predicted class, P per class) in --out."""
    device = resolve_device(args.device)
    model, config, threshold = load_classifier(args.checkpoint, device, **speed(args))
    files = input_files(args.inputs)
    images = []
    for path in files:
        kind, image, _ = read_input(path)
        if kind != "image":
            raise ValueError(f"{path}: a volume; predict cls takes 2-D images")
        images.append(image)
    probs = predict_probabilities(model, config, images, device, args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "predictions.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "predicted", *(f"P({c})" for c in config.classes)])
        for path, row in zip(files, probs.tolist()):
            best = config.classes[max(range(len(row)), key=row.__getitem__)]
            w.writerow([str(path), best, *(f"{v:.6f}" for v in row)])
            print(f"{path}: {best} ({max(row):.3f})")
    print(f"wrote {out}")
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
