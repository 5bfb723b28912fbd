"""The `fastdet` command: info, bench, data synth, export, demo, and each registered task's
train / predict / evaluate (engine.tasks: the task packages own their commands)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ._info import build_info
from .apps.demo import SMOKE, run_demo
from .bench import cases_for, run_cases, write_json
from .bench.cases import KINDS as BENCH_KINDS
from .bench.runner import (
    bandwidth_lines,
    copy_bandwidth,
    default_json_path,
    machine,
    table,
    throughput_lines,
)
from .data.synthetic import KINDS, synth
from .engine import tasks
from .engine.checkpoint import load_checkpoint
from .engine.loading import model_from
from .engine.tasks.cls.evaluate import format_cls_report
from .engine.tasks.det.evaluate import format_det_report, format_instance_report
from .engine.tasks.det.point import permissive, stored_point
from .engine.tasks.seg.evaluate import format_report
from .export import FORMATS, export_model


def _info(args) -> int:
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
    if args.n is not None and args.n < 1:
        print(f"fastdet data synth: --n must be >= 1, got {args.n}", file=sys.stderr)
        return 2
    out = synth(
        args.kind, args.out, n=args.n, seed=args.seed, lookalikes=args.lookalikes, size=args.size
    )
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


def _export(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)  # read once: the model and a detector's point
    model, config = model_from(
        tasks.checkpoint_task(ckpt, args.checkpoint), ckpt, "cpu", False, False
    )
    point = None if args.raw else stored_point(ckpt)  # only Faster R-CNN checkpoints hold one
    if point is not None:
        permissive(model)
        point = point.as_dict()
    out = export_model(model, args.out, args.format, args.image_size, config, point)
    print(f"wrote {out}" + (" (at the checkpoint's operating point)" if point else ""))
    return 0


def _demo(args) -> int:
    if args.out.exists() and any(args.out.iterdir()):
        raise FileExistsError(f"{args.out} is not empty; name a new folder")
    result = run_demo(args.out, quick=args.quick, progress=not args.no_progress)
    if args.quick:
        print(f"fastdet demo --quick: {SMOKE}\n")
    print("segmentation\n" + format_report(result["segmentation"]))
    print("\ndetection\n" + format_det_report(result["detection"]))
    chest = result["chest"]
    print("\nchest: lung-cropped classifier\n" + format_cls_report(chest["classifier"]))
    print("\nchest: gated detection\n" + format_det_report(chest["detection"]))
    print("\ninstances\n" + format_instance_report(result["instances"]["instances"]))
    print(f"wrote {args.out / 'report.md'}")
    return 0


def _merge(args) -> int:
    for path in tasks.merge_run(args.out):
        print(f"wrote {path}")
    return 0


def _add_tasks(sub) -> None:
    """train / predict / evaluate, each with one subcommand per registered task."""
    words = {
        "train": "train a model",
        "predict": "predict masks, boxes or classes",
        "evaluate": "score a model",
        "tune": "choose a model's operating point on a validation split",
    }
    groups = [
        sub.add_parser(w, help=h).add_subparsers(dest="kind", required=True)
        for w, h in words.items()
    ]
    for package in tasks.PACKAGES:
        package.add_commands(*groups)


def build_parser() -> argparse.ArgumentParser:
    """The `fastdet` command's parser (each subcommand's handler in its `fn` default)."""
    p = argparse.ArgumentParser(
        prog="fastdet",
        description="fastdet: fast detection and segmentation for biomedical images.",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("info", help="build, backends, devices")
    s.add_argument("--json", action="store_true", help="print the build info as JSON")
    s.set_defaults(fn=_info)
    s = sub.add_parser(
        "bench", help="time fastdet's ops and models against torchvision (and numba)"
    )
    s.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where to time (default cpu)"
    )
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
    data = sub.add_parser(
        "data", help="synthetic datasets in the real datasets' layouts"
    ).add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="write a small synthetic dataset in a real dataset's layout")
    s.add_argument("kind", choices=KINDS, help="the dataset whose layout to write")
    s.add_argument("out", type=Path, help="output folder")
    s.add_argument("--n", type=int, default=None, help="images (rsna, dsb2018) or subjects (mri)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument(
        "--size",
        type=int,
        metavar="PX",
        help="image side (rsna: default 256, dsb2018: 128) or in-plane side (mri: 64), >= 32",
    )
    s.add_argument(
        "--lookalikes",
        action="store_true",
        help="rsna: 'No Lung Opacity / Not Normal' images carry non-pneumonia findings (mass, "
        "effusion, enlarged heart, haze) that fool a box detector; 'Normal' stays clean",
    )
    s.set_defaults(fn=_synth)
    _add_tasks(sub)
    s = sub.add_parser(
        "merge", help="write a prediction run's final files from its parts (after a failure)"
    )
    s.add_argument("out", type=Path, help="the run's --out folder")
    s.set_defaults(fn=_merge)
    s = sub.add_parser(
        "export",
        help="a checkpoint to ONNX (onnxruntime, no fastdet needed) or a torch.export .pt2",
    )
    s.add_argument(
        "--checkpoint", type=Path, required=True, help="a training run's checkpoint (any task)"
    )
    s.add_argument(
        "--format",
        choices=FORMATS,
        required=True,
        help="onnx: runs in onnxruntime without fastdet; pt2: a torch.export program",
    )
    s.add_argument("--out", type=Path, required=True, help="file to write")
    s.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="the example input's size; detection graphs are fixed to it (default: min-size "
        "square; segmentation: the training size)",
    )
    s.add_argument(
        "--raw",
        action="store_true",
        help="detection: the model as configured, without the checkpoint's operating point",
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
