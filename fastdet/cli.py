"""The `fastdet` command: info, bench, data synth, train / predict / evaluate {seg, det, cls},
export, demo.

The training flags are made from the task's config fields (engine.config.setting): a field's
help, choices and default are its flag's, so a new setting gets its flag by being declared."""

from __future__ import annotations

import argparse
import dataclasses
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
    cases = cases_for(args.device, args.full, args.only, args.kind, skip=args.skip)
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
    out = synth(args.kind, args.out, n=args.n, seed=args.seed, lookalikes=args.lookalikes)
    print(f"wrote a synthetic {args.kind} dataset to {out}")
    return 0


def _fail(command: str, error: BaseException) -> int:
    """One or two lines on stderr naming what is wrong; exit status 2."""
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"  # not "[Errno 20] ..."
    else:
        text = str(error) or type(error).__name__
    expected = (ValueError, OSError, FloatingPointError, RuntimeError, KeyError)
    hint = "" if isinstance(error, expected) else "\n(an internal error: --debug shows where)"
    print(f"fastdet {command}: {text}{hint}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- train


def _task_cli() -> dict:
    """Per task: the layouts `train` accepts, and how a run's datasets are opened."""
    from .engine.cls_data import CLS_LAYOUTS, open_cls_dataset
    from .engine.det_data import DET_LAYOUTS, open_det_dataset
    from .engine.seg_data import SEG_LAYOUTS, open_seg_dataset

    def seg_sets(layout, root, split, config):
        x = config.extra
        kw = dict(rgb=x.get("rgb", False), plane=x.get("plane", "transverse"))
        return open_seg_dataset(layout, root, split, config.seed, config.val_fraction, **kw)

    def det_sets(layout, root, split, config):
        return open_det_dataset(layout, root, split, config.seed, config.val_fraction)

    def cls_sets(layout, root, split, config):
        rgb = config.extra.get("rgb", False)
        return open_cls_dataset(layout, root, split, config.seed, config.val_fraction, rgb)

    return {  # rsna is listed for seg so that choosing it says to use `train det`
        "seg": (SEG_LAYOUTS + ("rsna",), seg_sets),
        "det": (DET_LAYOUTS, det_sets),
        "cls": (CLS_LAYOUTS, cls_sets),
    }


def _field_type(f):
    """The argparse type of a config field (annotations are strings: "int | None", ...)."""
    if "type" in f.metadata:
        return f.metadata["type"]
    name = str(f.type).replace(" | None", "").strip()
    return {"int": int, "float": float, "str": str, "bool": bool}[name]


def add_config_flags(parser, config_class) -> None:
    """One flag per user-facing field of config_class: --name (a bool defaulting to True: its
    --no-name switch), plus the field's aliases and extra switches. Unset flags stay None, so
    only the flags given override a default or a resumed run's saved config."""
    from .engine.config import cli_fields

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
            help=md["help"] + ("" if default is None else f" (default {default})"),
        )
        for switch, value, words in md.get("switches", ()):
            parser.add_argument(
                f"--{switch}", dest=f.name, action="store_const", const=value, help=words
            )


def _config(task, args):
    """A fresh run: the flags given over the config's defaults (--data, --layout, --model
    required). A resumed run: the saved config with the flags given over it (the trainer
    refuses changes other than engine.config.RESUMABLE_CHANGES)."""
    from .engine.checkpoint import load_checkpoint
    from .engine.config import cli_fields

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


def _train(args) -> int:
    """`train <task>`: config, datasets (split by val_fraction), training, a line per epoch."""
    from .engine import TASKS, train

    task = TASKS[args.kind]
    _, open_sets = _task_cli()[args.kind]
    config = _config(task, args)
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
    main = _is_rank0()  # under torchrun every process runs this; one report is enough
    if main:
        n_val = len(val_set) if val_set else 0
        print(
            f"training {config.model} on {len(train_set)} images ({n_val} for validation), "
            f"{config.epochs} epochs -> {args.out}",
            file=sys.stderr,
        )
    history = train(config, train_set, val_set, args.out, resume=args.resume)
    if main:
        for row in history:
            print(f"epoch {row['epoch']}: {task(config).epoch_line(row)}")
        print(f"wrote {args.out}/last.pt, best.pt, metrics.csv, metrics.png")
    return 0


def _loaded(args, task: str):
    """(device, eval-mode model, config) of --checkpoint, which must be a `task` checkpoint."""
    from .engine import load_model, resolve_device

    device = resolve_device(args.device)
    return (device, *load_model(args.checkpoint, device, task=task, **_speed(args)))


def _speed(args) -> dict:
    """load_model's speed options from --bf16 and --channels-last."""
    return {"bf16": args.bf16, "channels_last": args.channels_last}


def _is_rank0() -> bool:
    """False in the processes torchrun started with RANK > 0 (True without torchrun)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def _add_train(sub) -> None:
    from .data.datasets import PLANES
    from .engine import TASKS

    kinds = sub.add_parser("train", help="train a model").add_subparsers(dest="kind", required=True)
    for name, (layouts, _) in _task_cli().items():
        task = TASKS[name]
        s = kinds.add_parser(name, help=task.description)
        s.add_argument("--data", type=Path, help="dataset folder")
        s.add_argument("--layout", choices=layouts, help="on-disk layout of --data")
        s.add_argument("--out", type=Path, required=True, help="run folder")
        s.add_argument("--resume", action="store_true", help="continue the run in --out")
        add_config_flags(s, task.config_class)
        if name == "seg":  # how the datasets read the images (kept in the config's extra)
            s.add_argument("--rgb", action="store_true", help="3 colour channels instead of grey")
            s.add_argument("--plane", default="transverse", choices=PLANES, help="MRI slices")
        if name == "cls":
            s.add_argument(
                "--rgb", action="store_true", help="classes layout: 3 colour channels, not grey"
            )
        s.set_defaults(fn=_train)


# ---------------------------------------------------------------------- predict, evaluate


def _predict_seg(args) -> int:
    from .engine.inference import (
        input_files,
        predict_mask,
        read_input,
        write_png_mask,
        write_volume_mask,
    )

    device, model, config = _loaded(args, "seg")
    tile = config.size if args.tile is None else args.tile
    overlap = tile // 4 if args.overlap is None else args.overlap
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
            import numpy as np
            import torch

            masks = np.stack([predict_mask(model, torch.from_numpy(s[None]), **opts) for s in data])
            out = write_volume_mask(args.out / f"{stem}_mask", masks, meta.get("spacing"))
        print(f"{path} -> {out}")
    return 0


def _evaluate_seg(args) -> int:
    from .engine.seg_data import open_seg_dataset
    from .engine.seg_eval import evaluate_segmentation, format_report

    device, model, config = _loaded(args, "seg")
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
    if len(data) == 0:
        raise ValueError(f"no images in {args.data} ({args.split})")
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
    from .engine.logging import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
    print(f"wrote {path}")


def _export(args) -> int:
    from .engine import load_model
    from .export import export_model

    model, config = load_model(args.checkpoint, "cpu")
    out = export_model(model, args.out, args.format, args.image_size, config)
    print(f"wrote {out}")
    return 0


def _demo(args) -> int:
    from .engine.cls_eval import format_cls_report
    from .engine.demo import run_demo
    from .engine.det_eval import format_det_report, format_instance_report
    from .engine.seg_eval import format_report

    if args.out.exists() and any(args.out.iterdir()):
        raise FileExistsError(f"{args.out} is not empty; name a new folder")
    result = run_demo(args.out, quick=args.quick, progress=not args.no_progress)
    print("segmentation\n" + format_report(result["segmentation"]))
    print("\ndetection\n" + format_det_report(result["detection"]))
    chest = result["chest"]
    print("\nchest: lung-cropped classifier\n" + format_cls_report(chest["classifier"]))
    print("\nchest: gated detection\n" + format_det_report(chest["detection"]))
    print("\ninstances\n" + format_instance_report(result["instances"]["instances"]))
    print(f"wrote {args.out / 'report.md'}")
    return 0


def _predict_det(args) -> int:
    import csv

    from .engine import predict_detections
    from .engine.det_data import prepare_image
    from .engine.inference import input_files, read_input
    from .metrics import draw_boxes

    device, model, config = _loaded(args, "det")
    members, tta = _fusion_members(args, device, model, config)
    gate, gated = _gate(args, device), []
    files = input_files(args.inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in files:
        kind, image, _ = read_input(path)
        if kind != "image":
            raise ValueError(f"{path}: a volume; predict det takes 2-D images")
        if members is not None:
            from .engine.ensemble import predict_fused

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
        with open(args.out / f"{stem}_boxes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "x1", "y1", "x2", "y2", "score", "label"])
            for b, sc, lab in zip(
                pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()
            ):
                w.writerow([stem, *(f"{v:.1f}" for v in b), f"{sc:.4f}", lab])
        png = draw_boxes(args.out / f"{stem}_boxes.png", image, pred)
        print(f"{path} -> {len(pred['boxes'])} boxes, {args.out / (stem + '_boxes.csv')}, {png}")
        if "masks" in pred:
            _write_instances(args.out / stem, image, pred, config, args.label_format)
    if gate is not None:
        _write_gate_csv(args.out / "gate.csv", gate, gated)
    return 0


def _fusion_members(args, device, model, config):
    """([(model, config), ...] of --checkpoint and --ensemble, TTA words) when --tta or
    --ensemble is given, else (None, ())."""
    from .engine.ensemble import check_members, parse_tta

    tta = parse_tta(args.tta)
    if not tta and not args.ensemble:
        return None, ()
    from .engine import load_model

    members = [(model, config)]
    for path in args.ensemble or ():
        members.append(load_model(path, device, task="det", **_speed(args)))
    check_members(members)
    return members, tta


def _gate(args, device):
    """The engine.gate.Gate of --gate / --gate-threshold, or None."""
    if getattr(args, "gate", None) is None:
        if getattr(args, "gate_threshold", None) is not None:
            raise ValueError("--gate-threshold needs --gate CLS_CKPT")
        return None
    from .engine.gate import load_gate

    gate = load_gate(args.gate, device, args.gate_threshold, **_speed(args))
    print(
        f"gate: {args.gate}, boxes kept where P({gate.config.positive}) >= "
        f"{gate.threshold:.4f} ({gate.threshold_source})"
    )
    return gate


def _gate_image(gate, pred: dict, image, device, path, rows: list) -> dict:
    """pred with its boxes dropped when the gate judges the image negative; a row for gate.csv."""
    from .engine.gate import apply_gate, gate_keeps

    p = gate.probability(image, device)
    rows.append((str(path), p, gate_keeps(p, gate.threshold), len(pred["boxes"])))
    if not rows[-1][2]:
        print(f"{path}: P({gate.config.positive}) {p:.4f} < {gate.threshold:.4f}, boxes dropped")
    return apply_gate(pred, p, gate.threshold)


def _write_gate_csv(path: Path, gate, rows: list) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", f"P({gate.config.positive})", "threshold", "kept", "boxes_before"])
        for name, p, kept, n in rows:
            w.writerow([name, f"{p:.6f}", f"{gate.threshold:.6f}", int(kept), n])
    print(f"wrote {path}")


def _write_instances(base: Path, image, pred: dict, config, fmt: str) -> None:
    """<stem>_instances.png|.tif (uint16 label image of the detections >= the config's
    instance_score) and <stem>_instances_overlay.png."""
    import numpy as np
    import tifffile
    from PIL import Image

    from .engine.det import instance_outputs
    from .metrics import save_instance_overlay

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


def _evaluate_det(args) -> int:
    from .engine.det_data import open_det_dataset
    from .engine.det_eval import evaluate_detection, format_det_report

    device, model, config = _loaded(args, "det")
    members, tta = _fusion_members(args, device, model, config)
    split = None if args.split == "all" else args.split
    data = open_det_dataset(
        args.layout, args.data, split, seed=config.seed, val_fraction=config.val_fraction
    )
    if len(data) == 0:
        raise ValueError(f"no images in {args.data} ({args.split})")
    figures = args.figures or (args.json.parent if args.json else None)  # never the cwd unasked
    unet = None
    if args.unet is not None:
        from .engine import load_model

        unet = load_model(args.unet, device, task="seg", **_speed(args))
    gate = _gate(args, device)
    result = evaluate_detection(
        model,
        config,
        data,
        device,
        args.score_threshold,
        figures,
        args.max_figures,
        unet=unet,
        classical=args.classical,
        ensemble=members[1:] if members else (),
        tta=tta,
        fuse=args.fuse,
        fuse_iou=args.fuse_iou,
        fuse_skip=args.fuse_skip,
        gate=gate,
    )
    for m, path in zip(result.get("members", ()), [args.checkpoint, *(args.ensemble or ())]):
        m["checkpoint"] = str(path)
    print(format_det_report(result))
    if result.get("pr_curve"):
        print(f"wrote {result['pr_curve']}")
    if args.json:
        _write_json(args.json, result)
    return 0


def _predict_cls(args) -> int:
    """`predict cls`: predictions.csv (path, predicted class, P per class) in --out."""
    import csv

    from .engine.cls import load_classifier, predict_probabilities
    from .engine.inference import input_files, read_input
    from .engine.trainer import resolve_device

    device = resolve_device(args.device)
    model, config, threshold = load_classifier(args.checkpoint, device, **_speed(args))
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


def _evaluate_cls(args) -> int:
    from .engine.cls import load_classifier
    from .engine.cls_data import open_cls_dataset
    from .engine.cls_eval import evaluate_classification, format_cls_report
    from .engine.trainer import resolve_device

    device = resolve_device(args.device)
    model, config, threshold = load_classifier(args.checkpoint, device, **_speed(args))
    split = None if args.split == "all" else args.split
    data = open_cls_dataset(
        args.layout,
        args.data,
        split,
        seed=config.seed,
        val_fraction=config.val_fraction,
        rgb=config.extra.get("rgb", False),
    )
    if len(data) == 0:
        raise ValueError(f"no images in {args.data} ({args.split})")
    figures = args.figures or (args.json.parent if args.json else None)  # never the cwd unasked
    result = evaluate_classification(
        model, config, data, device, figures, threshold, args.batch_size
    )
    print(format_cls_report(result))
    for path in result.get("files", {}).values():
        print(f"wrote {path}")
    if args.json:
        _write_json(args.json, result)
    return 0


def _add_inference(sub) -> None:
    from .engine.cls_data import CLS_LAYOUTS
    from .engine.det_data import DET_LAYOUTS
    from .engine.seg_data import SEG_LAYOUTS

    predict = sub.add_parser("predict", help="predict masks, boxes or classes").add_subparsers(
        dest="kind", required=True
    )
    evaluate = sub.add_parser("evaluate", help="score a model").add_subparsers(
        dest="kind", required=True
    )
    s = predict.add_parser("seg", help="masks for PNG/TIFF/DICOM files or DICOM series folders")
    _input_flags(s, "files, series folders or image folders")
    _inference_flags(s)
    s.add_argument("--min-size", type=int, default=16, help="post-processing: smallest object")
    s.set_defaults(fn=_predict_seg)
    s = predict.add_parser(
        "det",
        help="boxes (CSV and PNG) for PNG/TIFF/DICOM images; Mask R-CNN also a uint16 instance "
        "label image and its overlay",
    )
    _input_flags(s, "image files or folders")
    s.add_argument("--score-threshold", type=float, default=0.5)
    s.add_argument(
        "--label-format",
        choices=("png", "tif"),
        default="png",
        help="Mask R-CNN's instance label images: 16-bit PNG or TIFF",
    )
    _gate_flags(s)
    _device_flags(s)
    _fusion_flags(s)
    s.set_defaults(fn=_predict_det)
    s = evaluate.add_parser(
        "seg",
        help="IoU, Dice, sensitivity, specificity (and DSB score) beside the classical baseline",
    )
    _evaluate_flags(s, SEG_LAYOUTS)
    s.add_argument("--figures", type=Path, metavar="DIR", help="write contour overlays")
    s.add_argument("--no-classical", action="store_true", help="skip the classical baseline")
    _inference_flags(s)
    s.set_defaults(fn=_evaluate_seg)
    s = evaluate.add_parser("det", help="RSNA score, COCO AP, AP50, TP/FP/FN, PR curve")
    _evaluate_flags(s, DET_LAYOUTS)
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
    _gate_flags(s)
    _device_flags(s)
    _fusion_flags(s)
    s.set_defaults(fn=_evaluate_det)
    s = predict.add_parser("cls", help="class probabilities (CSV) for PNG/TIFF/DICOM images")
    _input_flags(s, "image files or folders")
    s.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    _device_flags(s)
    s.set_defaults(fn=_predict_cls)
    s = evaluate.add_parser(
        "cls",
        help="accuracy, balanced accuracy, per-class sensitivity/specificity/precision, ROC AUC, "
        "confusion matrix",
    )
    _evaluate_flags(s, CLS_LAYOUTS)
    s.add_argument(
        "--figures",
        type=Path,
        metavar="DIR",
        help="folder for confusion_matrix.csv/.png, roc.png and predictions.csv "
        "(default: the --json folder; none without either)",
    )
    s.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    _device_flags(s)
    s.set_defaults(fn=_evaluate_cls)


def _fusion_flags(s) -> None:
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
        choices=("wbf", "nms", "soft_nms"),
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


def _input_flags(s, what: str) -> None:
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument("inputs", nargs="+", type=Path, help=what)
    s.add_argument("--out", type=Path, required=True, help="output folder")


def _gate_flags(s) -> None:
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


def _evaluate_flags(s, layouts) -> None:
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--layout", required=True, choices=layouts)
    s.add_argument(
        "--split",
        choices=["all", "val", "train"],
        default="all",
        help="the training run's split to score (default all images)",
    )
    s.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")


def _device_flags(s) -> None:
    s.add_argument("--device", default="auto")
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


def _inference_flags(s) -> None:
    _device_flags(s)
    s.add_argument(
        "--post-process", action="store_true", help="remove small objects and fill holes"
    )
    s.add_argument(
        "--tile",
        type=int,
        help="sliding-window side (default: the training size; 0: whole image at once)",
    )
    s.add_argument("--overlap", type=int, help="pixels between windows (default tile // 4)")


def build_parser() -> argparse.ArgumentParser:
    """The `fastdet` command's parser (each subcommand's handler in its `fn` default)."""
    from .bench.cases import KINDS as BENCH_KINDS
    from .data.synthetic import KINDS

    p = argparse.ArgumentParser(
        prog="fastdet",
        description="fastdet: fast detection and segmentation for biomedical images.",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("info", help="build, backends, devices")
    s.add_argument("--json", action="store_true", help="print the build info as JSON")
    s.set_defaults(fn=_info)
    s = sub.add_parser("bench", help="time fastdet's ops against torchvision (and numba)")
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    s.add_argument("--full", action="store_true", help="every case, not the quick set")
    s.add_argument(
        "--only",
        metavar="TEXT",
        help="only cases whose name contains TEXT (comma-separated: any of them)",
    )
    s.add_argument(
        "--skip",
        metavar="TEXT",
        help="leave out cases whose name contains TEXT (comma-separated: any of them)",
    )
    s.add_argument(
        "--kind",
        choices=BENCH_KINDS,
        default="all",
        help="the ops' cases, the models' (segmentation, detection, classification) or all",
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
    s.add_argument("kind", choices=KINDS)
    s.add_argument("out", type=Path, help="output folder")
    s.add_argument("--n", type=int, default=None, help="images (rsna, dsb2018) or subjects (mri)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--lookalikes",
        action="store_true",
        help="rsna: 'No Lung Opacity / Not Normal' images carry non-pneumonia findings (mass, "
        "effusion, enlarged heart, haze) that fool a box detector; 'Normal' stays clean",
    )
    s.set_defaults(fn=_synth)
    _add_train(sub)
    _add_inference(sub)
    s = sub.add_parser(
        "export",
        help="a checkpoint to ONNX (onnxruntime, no fastdet needed) or a torch.export .pt2",
    )
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument("--format", choices=("onnx", "pt2"), required=True)
    s.add_argument("--out", type=Path, required=True, help="file to write")
    s.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="the example input's size; detection graphs are fixed to it (default: min-size "
        "square; segmentation: the training size)",
    )
    s.set_defaults(fn=_export)
    s = sub.add_parser("demo", help="synthetic data -> train -> evaluate -> report (CPU, minutes)")
    s.add_argument("--out", type=Path, default=Path("fastdet-demo"), help="output folder (new)")
    s.add_argument("--quick", action="store_true", help="seconds instead of minutes (a smoke run)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(fn=_demo)
    return p


def main(argv=None) -> int:
    """Runs a command; a failure prints one or two lines and returns 2 (--debug: the traceback)."""
    args = build_parser().parse_args(argv)
    command = " ".join(str(getattr(args, k)) for k in ("command", "kind") if getattr(args, k, None))
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"fastdet {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        return _fail(command, e)


if __name__ == "__main__":
    sys.exit(main())
