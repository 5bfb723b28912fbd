"""Times benchmark cases: warm-up, then the median of repeated runs (at least 5) per
implementation, side by side in one process; records the machine, versions and git commit."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from .._info import build_info, run_command
from .cases import Case


def _time_cpu(fn, sets, min_runs, budget_s):
    fn(sets[0])  # warm-up: first-call costs (numba compile, allocator) stay out
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 200):
        d = sets[len(times) % len(sets)]
        t0 = time.perf_counter()
        fn(d)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _time_cuda(fn, sets, min_runs, budget_s):
    for d in sets:  # warm-up on every input set
        fn(d)
    torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    while len(times) < max(min_runs, 20) or (
        time.perf_counter() - start < budget_s and len(times) < 500
    ):
        d = sets[len(times) % len(sets)]
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(d)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return times


def _time_graph(fn, sets, runs: int = 100):
    """Device time alone: fn captured in one CUDA graph per input set, replays timed with events
    (no Python or launch overhead). None when fn cannot be captured (e.g. it syncs)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        graphs = []
        with torch.cuda.stream(side):
            for d in sets:
                fn(d)  # warm-up outside the capture
            side.synchronize()
            for d in sets:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, stream=side):
                    fn(d)
                graphs.append(g)
        torch.cuda.current_stream().wait_stream(side)
    except Exception:  # noqa: BLE001 - not capturable: eager timing only
        torch.cuda.synchronize()
        return None
    for g in graphs:
        g.replay()
    times = []
    for i in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graphs[i % len(graphs)].replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return times


def run_case(case: Case, device: str, min_runs: int | None = None, budget_s: float = 1.0) -> dict:
    sets, impls = case.make(device)
    min_runs = case.min_runs if min_runs is None else min_runs
    timer = _time_cuda if device == "cuda" else _time_cpu
    res = {
        "name": case.name,
        "op": case.group,
        "params": case.params,
        "device": device,
        "impls": {},
    }
    for name, fn in impls.items():
        ts = timer(fn, sets, min_runs, budget_s)
        if case.per_call:  # milliseconds per item
            ts = [t / case.per_call.get(name, 1) for t in ts]
        res["impls"][name] = r = {
            "median_ms": statistics.median(ts),
            "min_ms": min(ts),
            "runs": len(ts),
        }
        gs = _time_graph(fn, sets) if device == "cuda" and case.graph else None
        if gs:
            r["graph_median_ms"] = statistics.median(gs)
    fd = res["impls"]["fastdet"]
    for name, r in res["impls"].items():
        if name != "fastdet":
            r["fastdet_speedup"] = r["median_ms"] / fd["median_ms"]
            if "graph_median_ms" in r and "graph_median_ms" in fd:
                r["fastdet_graph_speedup"] = r["graph_median_ms"] / fd["graph_median_ms"]
    if "batch" in case.params and case.group.endswith("_model"):
        res["fastdet_images_per_s"] = case.params["batch"] / (fd["median_ms"] * 1e-3)
    if "output_bytes" in case.params:  # memory-bound: the rate the output is written at
        t = fd.get("graph_median_ms", fd["median_ms"])
        res["fastdet_output_gbs"] = case.params["output_bytes"] / (t * 1e-3) / 1e9
    if case.floor:
        res["floor"] = case.floor
        res["fastdet_over_floor"] = fd["median_ms"] / res["impls"][case.floor]["median_ms"]
    notes = dict(case.notes)
    if case.stages:
        res["stages"] = _stages(case, sets, impls, device)
        notes["stages_clock"] = (
            "CUDA kernel time; CPU time for the stages in cpu_clock_stages"
            if device == "cuda"
            else "CPU time"
        )
    if notes:
        res["notes"] = notes
    return res


def _stages(case: Case, sets, impls, device: str) -> dict:
    """case.stages per implementation, after the timing so the profiler never slows it; a
    profiler failure (e.g. no CUPTI on a GPU machine) is recorded, not raised."""
    out = {}
    for name, fn in impls.items():
        try:
            st = case.stages(fn, sets, device)
        except Exception as e:  # noqa: BLE001 - the timings above stand without the stages
            st = {"error": f"{type(e).__name__}: {e}"}
        if st:  # (an implementation without stages, e.g. a floor, returns none)
            out[name] = st
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    if os.environ.get("FASTDET_GIT_COMMIT"):  # a copied tree without .git (the GPU machine)
        return os.environ["FASTDET_GIT_COMMIT"]
    r = run_command(["git", "rev-parse", "HEAD"], timeout=5, cwd=Path(__file__).resolve().parent)
    return None if r is None else r.stdout.strip() or None


def machine(device: str, copy_gbs: float | None = None) -> dict:
    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "build": build_info(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_sms=p.multi_processor_count, torch_cuda=torch.version.cuda)
        info["copy_bandwidth_gbs"] = copy_gbs or copy_bandwidth()
    return info


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, device="cuda").uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ts = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return 2 * nbytes / (statistics.median(ts) * 1e-3) / 1e9


def run_cases(cases: list[Case], device: str, progress=None) -> list[dict]:
    out = []
    for c in cases:
        if progress:
            progress(c)
        out.append(run_case(c, device))
    return out


def table(results: list[dict]) -> str:
    """One row per implementation: eager median, its ratio to fastdet's (> 1: fastdet is faster)
    and, on the GPU where the case captures, the same from CUDA-graph replays (device time)."""
    graphs = any("graph_median_ms" in v for r in results for v in r["impls"].values())
    head = ("case", "impl", "ms", "vs fastdet") + (
        ("graph ms", "graph vs fastdet") if graphs else ()
    )
    rows, after = [head], {}  # after: {row index: the stages line printed below that row}
    for r in results:
        if "stages" in r:
            after[len(rows) + len(r["impls"]) - 1] = stages_line(r["stages"])
        for i, (k, v) in enumerate(r["impls"].items()):
            ratio = "-" if k == "fastdet" else f"{v['fastdet_speedup']:.2f}x"
            row = (r["name"] if i == 0 else "", k, f"{v['median_ms']:.3f}", ratio)
            if graphs:
                g = v.get("graph_median_ms")
                gr = v.get("fastdet_graph_speedup")
                row += (f"{g:.3f}" if g else "", f"{gr:.2f}x" if gr else "")
            rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i in after:
            lines.append(after[i])
    return "\n".join(lines)


_STAGE_LABELS = {
    "filter_proposals_ms": "proposal filtering",
    "nms_ms": "NMS",
    "roi_align_ms": "RoIAlign",
}


def stages_line(stages: dict) -> str:
    """'  stages fastdet: proposal filtering X ms, NMS Y ms, RoIAlign Z ms (profiled pass T ms) |
    torchvision: ...', one line."""
    parts = []
    for impl, st in stages.items():
        if "error" in st:
            parts.append(f"{impl}: {st['error']}")
            continue
        ms = ", ".join(
            f"{_STAGE_LABELS.get(k, k)} {v:.1f} ms"
            for k, v in st.items()
            if k.endswith("_ms") and k != "total_ms"
        )
        syncs = f", {st['host_syncs']} host syncs" if "host_syncs" in st else ""
        parts.append(f"{impl}: {ms} (profiled pass {st['total_ms']:.1f} ms{syncs})")
    return "  stages " + " | ".join(parts)


def markdown_table(results: list[dict], peer: str = "torchvision") -> str:
    """case | fastdet ms | peer ms | speedup (and the CUDA-graph figures where timed)."""
    graphs = any("graph_median_ms" in r["impls"]["fastdet"] for r in results)
    head = ["case", "fastdet ms", f"{peer} ms", "speedup"]
    head += ["fastdet graph ms", f"{peer} graph ms", "graph speedup"] if graphs else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        fd, pr = r["impls"]["fastdet"], r["impls"].get(peer)
        if pr is None:
            continue
        row = [
            r["name"],
            f"{fd['median_ms']:.3f}",
            f"{pr['median_ms']:.3f}",
            f"{pr['fastdet_speedup']:.1f}x",
        ]
        if graphs:
            g = "fastdet_graph_speedup" in pr
            row += [
                f"{fd['graph_median_ms']:.3f}" if g else "",
                f"{pr['graph_median_ms']:.3f}" if g else "",
                f"{pr['fastdet_graph_speedup']:.2f}x" if g else "",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def throughput_lines(results: list[dict]) -> list[str]:
    return [
        f"{r['name']}: {r['fastdet_images_per_s']:.2f} images/s"
        for r in results
        if "fastdet_images_per_s" in r
    ]


def bandwidth_lines(results: list[dict], copy_gbs: float) -> list[str]:
    """For memory-bound cases: the output write rate against the measured copy bandwidth."""
    return [
        f"{r['name']}: output written at {r['fastdet_output_gbs']:.0f} GB/s, "
        f"{100 * r['fastdet_output_gbs'] / copy_gbs:.0f}% of the copy bandwidth "
        f"({copy_gbs:.0f} GB/s)"
        for r in results
        if "fastdet_output_gbs" in r
    ]


def default_json_path(device: str) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("benchmarks") / "results" / f"{device}-{stamp}.json"


def write_json(
    path,
    device: str,
    results: list[dict],
    copy_gbs: float | None = None,
    machine_info: dict | None = None,
) -> Path:
    """The results with the machine (machine_info when given: a run that rewrites the file after
    every case measures the machine once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    info = machine_info or machine(device, copy_gbs)
    tmp.write_text(json.dumps({"machine": info, "results": results}, indent=1))
    os.replace(tmp, path)  # never a half-written file
    return path
