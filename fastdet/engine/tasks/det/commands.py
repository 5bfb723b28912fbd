"""`fastdet train|predict|evaluate|tune det` (Faster R-CNN and Mask R-CNN), with the operating
point, test-time augmentation, ensembles and the classifier gate."""

from __future__ import annotations

from pathlib import Path

from ...archive import list_inputs, run_summary
from ...commands import (
    add_train_parser,
    archive_flags,
    device_flags,
    evaluate_flags,
    figures_folder,
    input_flags,
    loaded,
    open_split,
    speed,
    write_json,
)
from ...loading import load_task_model
from ..seg.task import SegTask
from .data import DET_LAYOUTS, open_det_dataset
from .ensemble import FUSE_METHODS
from .evaluate import evaluate_detection, format_det_report
from .point import (
    describe,
    objective_of,
    store_point,
    tune_point,
)
from .predict import FORMATS, predict_files
from .predictor import detector_from_args
from .task import DetTask, has_masks

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
    input_flags(
        s, "image files, folders (each DICOM file one image) or @FILE (a path per line)", CHECKPOINT
    )
    _point_flags(s)
    archive_flags(s)
    s.add_argument(
        "--format",
        choices=FORMATS,
        default="csv",
        help="the boxes' file: csv (boxes.csv: path,x1,y1,x2,y2,score,label), rsna "
        "(submission.csv: patientId,PredictionString) or coco (results.json) (default csv)",
    )
    s.add_argument(
        "--coco-gt",
        type=Path,
        metavar="FILE",
        help="--format coco: image ids from this COCO ground truth, matched by file name "
        "(default: the input's index in sorted order)",
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
    """`predict det` over any number of inputs into --out (det.predict.predict_files)."""
    detector = detector_from_args(args)
    _announce(detector, args)
    result = predict_files(
        detector,
        list_inputs(args.inputs, series=False),
        args.out,
        fmt=args.format,
        coco_gt=args.coco_gt,
        label_format=args.label_format,
        batch_size=args.batch_size,
        workers=args.workers,
        max_figures=args.max_figures,
        strict=args.strict,
        show=not args.no_progress,
    )
    print(run_summary(result, args.out))
    return 0


def _announce(detector, args) -> None:
    """The operating point and the gate that apply, printed."""
    if detector.point is not None:
        print(describe(detector.point))
    g = detector.gate
    if g is not None:
        print(
            f"gate: {args.gate}, boxes kept where P({g.config.positive}) >= "
            f"{g.threshold:.4f} ({g.threshold_source})"
        )


def evaluate_command(args) -> int:
    detector = detector_from_args(args)
    _announce(detector, args)
    point, members = detector.point, detector.members
    data = open_split(open_det_dataset, args, detector.config)
    unet = None
    if args.unet is not None:
        unet = load_task_model(SegTask, args.unet, detector.device, **speed(args))
    fuse, fuse_iou, fuse_skip = detector.fusion
    result = evaluate_detection(
        detector.model,
        detector.config,
        data,
        detector.device,
        detector.threshold,
        figures_folder(args),
        args.max_figures,
        unet=unet,
        classical=args.classical,
        ensemble=members[1:] if members else (),
        tta=detector.tta,
        fuse=fuse,
        fuse_iou=fuse_iou,
        fuse_skip=fuse_skip,
        gate=detector.gate,
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
