"""`fastdet train|predict|evaluate|tune det` (Faster R-CNN and Mask R-CNN), with the operating
point, test-time augmentation, ensembles and the classifier gate."""

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
from ...loading import load_task_checkpoint, load_task_model
from ...trainer import resolve_device
from ..seg.task import SegTask
from .data import DET_LAYOUTS, open_det_dataset, prepare_image
from .ensemble import FUSE_METHODS, check_members, parse_tta, predict_fused
from .evaluate import evaluate_detection, format_det_report
from .gate import above, apply_gate, gate_keeps, load_gate
from .point import (
    OperatingPoint,
    apply_point,
    describe,
    objective_of,
    permissive,
    store_point,
    stored_point,
    tune_point,
)
from .task import DetTask, has_masks, instance_outputs, predict_detections

CHECKPOINT = "detection checkpoint (a run's best.pt or last.pt)"


def open_sets(layout, root, split, config):
    return open_det_dataset(
        layout, root, split, config.seed, config.val_fraction, config.test_fraction
    )


def add_commands(train, predict, evaluate, tune) -> None:
    add_train_parser(train, DetTask, DET_LAYOUTS, open_sets)
    s = tune.add_parser(
        "det",
        help="choose a Faster R-CNN checkpoint's operating point (score threshold, NMS IoU, "
        "containment, boxes per image) on a split and store it in the checkpoint",
    )
    evaluate_flags(s, DET_LAYOUTS, CHECKPOINT, split="val")
    device_flags(s)
    s.set_defaults(fn=tune_command)
    s = predict.add_parser(
        "det",
        help="boxes (CSV and PNG) for PNG/TIFF/DICOM images; Mask R-CNN also a uint16 instance "
        "label image and its overlay",
    )
    input_flags(s, "image files or folders", CHECKPOINT)
    _point_flags(s)
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
    _point_flags(s)
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


def _point_flags(s) -> None:
    """The operating point's parts: each flag overrides the checkpoint's stored point."""
    s.add_argument(
        "--score-threshold",
        type=float,
        metavar="S",
        help="boxes kept from this score (default: the checkpoint's operating point, else 0.5; "
        "evaluate: the TP/FP/FN counts, AP uses every box)",
    )
    s.add_argument(
        "--nms-iou", type=float, metavar="IOU", help="NMS IoU per label (default: the point's)"
    )
    s.add_argument(
        "--containment",
        metavar="F|off",
        help="drop a box with more than this fraction of its area inside a higher-scoring box "
        "of its label, or off (default: the point's)",
    )
    s.add_argument(
        "--max-boxes", type=int, metavar="N", help="boxes kept per image (default: the point's)"
    )
    s.add_argument(
        "--raw",
        action="store_true",
        help="the model as configured, no operating point (score threshold 0.5 unless given)",
    )


def resolve_point(args, model, ckpt_point):
    """The operating point predict/evaluate apply: the checkpoint's with the flags' parts
    replaced, or one made from the flags (the model's NMS and cap otherwise); None with --raw,
    or without a stored point and flags beyond --score-threshold (the model as configured, as
    before points existed). A point sets the model's NMS and cap to the permissive ones."""
    parts = {
        "score_threshold": args.score_threshold,
        "nms_iou": args.nms_iou,
        "max_boxes": args.max_boxes,
    }
    parts = {k: v for k, v in parts.items() if v is not None}
    if args.containment is not None:
        parts["containment"] = _containment(args.containment)
    if args.raw:
        if len(parts) > ("score_threshold" in parts):
            raise ValueError(
                "--raw runs the model as configured: drop --nms-iou, --containment and --max-boxes"
            )
        return None
    if ckpt_point is None and set(parts) <= {"score_threshold"}:
        return None
    heads = model.roi_heads
    base = ckpt_point or OperatingPoint(
        nms_iou=heads.nms_thresh, max_boxes=heads.detections_per_img
    )
    point = base.replace(**parts)
    permissive(model)
    return point


def _containment(text: str):
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"--containment must be a fraction in [0, 1] or off, got {text!r}"
        ) from None


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
    device, model, config, point = _loaded_at_point(args)
    threshold = 0.5 if args.score_threshold is None else args.score_threshold
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
        if point is not None:
            pred = apply_point(pred, point)
        else:
            pred = above(pred, threshold)
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


def read_detector(path, device="cpu", **speed) -> tuple:
    """(eval-mode model, config, its stored operating point or None: none for Mask R-CNN) of
    a detection checkpoint, the file read once; the model as configured."""
    model, config, ckpt = load_task_checkpoint(DetTask, path, device, **speed)
    return model, config, None if has_masks(config.model) else stored_point(ckpt)


def load_detector_at_point(path, device="cpu", **speed) -> tuple:
    """read_detector; with a point, the model runs with the permissive NMS and cap the
    point's own follow."""
    model, config, point = read_detector(path, device, **speed)
    if point is not None:
        permissive(model)
    return model, config, point


def _loaded_at_point(args) -> tuple:
    """(device, model, config, point) of --checkpoint and the point flags (resolve_point; Mask
    R-CNN: none, the instances issue's own point replaces instance_score), printed when one
    applies."""
    device = resolve_device(args.device)
    model, config, stored = read_detector(args.checkpoint, device, **speed(args))
    return device, model, config, _point(args, model, config, stored)


def _point(args, model, config, stored):
    if has_masks(config.model):
        given = [f for f in ("nms_iou", "containment", "max_boxes") if getattr(args, f) is not None]
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise ValueError(
                f"{flags}: the operating point is Faster R-CNN's; Mask R-CNN's instances use "
                "its instance_score and mask_threshold"
            )
        return None
    point = resolve_point(args, model, stored)
    if point is not None:
        print(describe(point))
    return point


def evaluate_command(args) -> int:
    device, model, config, point = _loaded_at_point(args)
    threshold = 0.5 if args.score_threshold is None else args.score_threshold
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
        threshold,
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
        point=point,
    )
    if point is not None:  # "all" holds the validation images too
        chosen_here = point.split == args.split or (bool(point.split) and args.split == "all")
        result["operating_point"]["chosen_on_scored_images"] = chosen_here
    for m, path in zip(result.get("members", ()), [args.checkpoint, *(args.ensemble or ())]):
        m["checkpoint"] = str(path)
    print(format_det_report(result))
    if result.get("pr_curve"):
        print(f"wrote {result['pr_curve']}")
    if args.json:
        write_json(args.json, result)
    return 0


def tune_command(args) -> int:
    """Chooses the operating point on --split and stores it in --checkpoint (atomically)."""
    device, model, config = loaded(args, DetTask)
    if has_masks(config.model):
        raise ValueError(
            f"{args.checkpoint}: tune det chooses Faster R-CNN's point; Mask "
            "R-CNN's instances use its instance_score and mask_threshold"
        )
    data = open_split(open_det_dataset, args, config)
    point = tune_point(model, config, data, device, objective_of(args.layout), args.split)
    store_point(args.checkpoint, point)
    print(describe(point))
    print(f"stored in {args.checkpoint}")
    return 0
