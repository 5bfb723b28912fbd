"""`predict det` over archives: engine.archive's loop with the Detector, its tables (boxes, and
gate when gated) and the final files in the field's formats, written from the parts after the
operating point and the gate:

- csv: boxes.csv, `path,x1,y1,x2,y2,score,label` (input pixels), rows sorted by path then
  score descending;
- rsna: submission.csv, `patientId,PredictionString` (patientId: the file stem; groups
  `score x y w h`, top-left corner, score to 4 decimals, highest first; an empty string for an
  image without boxes; one row per input read);
- coco: results.json, [{image_id, category_id, bbox [x, y, w, h], score}], image_id the input's
  index in sorted order or, with --coco-gt, the id of the ground truth's image of that file name.

Mask R-CNN also writes instances/<stem>_instances.png|.tif per image; figures/<stem>_boxes.png
is drawn for the first --max-figures inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ....metrics import draw_boxes, save_instance_overlay
from ...archive import Job, done_inputs, fingerprint, read_parts, run, write_csv
from ...checkpoint import atomic_write_text
from .task import instance_outputs

FORMATS = ("csv", "rsna", "coco")
BOXES = ["path", "x1", "y1", "x2", "y2", "score", "label"]
GATE = ["path", "P(positive)", "threshold", "kept", "boxes_before"]


def tables(positive: str | None) -> dict:
    """The part tables of a run (name -> header); positive: the gate's class, None ungated."""
    gate = ["path", f"P({positive})", *GATE[2:]]
    return {"boxes": BOXES, **({"gate": gate} if positive is not None else {})}


def predict_files(
    detector,
    inputs: list,
    out,
    *,
    fmt: str = "csv",
    coco_gt=None,
    label_format: str = "png",
    batch_size: int = 8,
    workers: int | None = None,
    max_figures: int = 20,
    strict: bool = False,
    show: bool = True,
) -> dict:
    """A det.predictor.Detector over `inputs` (paths) into `out` (engine.archive.run's result):
    the final files in `fmt`, the per-image files, figures of the first `max_figures`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    gate = detector.gate

    def predict(batch):
        preds = detector.predict([data[1] for _, _, data, _ in batch])
        rows = []
        for (index, path, data, _), pred in zip(batch, preds):
            figure = index < max_figures
            write_outputs(out, stem_of(path), data[1], pred, detector.config, label_format, figure)
            rows.append(rows_of(path, pred, gate.threshold if gate is not None else None))
        return rows

    positive = gate.config.positive if gate is not None else None
    job = Job(tables(positive), predict, merge, pin=detector.device.type == "cuda")
    settings = _settings(detector, fmt, coco_gt, label_format)
    return run(job, out, inputs, settings, batch_size, workers, strict, show)


def _settings(detector, fmt: str, coco_gt, label_format: str) -> dict:
    """What a resumed run must share with the first (run.json)."""
    point = detector.point.as_dict() if detector.point is not None else None
    gate = detector.gate
    resolved = {k: str(Path(v).resolve()) if v else None for k, v in detector.sources.items()}
    return {
        "task": "det",
        **resolved,
        "checkpoint_sha256": fingerprint(detector.sources["checkpoint"]),
        "ensemble": [str(Path(p).resolve()) for p in detector.ensemble],
        "point": point,
        "score_threshold": detector.threshold,
        "gated": gate is not None,
        "gate_threshold": gate.threshold if gate is not None else None,
        "tta": list(detector.tta),
        "fusion": list(detector.fusion),
        "format": fmt,
        "coco_gt": str(Path(coco_gt).resolve()) if coco_gt else None,
        "label_format": label_format,
        **detector.speed,
    }


def rows_of(path, pred: dict, threshold: float | None) -> dict:
    """One image's rows per table: its boxes (1 decimal, scores 4), its gate line."""
    boxes = [
        [str(path), *(f"{v:.1f}" for v in b), f"{s:.4f}", int(lab)]
        for b, s, lab in zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()
        )
    ]
    out = {"boxes": boxes}
    if "gate" in pred:
        p, kept, before = pred["gate"]
        out["gate"] = [[str(path), f"{p:.6f}", f"{threshold:.6f}", int(kept), before]]
    return out


def write_outputs(base: Path, stem: str, image, pred: dict, config, label_format, figure: bool):
    """The per-image files: Mask R-CNN's label image (and its overlay with the figure)."""
    if figure:
        draw_boxes(base / "figures" / f"{stem}_boxes.png", image, pred)
    if "masks" not in pred:
        return
    size = tuple(np.asarray(image).shape[-2:])
    _, labels = instance_outputs(pred, size, config)
    labels = labels.numpy()
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{stem}: more than 65535 instances do not fit a uint16 label image")
    folder = base / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_instances.{label_format}"
    if label_format == "png":
        Image.fromarray(labels.astype(np.uint16)).save(path)
    else:
        tifffile.imwrite(path, labels.astype(np.uint16))
    if figure:
        save_instance_overlay(base / "figures" / f"{stem}_instances_overlay.png", image, labels)


def stem_of(path) -> str:
    return Path(path).name.split(".")[0]


def sorted_boxes(out: Path) -> list[dict]:
    """Every rank's box rows, sorted by path, then score descending (then the row itself, so
    equal scores keep one order whatever the sharding)."""
    rows = read_parts(out, "boxes")
    rows.sort(key=lambda r: (r["path"], -float(r["score"]), [r[k] for k in BOXES]))
    return rows


def merge(out: Path, settings: dict) -> list[Path]:
    """The final files of a det run from its parts; returns them."""
    rows = sorted_boxes(out)
    written = [write_csv(out / "boxes.csv", BOXES, [[r[k] for k in BOXES] for r in rows])]
    if settings.get("gated"):
        gate = sorted(read_parts(out, "gate"), key=lambda r: r["path"])
        header = list(gate[0]) if gate else GATE
        written.append(write_csv(out / "gate.csv", header, [list(r.values()) for r in gate]))
    fmt = settings.get("format", "csv")
    if fmt == "rsna":
        written.append(_write_rsna(out / "submission.csv", done_inputs(out, "ok"), rows))
    elif fmt == "coco":
        written.append(_write_coco(out / "results.json", done_inputs(out), rows, settings))
    return written


def _write_rsna(path: Path, inputs: list, rows: list) -> Path:
    groups = {str(p): [] for p in inputs}
    for r in rows:  # already score descending within a path
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        score = float(r["score"])
        groups[r["path"]].append(f"{score:.4f} {x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f}")
    lines = [[stem_of(p), " ".join(g)] for p, g in groups.items()]
    return write_csv(path, ["patientId", "PredictionString"], lines)


def _write_coco(path: Path, inputs: list, rows: list, settings: dict) -> Path:
    """inputs: every input recorded (read or not), sorted: image_id is the index there."""
    ids = {str(p): i for i, p in enumerate(inputs)}
    if settings.get("coco_gt"):
        gt = json.loads(Path(settings["coco_gt"]).read_text())
        by_name = {Path(im["file_name"]).name: im["id"] for im in gt["images"]}
        missing = [p for p in ids if Path(p).name not in by_name]
        if missing:
            raise ValueError(f"{settings['coco_gt']}: no image named {Path(missing[0]).name}")
        ids = {p: by_name[Path(p).name] for p in ids}
    results = []
    for r in rows:
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        results.append(
            {
                "image_id": ids[r["path"]],
                "category_id": int(r["label"]),
                "bbox": [x1, y1, round(x2 - x1, 1), round(y2 - y1, 1)],
                "score": float(r["score"]),
            }
        )
    return atomic_write_text(path, json.dumps(results) + "\n")
