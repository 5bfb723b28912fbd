"""The documentation's measured figures, written from the results files, never typed by hand.

Reads the benchmark results (benchmarks/results/: what `fastdet bench` and the scripts beside it
wrote) and the demo's own evaluation (docs/demo/evaluation.json: a copy of the evaluation.json a
full `fastdet demo` run wrote), and writes one Markdown table per file under docs/generated/,
which the pages include (`--8<-- "generated/NAME.md"`). The generated files are committed; CI
and tests/test_docs.py run the check.

    python docs/figures.py            # (re)write docs/generated/
    python docs/figures.py --check    # exit 1 when a generated file is stale, missing or extra

A new results file is shown by adding one line to TABLES (and the include to a page)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "generated"
DEMO = ROOT / "docs" / "demo" / "evaluation.json"


# -- formatting --------------------------------------------------------------------------------


def ms(v: float) -> str:
    """Milliseconds with 3-4 significant digits."""
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def speedup(v: float) -> str:
    return f"{v:.0f}x" if v >= 100 else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def source(path: Path) -> str:
    return f"`{path.relative_to(ROOT).as_posix()}`"


def caption(path: Path, machine: dict) -> str:
    """Where a results file's figures were taken: machine, versions, date, commit."""
    build = machine.get("build", {})
    if machine.get("gpu"):
        where = f"{machine['gpu']} (CUDA {machine.get('torch_cuda', '?')})"
        if machine.get("copy_bandwidth_gbs"):
            where += f", device-to-device copy {machine['copy_bandwidth_gbs']:,.0f} GB/s"
    else:
        where = (
            f"{machine.get('cpu', 'CPU')}, {machine.get('cpu_count', '?')} cores, "
            f"{machine.get('torch_threads', '?')} torch threads"
        )
    parts = [where]
    if build.get("torch"):
        parts.append(f"torch {build['torch']}")
    if machine.get("torchvision"):
        parts.append(f"torchvision {machine['torchvision']}")
    if machine.get("date"):
        parts.append(machine["date"][:16].replace("T", " ") + " UTC")
    if machine.get("git_commit"):
        parts.append(f"commit {machine['git_commit'][:7]}")
    text = f"From {source(path)}: " + ", ".join(parts) + "."
    if machine.get("note"):
        text += f" {machine['note'].rstrip('.')}."
    return text


def load(name: str):
    path = RESULTS / name
    return path, json.loads(path.read_text())


# -- the bench runner's results files (fastdet bench: machine + a list of cases) ----------------


def cases(name: str, only: str | None = None, skip: str | None = None) -> str:
    """One row per case: fastdet's median, every other implementation's median with fastdet's
    speedup over it (a floor: what the case cannot beat), and the case's extra figures."""
    path, data = load(name)
    rows_in = [
        r
        for r in data["results"]
        if (only is None or re.search(only, r["name"]))
        and not (skip and re.search(skip, r["name"]))
    ]
    graph = any("graph_median_ms" in r["impls"]["fastdet"] for r in rows_in)
    peers: list[str] = []
    for r in rows_in:
        for impl in r["impls"]:
            if impl != "fastdet" and impl not in peers:
                peers.append(impl)
    peers.sort(key=lambda p: ("floor" in p, p != "torchvision", p))
    extras = [
        (key, label)
        for key, label in (
            ("fastdet_images_per_s", "fastdet images/s"),
            ("fastdet_output_gbs", "fastdet output GB/s"),
            ("fastdet_over_floor", "fastdet / floor"),
        )
        if any(key in r for r in rows_in)
    ]
    header = ["case", "fastdet ms"] + (["fastdet graph ms"] if graph else [])
    header += [f"{p} ms" if "floor" in p else f"{p} ms (speedup)" for p in peers] + [
        label for _, label in extras
    ]
    rows = []
    for r in rows_in:
        f = r["impls"]["fastdet"]
        row = [f"`{r['name']}`", ms(f["median_ms"])]
        if graph:
            row.append(ms(f["graph_median_ms"]) if "graph_median_ms" in f else "")
        for p in peers:
            i = r["impls"].get(p)
            if i is None:
                row.append("")
                continue
            if "floor" in p:  # what the case cannot beat: fastdet / floor is its own column
                row.append(ms(i["median_ms"]))
                continue
            cell = f"{ms(i['median_ms'])} ({speedup(i['fastdet_speedup'])}"
            if "fastdet_graph_speedup" in i:
                cell += f"; graph {speedup(i['fastdet_graph_speedup'])}"
            row.append(cell + ")")
        for key, _ in extras:
            v = r.get(key)
            row.append(
                "" if v is None else f"{v:.2f}" if key != "fastdet_output_gbs" else f"{v:,.0f}"
            )
        rows.append(row)
    notes = []
    for r in rows_in:
        for note in r.get("notes", {}).values():
            if note not in notes:
                notes.append(note)
    if isinstance(data.get("notes"), str):
        notes.insert(0, data["notes"])
    text = [caption(path, data["machine"]), "", table(header, rows)]
    if notes:
        text += [""] + [f"Note: {n.rstrip('.')}." for n in notes]
    return "\n".join(text)


STAGES = (
    ("filter_proposals_ms", "proposal filtering ms"),
    ("nms_ms", "NMS ms"),
    ("roi_align_ms", "RoIAlign ms"),
    ("paste_masks_ms", "mask pasting ms"),
    ("host_syncs", "host syncs"),
)


def stages(name: str, only: str | None = None) -> str:
    """The profiled stages of the detection models' cases (medians of profiled passes)."""
    path, data = load(name)
    rows_in = [
        r for r in data["results"] if "stages" in r and (only is None or re.search(only, r["name"]))
    ]
    keys = [  # the stages some case measured (mask pasting: Mask R-CNN's only)
        (k, label)
        for k, label in STAGES
        if any(s.get(k) for r in rows_in for s in r["stages"].values())
    ]
    rows = []
    for r in rows_in:
        for impl, s in r["stages"].items():
            cells = []
            for k, _ in keys:
                v = s.get(k)
                cells.append(
                    "" if not v and k != "host_syncs" else str(v) if k == "host_syncs" else ms(v)
                )
            rows.append([f"`{r['name']}`", impl] + cells)
    clock = rows_in[0].get("notes", {}).get("stages_clock", "") if rows_in else ""
    text = [
        caption(path, data["machine"]),
        "",
        table(["case", "implementation"] + [label for _, label in keys], rows),
    ]
    if clock:
        text += ["", f"Clock: {clock}."]
    return "\n".join(text)


# -- benchmarks/det_interleaved.py (the implementations interleaved run by run) ----------------


def interleaved(name: str, part: str | None = None) -> str:
    """Whole-detector inference and training-step medians, each implementation beside the
    reference of the file (torchvision's eager float32 model, or fastdet's own float32)."""
    path, data = load(name)
    block = data[part] if part else data
    inf, step = block["inference"], block["train_step"]
    ref_key = next(k for k in inf["results"]["fastdet"] if k.startswith("vs_"))
    ref = ref_key[3:]
    rows = []
    for impl, r in inf["results"].items():
        s = step["results"].get(impl)
        rows.append(
            [
                impl,
                ms(r["median_ms"]),
                speedup(r[ref_key]),
                ms(s["median_ms"]) if s else "",
                speedup(s[ref_key]) if s else "",
            ]
        )
    header = [
        "implementation",
        "inference ms",
        f"vs {ref}",
        "training step ms",
        f"vs {ref}",
    ]
    where = data.get("machine", "")
    if part and block.get("machine_load"):
        where += f"; this run: {block['machine_load']}"
    facts = [
        f"From {source(path)}" + (f" (`{part}`)" if part else "") + f": {where}",
        f"{inf['threads']} thread(s), medians of {inf['reps']} (inference) and {step['reps']} "
        "(training steps)",
    ]
    if data.get("date") or data.get("commit"):
        facts.append(", ".join(x for x in (data.get("date"), data.get("commit")) if x))
    text = "; ".join(facts) + f". Command: `{block.get('command', data.get('command'))}`."
    return "\n".join([text, "", table(header, rows)])


# -- the GPU check's log (the segmentation models' images/s are printed, not in a JSON) ---------


def log_images_per_s(name: str) -> str:
    path = RESULTS / name
    found = re.findall(r"^(\w+): ([\d.]+) images/s$", path.read_text(), re.M)
    rows = [[f"`{case}`", f"{float(v):,.0f}"] for case, v in found]
    return "\n".join(
        [
            f"From {source(path)} (the log of `bash benchmarks/gpu_check.sh`; see its header for "
            "the machine).",
            "",
            table(["case", "fastdet images/s"], rows),
        ]
    )


# -- the demo's evaluation.json -----------------------------------------------------------------


NOT_NORMAL = "No Lung Opacity / Not Normal"
SOURCES = {"checkpoint": "the classifier's stored", "argument": "a given", "default": "the default"}


def ablation(name: str) -> str:
    """The detector recipe ablation: per variant and seed, held-out figures at the operating
    point (and the raw model's AP50)."""
    path, d = load(name)
    rows = []
    for r in d["results"]:
        change = ", ".join(f"{k} {v}" for k, v in d["variants"][r["name"]].items()) or "-"
        rows.append(
            [
                r["name"],
                change,
                str(r["seed"]),
                num(max(r["val_ap50"])),
                f"{num(r['test_ap50'])} ({num(r['test_ap50_raw'])})",
                num(r["fp_pos"]),
                num(r["fp_neg"]),
                num(r["rsna"], 4),
                f"{r['missed'][1]} of {r['positives']}",
            ]
        )
    header = [
        "variant",
        "change",
        "seed",
        "best val AP50",
        "test AP50 (raw)",
        "FP / positive image",
        "FP / negative image",
        "RSNA score",
        "missed",
    ]
    return "\n".join([f"From {source(path)}: {d['what']} {d['machine']}.", "", table(header, rows)])


def point_words(p: dict) -> str:
    contain = "off" if p["containment"] is None else f"{p['containment']:g}"
    return (
        f"at its operating point chosen on the {p['split']} patients: score >= "
        f"{p['score_threshold']:g}, NMS IoU {p['nms_iou']:g}, containment {contain}, at most "
        f"{p['max_boxes']} boxes per image"
    )


def demo() -> str:
    """The figures of a full `fastdet demo` run, from its own evaluation.json: the nuclei
    segmentation beside the classical baseline, the detector, the chest section (lung fields,
    classifier, the detector with and without the gate) and the nuclei instances."""
    d = json.loads(DEMO.read_text())
    out = [
        f"From {source(DEMO)} (a full run: held-out nuclei images; chest figures on the test "
        "patients, which no choice saw)."
    ]

    seg = d["segmentation"]["overall"]
    cols = ("dice", "iou", "sensitivity", "specificity")
    rows = []
    for method, scores in seg.items():
        cells = [f"{num(scores[c]['mean'])} ± {num(scores[c]['std'])}" for c in cols]
        name = {"model": "U-Net", "classical": "classical baseline"}.get(method, method)
        rows.append([name, *cells, num(scores.get("dsb"))])
    header = ["method", "Dice", "IoU", "sensitivity", "specificity", "DSB score (watershed)"]
    out += ["", "**Nuclei segmentation** (per image, mean ± std):", "", table(header, rows)]

    det = d["detection"]
    ci = det.get("ci", {})

    def with_ci(key, value):
        lo_hi = ci.get(key)
        return num(value) if lo_hi is None else f"{num(value)} ({num(lo_hi[0])}-{num(lo_hi[1])})"

    out += [
        "",
        "**Pneumonia detection** (Faster R-CNN, ResNet-18 + FPN from scratch"
        + (f"; {point_words(det['operating_point'])}" if "operating_point" in det else "")
        + "; 95% bootstrap intervals over images in brackets):",
        "",
        table(
            [
                "AP50",
                "COCO AP",
                "RSNA score (at the point)",
                "FP per positive image",
                "FP per negative image",
                "missed positives",
            ],
            [
                [
                    with_ci("map_50", det["map_50"]),
                    num(det["map"]),
                    with_ci("rsna_thresholded", det["rsna_thresholded"]),
                    num(det.get("fp_per_positive_image")),
                    num(det["fp_per_negative_image"]),
                    f"{det['missed_positives']} of {det['positive_images']}",
                ]
            ],
        ),
    ]
    if "froc" in det:
        f = det["froc"]
        cells = [[num(s) for s in f["sensitivity"]]]
        out += ["", "FROC: the share of opacities found at each rate of false positives per image:"]
        out += ["", table([f"{r:g} FP/image" for r in f["rates"]], cells)]

    chest = d["chest"]
    lungs, cls = chest["lungs"], chest["classifier"]
    auc = ", ".join(f"{c} {num(v)}" for c, v in cls["auc"].items())
    out += [
        "",
        f"**Chest pipeline.** Lung fields (U-Net, {lungs['images']} images): Dice "
        f"{num(lungs['dice'])}, IoU {num(lungs['iou'])}. Classifier of the three classes on the "
        f"lung crops ({cls['n_images']} images): accuracy {num(cls['accuracy'])}, balanced "
        f"accuracy {num(cls['balanced_accuracy'])}, macro ROC AUC {num(cls['macro_auc'])} ({auc}).",
    ]
    gated = chest["detection"]
    ungated, gate = gated["ungated"], gated["gate"]

    def not_normal(r):
        return r.get("fp_per_negative_image_by_class", {}).get(NOT_NORMAL)

    pairs = [
        (f'FP per "{NOT_NORMAL}" image', not_normal),
        ("FP per negative image", lambda r: r["fp_per_negative_image"]),
        ("RSNA score (at the point)", lambda r: r["rsna_thresholded"]),
        ("AP50", lambda r: r["map_50"]),
        ("missed positives", lambda r: f"{r['missed_positives']} of {r['positive_images']}"),
    ]
    rows = [
        [name, *(v if isinstance(v, str) else num(v) for v in (f(ungated), f(gated)))]
        for name, f in pairs
    ]
    out += [
        "",
        f"The detector gated by the classifier (boxes kept where P({gate['positive_class']}) >= "
        f"{gate['threshold']:.3g}, {SOURCES.get(gate['threshold_source'], 'the')} threshold; "
        f"boxes dropped on {gate['gated_images']} of {gated['images']} images):",
        "",
        table([f"{gated['images']} test patients", "detector alone", "gated"], rows),
    ]

    inst = d["instances"]
    s = inst["instances"]
    rows = [
        ["Mask R-CNN", num(s["dsb"])],
        ["U-Net + watershed", num(s.get("dsb_unet"))],
        ["classical baseline", num(s.get("dsb_classical"))],
    ]
    out += [
        "",
        f"**Nuclei instances** (Mask R-CNN, ResNet-18 + FPN from scratch: mask AP "
        f"{num(s['mask_map'])}, mask AP50 {num(s['mask_map_50'])}, box AP50 "
        f"{num(inst['map_50'])}). DSB-2018 score on the same held-out images:",
        "",
        table(["method", "DSB score"], rows),
    ]
    return "\n".join(out)


TABLES = {
    # ops on the CPU
    "bench-cpu-ops": lambda: cases("cpu-20261127T032143Z.json"),
    "bench-cpu-quick": lambda: cases(
        "cpu-quick-20261130.json",
        skip=r"^(nms_|batched_nms|box_iou_\d|roi_align|anchors|cls_|overhead_)",
    ),
    "bench-cpu-rotated": lambda: cases("cpu-rotated-20261129.json"),
    "bench-cpu-rotated-1thread": lambda: cases("cpu-rotated-1thread-20261129.json"),
    "bench-cpu-overhead": lambda: cases("cpu-overhead-20261130.json"),
    "bench-cpu-wbf": lambda: cases("cpu-wbf-20261129.json"),
    # models on the CPU
    "bench-cpu-cls": lambda: cases("cpu-cls-20261130.json"),
    "bench-cpu-det-interleaved": lambda: interleaved("cpu-det-interleaved-20261130.json"),
    "bench-cpu-det-interleaved-r18": lambda: interleaved(
        "cpu-det-interleaved-20261130.json", "resnet18_fpn"
    ),
    "bench-cpu-det-channels-last": lambda: interleaved("cpu-det-channels-last-20261130.json"),
    "bench-cpu-det-variants": lambda: cases("cpu-det-variants-20261130.json"),
    "bench-cpu-det-variants-stages": lambda: stages("cpu-det-variants-20261130.json"),
    "bench-cpu-detection": lambda: cases("cpu-detection-stages-20261127.json"),
    "bench-cpu-detection-stages": lambda: stages("cpu-detection-stages-20261127.json"),
    "bench-cpu-maskrcnn": lambda: cases("cpu-maskrcnn-20261129.json"),
    "bench-cpu-maskrcnn-stages": lambda: stages("cpu-maskrcnn-20261129.json"),
    "bench-cpu-seg": lambda: cases("cpu-models-20261127.json", only=r"^(unet|fpn)"),
    "bench-cpu-seg-variants": lambda: cases(
        "cpu-seg-variants-20261130.json", only="_(bf16|compiled)$"
    ),
    "bench-cpu-channels-last": lambda: cases("cpu-channels-last-20261130.json"),
    # the GPU
    "bench-gpu-ops": lambda: cases("gpu-h200-20261127b/gpu_bench.json"),
    "bench-gpu-det": lambda: cases("gpu-h200-20261127b/gpu_det.json"),
    "bench-gpu-det-stages": lambda: stages("gpu-h200-20261127b/gpu_det.json"),
    "bench-gpu-seg": lambda: log_images_per_s("gpu-h200-20261127b/check.log"),
    # the demo
    "demo": demo,
    "det-recipe-ablation": lambda: ablation("cpu-det-recipe-ablation-20261207.json"),
}

HEADER = "<!-- written by docs/figures.py from the results files: do not edit -->\n\n"


def render_all() -> dict[str, str]:
    return {f"{stem}.md": HEADER + make().rstrip() + "\n" for stem, make in TABLES.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = p.parse_args(argv)
    wanted = render_all()
    present = {p.name for p in OUT.glob("*.md")} if OUT.is_dir() else set()
    stale = sorted(
        n for n, text in wanted.items() if n not in present or (OUT / n).read_text() != text
    )
    extra = sorted(present - set(wanted))
    if args.check:
        for n in stale:
            print(f"docs/generated/{n} is stale or missing: run python docs/figures.py")
        for n in extra:
            print(f"docs/generated/{n} is no longer generated: run python docs/figures.py")
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for n in stale:
        (OUT / n).write_text(wanted[n])
    for n in extra:
        (OUT / n).unlink()
    print(f"docs/generated: {len(stale)} written, {len(extra)} removed, {len(wanted)} in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
