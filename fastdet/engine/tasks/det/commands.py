"""`fastdet train|predict|evaluate det` (Faster R-CNN and Mask R-CNN), with test-time
augmentation, ensembles and the classifier gate."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ....metrics import draw_boxes, save_instance_overlay
from ...commands import (
    add_train_parser,
    device_flags,
    evaluate_flags,
    figures_folder,
    input_flags,
    loaded,
    open_split,
    speed,
    write_json,
)
from ...inputs import input_files, read_input
from ...loading import load_task_model
from ..seg.task import SegTask
from .data import DET_LAYOUTS, open_det_dataset, prepare_image
from .ensemble import FUSE_METHODS, check_members, parse_tta, predict_fused
from .evaluate import evaluate_detection, format_det_report
from .gate import apply_gate, gate_keeps, load_gate
from .task import DetTask, instance_outputs, predict_detections

CHECKPOINT = "detection checkpoint (a run's best.pt or last.pt)"


def open_sets(layout, root, split, config):
    return open_det_dataset(layout, root, split, config.seed, config.val_fraction)


def add_commands(train, predict, evaluate) -> None:
    add_train_parser(train, DetTask, DET_LAYOUTS, open_sets)
    s = predict.add_parser(
        "det",
        help="boxes (CSV and PNG) for PNG/TIFF/DICOM images; Mask R-CNN also a uint16 instance "
        "label image and its overlay",
    )
    input_flags(s, "image files or folders", CHECKPOINT)
    s.add_argument(
        "--score-threshold", type=float, default=0.5, help="boxes kept from this score (0.5)"
    )
    s.add_argument(
        "--label-format",
        choices=("png", "tif"),
        default="png",
        help="Mask R-CNN's instance label images: 16-bit PNG or TIFF",
    )
    _det_flags(s)
    s.set_defaults(fn=predict_command)
    s = evaluate.add_parser("det", help="RSNA score, COCO AP, AP50, TP/FP/FN, PR curve")
    evaluate_flags(s, DET_LAYOUTS, CHECKPOINT)
    s.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="detections counted in TP/FP/FN (AP uses all)",
    )
    s.add_argument(
        "--figures",
        type=Path,
        metavar="DIR",
        help="folder for pr_curve.png and boxes/<id>.png (detections red, ground truth "
        "green) (default: the --json folder; none without either)",
    )
    s.add_argument(
        "--max-figures",
        type=int,
        default=20,
        metavar="N",
        help="images drawn into boxes/ (default 20)",
    )
    s.add_argument(
        "--unet",
        type=Path,
        metavar="SEG_CKPT",
        help="Mask R-CNN: also score this segmentation checkpoint's instances (watershed split)",
    )
    s.add_argument(
        "--classical",
        action="store_true",
        help="Mask R-CNN: also score the classical baseline's instances",
    )
    _det_flags(s)
    s.set_defaults(fn=evaluate_command)


def _det_flags(s) -> None:
    """The gate, device and fusion flags of predict and evaluate."""
    s.add_argument(
        "--gate",
        type=Path,
        metavar="CLS_CKPT",
        help="drop every box of an image whose P(positive class, e.g. Lung Opacity) from this "
        "classification checkpoint is below the gate threshold",
    )
    s.add_argument(
        "--gate-threshold",
        type=float,
        metavar="T",
        help="the gate's threshold (default: the one stored in CLS_CKPT, else 0.5)",
    )
    device_flags(s)
    s.add_argument(
        "--tta",
        metavar="WORDS",
        help="test-time augmentation, a comma list of hflip, vflip, scale (scale: the model's "
        "resize at 0.8x and 1.2x); the original image is always one view",
    )
    s.add_argument(
        "--ensemble",
        nargs="+",
        type=Path,
        metavar="CKPT",
        help="more detection checkpoints fused with --checkpoint (Faster R-CNN; boxes only)",
    )
    s.add_argument(
        "--fuse",
        choices=FUSE_METHODS,
        default="wbf",
        help="how views and models are fused: weighted boxes fusion (default), NMS per label, "
        "linear Soft-NMS per label",
    )
    s.add_argument(
        "--fuse-iou",
        type=float,
        default=0.55,
        metavar="IOU",
        help="IoU threshold of the fusion (default 0.55)",
    )
    s.add_argument(
        "--fuse-skip",
        type=float,
        default=0.0,
        metavar="SCORE",
        help="boxes scoring below this are dropped before the fusion (default 0)",
    )


def predict_command(args) -> int:
    device, model, config = loaded(args, DetTask)
    members, tta = _fusion_members(args, device, model, config)
    gate, gated = _gate(args, device), []
    files = input_files(args.inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in files:
        kind, image, _ = read_input(path)
        if kind != "image":
            raise ValueError(f"{path}: a volume; predict det takes 2-D images")
        if members is not None:
            pred = predict_fused(
                members, image, tta, args.fuse, args.fuse_iou, args.fuse_skip, device
            )
        else:
            pred = predict_detections(model, [prepare_image(image, config)], device)[0]
        keep = pred["scores"] >= args.score_threshold
        pred = {k: v[keep] for k, v in pred.items()}
        if gate is not None:
            pred = _gate_image(gate, pred, image, device, path, gated)
        stem = path.name.split(".")[0]
        _write_boxes_csv(args.out / f"{stem}_boxes.csv", stem, pred)
        png = draw_boxes(args.out / f"{stem}_boxes.png", image, pred)
        print(f"{path} -> {len(pred['boxes'])} boxes, {args.out / (stem + '_boxes.csv')}, {png}")
        if "masks" in pred:
            _write_instances(args.out / stem, image, pred, config, args.label_format)
    if gate is not None:
        _write_gate_csv(args.out / "gate.csv", gate, gated)
    return 0


def _write_boxes_csv(path: Path, stem: str, pred: dict) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "x1", "y1", "x2", "y2", "score", "label"])
        for b, sc, lab in zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()
        ):
            w.writerow([stem, *(f"{v:.1f}" for v in b), f"{sc:.4f}", lab])


def _fusion_members(args, device, model, config):
    """([(model, config), ...] of --checkpoint and --ensemble, TTA words) when --tta or
    --ensemble is given, else (None, ())."""
    tta = parse_tta(args.tta)
    if not tta and not args.ensemble:
        return None, ()
    members = [(model, config)]
    for path in args.ensemble or ():
        members.append(load_task_model(DetTask, path, device, **speed(args)))
    check_members(members)
    return members, tta


def _gate(args, device):
    """The Gate of --gate / --gate-threshold, or None."""
    if args.gate is None:
        if args.gate_threshold is not None:
            raise ValueError("--gate-threshold needs --gate CLS_CKPT")
        return None
    gate = load_gate(args.gate, device, args.gate_threshold, **speed(args))
    print(
        f"gate: {args.gate}, boxes kept where P({gate.config.positive}) >= "
        f"{gate.threshold:.4f} ({gate.threshold_source})"
    )
    return gate


def _gate_image(gate, pred: dict, image, device, path, rows: list) -> dict:
    """pred with its boxes dropped when the gate judges the image negative; a row for gate.csv."""
    p = gate.probability(image, device)
    rows.append((str(path), p, gate_keeps(p, gate.threshold), len(pred["boxes"])))
    if not rows[-1][2]:
        print(f"{path}: P({gate.config.positive}) {p:.4f} < {gate.threshold:.4f}, boxes dropped")
    return apply_gate(pred, p, gate.threshold)


def _write_gate_csv(path: Path, gate, rows: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", f"P({gate.config.positive})", "threshold", "kept", "boxes_before"])
        for name, p, kept, n in rows:
            w.writerow([name, f"{p:.6f}", f"{gate.threshold:.6f}", int(kept), n])
    print(f"wrote {path}")


def _write_instances(base: Path, image, pred: dict, config, fmt: str) -> None:
    """<stem>_instances.png|.tif (uint16 label image of the detections >= the config's
    instance_score) and <stem>_instances_overlay.png."""
    size = tuple(np.asarray(image).shape[-2:])
    _, labels = instance_outputs(pred, size, config)
    labels = labels.numpy()
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{base}: more than 65535 instances do not fit a uint16 label image")
    path = base.with_name(f"{base.name}_instances.{fmt}")
    if fmt == "png":
        Image.fromarray(labels.astype(np.uint16)).save(path)
    else:
        tifffile.imwrite(path, labels.astype(np.uint16))
    shown = save_instance_overlay(
        base.with_name(f"{base.name}_instances_overlay.png"), image, labels
    )
    print(f"  {int(labels.max(initial=0))} instances -> {path}, {shown}")


def evaluate_command(args) -> int:
    device, model, config = loaded(args, DetTask)
    members, tta = _fusion_members(args, device, model, config)
    data = open_split(open_det_dataset, args, config)
    unet = None
    if args.unet is not None:
        unet = load_task_model(SegTask, args.unet, device, **speed(args))
    result = evaluate_detection(
        model,
        config,
        data,
        device,
        args.score_threshold,
        figures_folder(args),
        args.max_figures,
        unet=unet,
        classical=args.classical,
        ensemble=members[1:] if members else (),
        tta=tta,
        fuse=args.fuse,
        fuse_iou=args.fuse_iou,
        fuse_skip=args.fuse_skip,
        gate=_gate(args, device),
    )
    for m, path in zip(result.get("members", ()), [args.checkpoint, *(args.ensemble or ())]):
        m["checkpoint"] = str(path)
    print(format_det_report(result))
    if result.get("pr_curve"):
        print(f"wrote {result['pr_curve']}")
    if args.json:
        write_json(args.json, result)
    return 0
