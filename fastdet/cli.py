"""The `fastdet` command. Subcommands: info, bench, data synth (train, predict, evaluate and demo
arrive with the model layer)."""
from __future__ import annotations

import argparse
import json
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
                print(f"gpu {g['index']}: {g['name']} (sm_{g['capability'].replace('.', '')}, {g['memory_gib']} GiB)")
        else:
            print(f"{k}: {', '.join(v) if isinstance(v, list) else v}")
    return 0


def _bench(args) -> int:
    import torch
    from tqdm import tqdm

    from .bench import cases_for, run_cases, write_json
    from .bench.runner import (bandwidth_lines, copy_bandwidth, default_json_path, table,
                               throughput_lines)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("fastdet bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    cases = cases_for(args.device, full=args.full, only=args.only)
    if not cases:
        print(f"fastdet bench: no case matches {args.only!r}", file=sys.stderr)
        return 2
    copy_gbs = copy_bandwidth() if args.device == "cuda" else None  # the memory-bound floor
    bar = tqdm(total=len(cases), desc="bench", unit="case", file=sys.stderr)

    def progress(case):
        bar.set_postfix_str(case.name)
        bar.update(0)

    path = None if str(args.json) == "-" else args.json or default_json_path(args.device)
    results = []
    for c in cases:
        progress(c)
        results += run_cases([c], args.device)
        if path:  # after every case: a crash or Ctrl-C keeps what was measured
            write_json(path, args.device, results, copy_gbs)
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
    s.add_argument("--json", metavar="PATH", type=Path,
                   help="where to write the figures as JSON (default benchmarks/results/"
                        "<device>-<UTC time>.json; - for none)")
    s.set_defaults(fn=_bench)
    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="write a small synthetic dataset in a real dataset's layout")
    s.add_argument("kind", choices=["rsna", "dsb2018", "mri"])
    s.add_argument("out", type=Path, help="output folder")
    s.add_argument("--n", type=int, default=None, help="images (rsna, dsb2018) or subjects (mri)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_synth)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
