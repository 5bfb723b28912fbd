"""RSNA Pneumonia Detection Challenge (stage 2) layout."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from fastdet.data.dicom import DataError

from .common import (
    _Checked,
    _dicom_size,
    _folder,
    chosen_ids,
    image_tensor,
    layout_error,
    looks_like,
)

RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_CLASSES = "stage_2_detailed_class_info.csv"
RSNA_IMAGES = "stage_2_train_images"
LUNG_OPACITY = "Lung Opacity"


def _csv_rows(path: Path, columns: set, what: str):
    """(line number, row dict) for each row of a UTF-8 CSV whose header has `columns`.

    DataError naming the file for a binary (non-UTF-8) file, an empty one, missing columns, or
    a line the csv module rejects (with its line number). A row with too few or too many
    fields is yielded as it is (missing values None, extras under the key None): its
    problem is the caller's, per row."""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a BOM is not part of a name
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not a text CSV (byte {e.start} is not UTF-8: a binary, compressed or "
            f"differently encoded file?)"
        ) from e
    if "\0" in text:
        raise DataError(f"{path}: not a text CSV (it holds NUL bytes: a binary file?)")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames:
            raise DataError(f"{path}: empty {what} CSV (no header line)")
        missing = columns - set(reader.fieldnames)
        if missing:
            raise DataError(
                f"{path}: missing column(s) {sorted(missing)} in the {what} CSV; "
                f"found {reader.fieldnames}"
            )
        for row in reader:
            yield reader.line_num, row
    except csv.Error as e:
        # the DictReader's line_num lags a failed row; its underlying reader's does not
        raise DataError(f"{path}:{reader.reader.line_num}: not a valid CSV line ({e})") from e


def _field_count_error(row: dict) -> str | None:
    """A description when a DictReader row had more or fewer fields than the header."""
    header = sum(1 for k in row if k is not None)
    extra = len(row.get(None) or [])
    short = sum(1 for k, v in row.items() if k is not None and v is None)
    if extra or short:
        return f"{header + extra - short} field(s) where the header has {header}"
    return None


def _read_rsna_labels(path: Path):
    """stage_2_train_labels.csv -> ({patientId: [(x, y, w, h)]}, {patientId: error or None})
    with patients in first-appearance order. Per-row problems are kept per patient, so
    skip_bad can drop the patient; a file that is not a CSV with the columns is an error
    for the whole file (DataError naming it)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: RSNA labels CSV not found")
    columns = {"patientId", "x", "y", "width", "height", "Target"}
    boxes, errors, targets = {}, {}, {}
    for line, row in _csv_rows(path, columns, "RSNA labels"):
        pid = (row["patientId"] or "").strip()
        if not pid:
            raise DataError(f"{path}:{line}: empty patientId")
        boxes.setdefault(pid, [])
        errors.setdefault(pid, None)
        error = _field_count_error(row) or _rsna_row(
            row, boxes[pid], targets.setdefault(pid, set())
        )
        if error and errors[pid] is None:
            errors[pid] = f"{path}:{line}: patientId {pid}: {error}"
    return boxes, errors


def _rsna_row(row: dict, boxes: list, targets: set) -> str | None:
    """Parses one label row into `boxes`; returns a problem description or None."""
    target = (row["Target"] or "").strip()
    coords = [(row[k] or "").strip() for k in ("x", "y", "width", "height")]
    if target not in ("0", "1"):
        return f"Target must be 0 or 1, got {target!r}"
    targets.add(target)
    if len(targets) > 1:
        return "both Target 0 and Target 1 rows"
    if target == "0":
        return None if not any(coords) else f"Target 0 row with a box {coords}"
    try:
        box = tuple(float(c) for c in coords)
    except ValueError:
        return f"Target 1 row without a numeric box {coords}"
    boxes.append(box)
    return None


def _read_rsna_classes(path: Path) -> dict:
    """stage_2_detailed_class_info.csv -> {patientId: class}, {} when the file is absent."""
    if not path.is_file():
        return {}
    classes = {}
    for line, row in _csv_rows(path, {"patientId", "class"}, "RSNA class info"):
        if row["patientId"] is None or row["class"] is None:
            raise DataError(f"{path}:{line}: expected patientId,class, got {list(row.values())}")
        classes[row["patientId"].strip()] = row["class"].strip()
    return classes


class RSNADataset(_Checked):
    """RSNA Pneumonia Detection Challenge (stage 2) layout: `root/stage_2_train_labels.csv`
    (patientId, x, y, width, height, Target), optional `root/stage_2_detailed_class_info.csv`,
    images `root/stage_2_train_images/<patientId>.dcm`.

    One sample per patient: "image" float32 [1, H, W] (load_dicom, no window: 0..255 for
    Kaggle's 8-bit files), "boxes" float32 [K, 4] x1y1x2y2 from (x, y, x + width, y + height),
    "labels" int64 [K] all 1 (Lung Opacity); negatives (Target 0) have K = 0 and are kept.
    meta: path, target (0/1), class (the class CSV's, None without it), size (H, W),
    pixel_spacing. `split` "train"/"val" splits patients (stratified by Target) with
    `split_seed`; `ids` lists the patients in order.

    Checked at construction (error, or skipped with skip_bad): malformed rows, a missing DICOM
    (FileNotFoundError), boxes not inside the image (ValueError naming patientId and box).
    """

    layout = "rsna"  # the score its detections are judged by: the challenge's

    def __init__(
        self,
        root,
        skip_bad: bool = False,
        transform=None,
        **split,
    ):
        super().__init__(skip_bad, transform)
        self.root = _folder(root, "RSNA folder")
        labels = self.root / RSNA_LABELS
        if not labels.is_file() and looks_like(self.root) not in (None, "rsna"):
            raise layout_error(self.root, "rsna")
        boxes, errors = _read_rsna_labels(labels)
        classes = _read_rsna_classes(self.root / RSNA_CLASSES)
        strata = {pid: bool(b) for pid, b in boxes.items()}
        chosen = chosen_ids(boxes, strata, **split)
        self._check_all(
            chosen, lambda pid: self._check(pid, boxes[pid], errors[pid], labels, classes.get(pid))
        )

    def _check(self, pid, boxes, error, labels, cls):
        """(pid, path, boxes [K, 4] x1y1x2y2, class) or None when skipped."""
        if error:
            return self._bad(pid, "bad CSV row", error)
        path = self.root / RSNA_IMAGES / f"{pid}.dcm"
        if not path.is_file():
            return self._bad(
                pid,
                "missing image",
                f"{path}: DICOM not found for patientId {pid} named in {labels}",
                FileNotFoundError,
            )
        xyxy = np.array([(x, y, x + w, y + h) for x, y, w, h in boxes], np.float32).reshape(-1, 4)
        if len(boxes):
            try:
                height, width = _dicom_size(path)
            except ValueError as e:
                return self._bad(pid, "unreadable image", e)
            for (x, y, w, h), b in zip(boxes, xyxy):
                inside = (
                    np.isfinite(b).all()
                    and w > 0
                    and h > 0
                    and b[0] >= 0
                    and b[1] >= 0
                    and b[2] <= width
                    and b[3] <= height
                )
                if not inside:
                    return self._bad(
                        pid,
                        "box outside the image",
                        f"{labels}: patientId {pid}: "
                        f"box (x={x:g}, y={y:g}, width={w:g}, height={h:g}) is "
                        f"not inside the {width}x{height} image {path}",
                    )
        return pid, path, xyxy, cls

    def __getitem__(self, index: int) -> dict:
        from fastdet.data.dicom import load_dicom

        pid, path, boxes, cls = self.items[index]
        image, dmeta = load_dicom(path, return_meta=True)
        if image.ndim != 2:
            raise ValueError(f"{path}: expected a single grey frame, got shape {image.shape}")
        sample = {
            "image": image_tensor(image),
            "boxes": torch.from_numpy(boxes.copy()),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            "id": pid,
            "meta": {
                "path": str(path),
                "target": int(len(boxes) > 0),
                "class": cls,
                "size": tuple(image.shape),
                "pixel_spacing": dmeta.get("pixel_spacing"),
            },
        }
        return self._finish(sample)
