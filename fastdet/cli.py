"""The `fastdet` command. Subcommands: info, bench, data synth, train seg, predict seg,
evaluate seg, train det, predict det, evaluate det, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _info(args) -> int:
    from ._info import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for k, v in info.items():
        if k == "gpus":
            for g in v:
                print(
                    f"gpu {g['index']}: {g['name']} "
                    f"(sm_{g['capability'].replace('.', '')}, {g['memory_gib']} GiB)"
                )
        else:
            print(f"{k}: {', '.join(v) if isinstance(v, list) else v}")
    return 0


def _bench(args) -> int:
    import torch
    from tqdm import tqdm

    from .bench import cases_for, run_cases, write_json
    from .bench.runner import (
        bandwidth_lines,
        copy_bandwidth,
        default_json_path,
        machine,
        table,
        throughput_lines,
    )

    if args.device == "cuda" and not torch.cuda.is_available():
        print("fastdet bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    cases = cases_for(args.device, full=args.full, only=args.only, kind=args.kind)
    if not cases:
        print(f"fastdet bench: no case matches {args.only!r}", file=sys.stderr)
        return 2
    copy_gbs = copy_bandwidth() if args.device == "cuda" else None  # the memory-bound floor
    bar = tqdm(total=len(cases), desc="bench", unit="case", file=sys.stderr)

    def progress(case):
        bar.set_postfix_str(case.name)
        bar.update(0)

    path = None if str(args.json) == "-" else args.json or default_json_path(args.device)
    info = machine(args.device, copy_gbs) if path else None  # git, driver, build: once per run
    results = []
    for c in cases:
        progress(c)
        results += run_cases([c], args.device)
        if path:  # after every case: a crash or Ctrl-C keeps what was measured
            write_json(path, args.device, results, copy_gbs, info)
        bar.update(1)
    bar.close()
    print(table(results))
    extra = throughput_lines(results) + (bandwidth_lines(results, copy_gbs) if copy_gbs else [])
    if extra:
        print("\n".join(extra))
    if path:
        print(f"wrote {path}")
    return 0


def _synth(args) -> int:
    from .data.synthetic import synth

    if args.n is not None and args.n < 1:
        print(f"fastdet data synth: --n must be >= 1, got {args.n}", file=sys.stderr)
        return 2
    out = synth(args.kind, args.out, n=args.n, seed=args.seed)
    print(f"wrote a synthetic {args.kind} dataset to {out}")
    return 0


def _fail(command: str, error: Exception) -> int:
    print(f"fastdet {command}: {error}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- train seg

_TRAIN_FLAGS = {  # argparse dest -> TrainConfig field, for flags that map one to one
    "model": "model",
    "epochs": "epochs",
    "device": "device",
    "batch_size": "batch_size",
    "lr": "lr",
    "size": "size",
    "encoder_weights": "encoder_weights",
    "optimizer": "optimizer",
    "loss": "loss",
    "depth": "depth",
    "width": "width",
    "seed": "seed",
    "workers": "num_workers",
    "val_fraction": "val_fraction",
    "gan_mode": "gan_mode",
    "gan_lambda": "gan_lambda",
    "d_lr": "d_lr",
    "init_checkpoint": "init_checkpoint",
    "step_size": "step_size",
    "momentum": "momentum",
    "gamma": "gamma",
    "weight_decay": "weight_decay",
    "d_width": "d_width",
}
_TRAIN_SWITCHES = {"no_hflip": "hflip", "no_vflip": "vflip", "no_resize": "resize"}  # off-switches


def _train_config(args):
    """A fresh run: the flags given over TrainConfig's defaults. A resumed run: the saved
    config, with only the flags that may change (epochs, device, workers) taken from the
    command line."""
    from .engine import TrainConfig
    from .engine.checkpoint import load_checkpoint

    given = {f: getattr(args, a) for a, f in _TRAIN_FLAGS.items() if getattr(args, a) is not None}
    if args.resume:
        saved = load_checkpoint(args.out / "last.pt")["config"]
        keep = {k: given[k] for k in ("epochs", "device", "num_workers") if k in given}
        return TrainConfig.from_dict({**saved, **keep, "progress": not args.no_progress})
    missing = [f"--{n}" for n in ("data", "layout", "model") if getattr(args, n) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (unless --resume)")
    extra = {
        "data": str(args.data.resolve()),
        "layout": args.layout,
        "rgb": args.rgb,
        "plane": args.plane,
    }
    given.update({f: False for a, f in _TRAIN_SWITCHES.items() if getattr(args, a)})
    return TrainConfig(
        **given,
        amp=not args.no_amp,
        progress=not args.no_progress,
        deterministic=args.deterministic,
        extra=extra,
    )


def _train_seg(args) -> int:
    from .engine import train_segmentation
    from .engine.data import open_seg_dataset

    def open_sets(config):
        x = config.extra
        return _split_sets(
            open_seg_dataset, config, rgb=x.get("rgb", False), plane=x.get("plane", "transverse")
        )

    return _train(
        "seg",
        args,
        _train_config,
        open_sets,
        train_segmentation,
        lambda r: (
            f"train loss {r['train_loss']:.4f}, val loss {r['val_loss']:.4f}, "
            f"val IoU {r['val_iou']:.3f}, val Dice {r['val_dice']:.3f}"
        ),
    )


def _split_sets(open_dataset, config, **kw):
    """(train, val) datasets of the run's data: the split by val_fraction, or all and None."""
    x = config.extra
    kw.update(seed=config.seed, val_fraction=config.val_fraction)
    if config.val_fraction <= 0:
        return open_dataset(x["layout"], x["data"], None, **kw), None
    return (
        open_dataset(x["layout"], x["data"], "train", **kw),
        open_dataset(x["layout"], x["data"], "val", **kw),
    )


def _train(kind: str, args, config_of, open_sets, train_fn, epoch_line) -> int:
    """The shared flow of `train seg` / `train det`: config, datasets, training, a line per
    epoch."""
    name = f"train {kind}"
    try:
        config = config_of(args)
        train, val = open_sets(config)
    except (ValueError, FileNotFoundError, KeyError) as e:
        return _fail(name, e)
    main = _is_rank0()  # under torchrun every process runs this; one report is enough
    if main:
        print(
            f"training {config.model} on {len(train)} images ({len(val) if val else 0} for "
            f"validation), {config.epochs} epochs -> {args.out}",
            file=sys.stderr,
        )
    try:
        history = train_fn(config, train, val, args.out, resume=args.resume)
    except (FileExistsError, FileNotFoundError, FloatingPointError, ValueError) as e:
        return _fail(name, e)
    if main:
        for row in history:
            print(f"epoch {row['epoch']}: {epoch_line(row)}")
        print(f"wrote {args.out}/last.pt, best.pt, metrics.csv, metrics.png")
    return 0


def _is_rank0() -> bool:
    """False in the processes torchrun started with RANK > 0 (True without torchrun)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


# ---------------------------------------------------------------------- predict seg


def _predict_seg(args) -> int:
    from .engine import load_model, resolve_device
    from .engine.inference import (
        input_files,
        predict_mask,
        read_input,
        write_png_mask,
        write_volume_mask,
    )

    try:
        device = resolve_device(args.device)
        model, config = load_model(args.checkpoint, device)
        tile = config.size if args.tile is None else args.tile
        overlap = tile // 4 if args.overlap is None else args.overlap
        if tile and not 0 <= overlap < tile:
            raise ValueError(f"--overlap must be in [0, --tile), got {overlap} with tile {tile}")
        files = input_files(args.inputs)
    except (ValueError, FileNotFoundError) as e:
        return _fail("predict seg", e)
    opts = dict(
        config=config,
        tile=tile,
        overlap=overlap,
        device=device,
        post_process=args.post_process,
        min_size=args.min_size,
    )
    for path in files:
        try:
            kind, data, meta = read_input(path)
        except (ValueError, FileNotFoundError, OSError) as e:
            return _fail("predict seg", e)
        stem = path.name.split(".")[0] if path.is_file() else path.name
        if kind == "image":
            out = write_png_mask(args.out / f"{stem}_mask.png", predict_mask(model, data, **opts))
        else:
            import numpy as np
            import torch

            masks = np.stack([predict_mask(model, torch.from_numpy(s[None]), **opts) for s in data])
            out = write_volume_mask(args.out / f"{stem}_mask", masks, meta.get("spacing"))
        print(f"{path} -> {out}")
    return 0


# ---------------------------------------------------------------------- evaluate seg


def _evaluate_seg(args) -> int:
    from .engine import load_model, resolve_device
    from .engine.data import open_seg_dataset
    from .engine.evaluate import evaluate_segmentation, format_report

    try:
        device = resolve_device(args.device)
        model, config = load_model(args.checkpoint, device)
        x = config.extra
        split = None if args.split == "all" else args.split
        data = open_seg_dataset(
            args.layout,
            args.data,
            split,
            seed=config.seed,
            val_fraction=config.val_fraction,
            rgb=x.get("rgb", False),
            plane=x.get("plane", "transverse"),
        )
    except (ValueError, FileNotFoundError) as e:
        return _fail("evaluate seg", e)
    if len(data) == 0:
        return _fail("evaluate seg", ValueError(f"no images in {args.data} ({args.split})"))
    tile = config.size if args.tile is None else args.tile
    overlap = tile // 4 if args.overlap is None else args.overlap
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
        _write_json(args.json, result)
    return 0


def _write_json(path: Path, result: dict) -> None:
    """An evaluation's figures as JSON (NaN as null), its folder made as needed."""
    from .engine.evaluate import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
    print(f"wrote {path}")


def _demo(args) -> int:
    from .engine.demo import run_demo
    from .engine.det import format_det_report
    from .engine.evaluate import format_report

    if args.out.exists() and any(args.out.iterdir()):
        return _fail("demo", FileExistsError(f"{args.out} is not empty; name a new folder"))
    result = run_demo(args.out, quick=args.quick, progress=not args.no_progress)
    print("segmentation\n" + format_report(result["segmentation"]))
    print("\ndetection\n" + format_det_report(result["detection"]))
    print(f"wrote {args.out / 'report.md'}")
    return 0


# ---------------------------------------------------------------------- det

_DET_FLAGS = {
    "model": "model",
    "epochs": "epochs",
    "device": "device",
    "batch_size": "batch_size",
    "lr": "lr",
    "min_size": "min_size",
    "max_size": "max_size",
    "weights": "weights",
    "weights_backbone": "weights_backbone",
    "seed": "seed",
    "optimizer": "optimizer",
    "hflip": "hflip",
    "vflip": "vflip",
    "warmup_steps": "warmup_steps",
    "anchor_sizes": "anchor_sizes",
    "rois_per_image": "rois_per_image",
    "box_loss": "box_loss",
    "cls_loss": "cls_loss",
}


def _det_config(args):
    """A fresh run: the flags over DetConfig's defaults; a resumed run: the saved config with
    epochs and device from the command line."""
    from .engine.checkpoint import load_checkpoint
    from .engine.det import DetConfig

    given = {f: getattr(args, a) for a, f in _DET_FLAGS.items() if getattr(args, a) is not None}
    if args.resume:
        saved = load_checkpoint(args.out / "last.pt")["config"]
        keep = {k: given[k] for k in ("epochs", "device") if k in given}
        return DetConfig.from_dict({**saved, **keep, "progress": not args.no_progress})
    missing = [f"--{n}" for n in ("data", "layout", "model") if getattr(args, n) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (unless --resume)")
    extra = {"data": str(args.data.resolve()), "layout": args.layout}
    return DetConfig(
        **given,
        hist_eq=args.hist_eq,
        amp=not args.no_amp,
        progress=not args.no_progress,
        extra=extra,
    )


def _train_det(args) -> int:
    from .engine.det import open_det_dataset, train_detection

    return _train(
        "det",
        args,
        _det_config,
        lambda c: _split_sets(open_det_dataset, c),
        train_detection,
        lambda r: (
            f"loss {r['loss']:.4f}, val mAP {r['val_map']:.3f}, "
            f"val AP50 {r['val_map_50']:.3f}, val RSNA {r['val_rsna']:.3f}"
        ),
    )


def _predict_det(args) -> int:
    import csv

    from .engine import resolve_device
    from .engine.det import draw_boxes, load_detector, predict_detections, prepare_image
    from .engine.inference import input_files, read_input

    try:
        device = resolve_device(args.device)
        model, config = load_detector(args.checkpoint, device)
        files = input_files(args.inputs)
    except (ValueError, FileNotFoundError) as e:
        return _fail("predict det", e)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            kind, image, _ = read_input(path)
            if kind != "image":
                raise ValueError(f"{path}: a volume; predict det takes 2-D images")
        except (ValueError, FileNotFoundError, OSError) as e:
            return _fail("predict det", e)
        pred = predict_detections(model, [prepare_image(image, config)], device)[0]
        keep = pred["scores"] >= args.score_threshold
        pred = {k: v[keep] for k, v in pred.items()}
        stem = path.name.split(".")[0]
        with open(args.out / f"{stem}_boxes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "x1", "y1", "x2", "y2", "score", "label"])
            for b, sc, lab in zip(
                pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()
            ):
                w.writerow([stem, *(f"{v:.1f}" for v in b), f"{sc:.4f}", lab])
        png = draw_boxes(args.out / f"{stem}_boxes.png", image, pred)
        print(f"{path} -> {len(pred['boxes'])} boxes, {args.out / (stem + '_boxes.csv')}, {png}")
    return 0


def _evaluate_det(args) -> int:
    from .engine import resolve_device
    from .engine.det import evaluate_detection, format_det_report, load_detector, open_det_dataset

    try:
        device = resolve_device(args.device)
        model, config = load_detector(args.checkpoint, device)
        split = None if args.split == "all" else args.split
        data = open_det_dataset(
            args.layout, args.data, split, seed=config.seed, val_fraction=config.val_fraction
        )
    except (ValueError, FileNotFoundError) as e:
        return _fail("evaluate det", e)
    if len(data) == 0:
        return _fail("evaluate det", ValueError(f"no images in {args.data} ({args.split})"))
    figures = args.figures or (args.json.parent if args.json else None)  # never the cwd unasked
    result = evaluate_detection(
        model, config, data, device, args.score_threshold, figures, args.max_figures
    )
    print(format_det_report(result))
    if result.get("pr_curve"):
        print(f"wrote {result['pr_curve']}")
    if args.json:
        _write_json(args.json, result)
    return 0


def _add_train_det(kinds) -> None:
    from .engine.det import DET_LAYOUTS, DET_MODELS

    s = kinds.add_parser("det", help="train a Faster R-CNN detector")
    s.add_argument("--data", type=Path, help="dataset folder")
    s.add_argument("--layout", choices=DET_LAYOUTS)
    s.add_argument("--model", choices=DET_MODELS)
    s.add_argument("--out", type=Path, required=True, help="run folder")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument("--epochs", type=int)
    s.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--lr", type=float, help="learning rate (default 1e-3, / 10 every 20 epochs)")
    s.add_argument("--optimizer", choices=["sgd", "adam"])
    s.add_argument(
        "--warmup-steps",
        type=int,
        metavar="N",
        help="linear lr warmup from lr / 1000 over the first N steps (default 0)",
    )
    s.add_argument(
        "--hflip",
        type=float,
        metavar="P",
        help="probability of a left-right flip of each training image (default 0)",
    )
    s.add_argument(
        "--anchor-sizes",
        type=float,
        nargs="+",
        metavar="PX",
        help="RPN anchor side per FPN level (5 values; vgg16: 1, scaling its 128/256/512)",
    )
    s.add_argument(
        "--box-loss",
        choices=["smooth_l1", "l1"],
        help="box regression loss of both heads (default smooth_l1)",
    )
    s.add_argument(
        "--cls-loss",
        choices=["ce", "focal"],
        help="classification loss of both heads (default ce; focal: gamma 2)",
    )
    s.add_argument(
        "--rois-per-image",
        type=int,
        metavar="N",
        help="RoIs sampled per training image (default: the model's, 128 or 512)",
    )
    s.add_argument(
        "--vflip",
        type=float,
        metavar="P",
        help="probability of a top-bottom flip of each training image (default 0)",
    )
    s.add_argument("--min-size", type=int, help="shorter image side in the model (default 600)")
    s.add_argument("--max-size", type=int, help="longest image side in the model (default 1000)")
    s.add_argument("--weights", help="detector state_dict file to start from")
    s.add_argument("--weights-backbone", help="torchvision classification state_dict (backbone)")
    s.add_argument("--seed", type=int)
    s.add_argument("--hist-eq", action="store_true", help="histogram equalization of the inputs")
    s.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(fn=_train_det)


def _add_det_inference(predict, evaluate) -> None:
    from .engine.det import DET_LAYOUTS

    s = predict.add_parser("det", help="boxes (CSV and PNG) for PNG/TIFF/DICOM images")
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--score-threshold", type=float, default=0.5)
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=_predict_det)
    s = evaluate.add_parser("det", help="RSNA score, COCO AP, AP50, TP/FP/FN, PR curve")
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--layout", required=True, choices=DET_LAYOUTS)
    s.add_argument("--split", choices=["all", "val", "train"], default="all")
    s.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="detections counted in TP/FP/FN (AP uses all)",
    )
    s.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
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
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=_evaluate_det)


def _add_train(sub) -> None:
    from .engine.config import GAN_MODES, LOSSES, MODELS, OPTIMIZERS

    kinds = sub.add_parser("train", help="train a model").add_subparsers(dest="kind", required=True)
    _add_train_det(kinds)
    s = kinds.add_parser("seg", help="train a segmentation model (U-Net, FPN, U-Net+GAN)")
    s.add_argument("--data", type=Path, help="dataset folder")
    s.add_argument(
        "--layout",
        choices=["dsb2018", "folders", "mri", "rsna"],
        help="on-disk layout (rsna has no masks: use train det)",
    )
    s.add_argument("--model", choices=MODELS)
    s.add_argument("--out", type=Path, required=True, help="run folder")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument("--epochs", type=int)
    s.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--lr", type=float, help="learning rate (default 0.01)")
    s.add_argument("--optimizer", choices=OPTIMIZERS)
    s.add_argument("--step-size", type=int, help="epochs between lr halvings (default 10)")
    s.add_argument("--loss", choices=LOSSES)
    s.add_argument("--size", type=int, help="training image side (default 256)")
    s.add_argument("--depth", type=int, help="U-Net poolings (default 4)")
    s.add_argument("--width", type=int, help="U-Net first-level channels (default 64)")
    s.add_argument("--encoder-weights", help="torchvision-format ResNet state_dict file (fpn_*)")
    s.add_argument("--seed", type=int)
    s.add_argument("--workers", type=int, help="data loader processes (default 0)")
    s.add_argument("--val-fraction", type=float, help="share of images for validation (0.2)")
    s.add_argument("--gan-mode", choices=GAN_MODES, help="U-Net+GAN schedule")
    s.add_argument("--gan-lambda", type=float)
    s.add_argument("--d-lr", type=float, help="discriminator learning rate")
    s.add_argument("--init-checkpoint", help="U-Net checkpoint to start the generator from")
    s.add_argument("--rgb", action="store_true", help="3 colour channels instead of grey")
    s.add_argument("--plane", default="transverse", choices=["transverse", "coronal", "sagittal"])
    s.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    s.add_argument("--gamma", type=float, help="lr factor every --step-size epochs (default 0.5)")
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--d-width", type=int, help="discriminator first-layer channels (unet_gan)")
    s.add_argument("--no-hflip", action="store_true", help="no random left-right flips")
    s.add_argument("--no-vflip", action="store_true", help="no random top-bottom flips")
    s.add_argument(
        "--no-resize",
        action="store_true",
        help="crop --size windows at the original scale (no shorter-side resize)",
    )
    s.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels (cuDNN): bit-reproducible on CUDA, slower",
    )
    s.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(fn=_train_seg)


def _add_inference(sub) -> None:
    predict = sub.add_parser("predict", help="predict masks or boxes").add_subparsers(
        dest="kind", required=True
    )
    evaluate = sub.add_parser("evaluate", help="score a model").add_subparsers(
        dest="kind", required=True
    )
    _add_det_inference(predict, evaluate)
    kinds = predict
    s = kinds.add_parser("seg", help="masks for PNG/TIFF/DICOM files or DICOM series folders")
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument("inputs", nargs="+", type=Path, help="files, series folders or image folders")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    _inference_flags(s)
    s.add_argument("--min-size", type=int, default=16, help="post-processing: smallest object")
    s.set_defaults(fn=_predict_seg)
    kinds = evaluate
    s = kinds.add_parser(
        "seg",
        help="IoU, Dice, sensitivity, specificity (and DSB score) beside the classical baseline",
    )
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--layout", required=True, choices=["dsb2018", "folders", "mri"])
    s.add_argument(
        "--split",
        choices=["all", "val", "train"],
        default="all",
        help="the training run's split to score (default all images)",
    )
    s.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    s.add_argument("--figures", type=Path, metavar="DIR", help="write contour overlays")
    s.add_argument("--no-classical", action="store_true", help="skip the classical baseline")
    _inference_flags(s)
    s.set_defaults(fn=_evaluate_seg)


def _inference_flags(s) -> None:
    s.add_argument("--device", default="auto")
    s.add_argument(
        "--post-process", action="store_true", help="remove small objects and fill holes"
    )
    s.add_argument(
        "--tile",
        type=int,
        help="sliding-window side (default: the training size; 0: whole image at once)",
    )
    s.add_argument("--overlap", type=int, help="pixels between windows (default tile // 4)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fastdet", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("info", help="build, backends, devices")
    s.add_argument("--json", action="store_true", help="print the build info as JSON")
    s.set_defaults(fn=_info)
    s = sub.add_parser("bench", help="time fastdet's ops against torchvision (and numba)")
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    s.add_argument("--full", action="store_true", help="every case, not the quick set")
    s.add_argument("--only", metavar="TEXT", help="only cases whose name contains TEXT")
    s.add_argument(
        "--kind",
        choices=["all", "ops", "models"],
        default="all",
        help="the ops' cases, the models' (segmentation, detection) or all",
    )
    s.add_argument(
        "--json",
        metavar="PATH",
        type=Path,
        help="where to write the figures as JSON (default benchmarks/results/"
        "<device>-<UTC time>.json; - for none)",
    )
    s.set_defaults(fn=_bench)
    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    s = data.add_parser("synth", help="write a small synthetic dataset in a real dataset's layout")
    s.add_argument("kind", choices=["rsna", "dsb2018", "mri"])
    s.add_argument("out", type=Path, help="output folder")
    s.add_argument("--n", type=int, default=None, help="images (rsna, dsb2018) or subjects (mri)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_synth)
    _add_train(sub)
    _add_inference(sub)
    s = sub.add_parser("demo", help="synthetic data -> train -> evaluate -> report (CPU, minutes)")
    s.add_argument("--out", type=Path, default=Path("fastdet-demo"), help="output folder (new)")
    s.add_argument("--quick", action="store_true", help="seconds instead of minutes (a smoke run)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(fn=_demo)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
