"""torch Datasets over the on-disk layouts of RSNA Pneumonia, DSB-2018, image folders and MRI
volumes, all giving one sample format.

A sample is a dict:

- "image": float32 tensor [C, H, W] (C = 1 for grey images), in the file's units: 0..255 for
  8-bit PNG/DICOM, modality units (after RescaleSlope/Intercept) for DICOM. No normalisation:
  that is the transforms' job.
- "boxes": float32 [K, 4], (x1, y1, x2, y2) in pixels with pixel-edge coordinates, so a box
  covering columns 3..7 has x1 = 3, x2 = 8 (RSNA's x + width); with "labels" int64 [K] (1 for
  the one foreground class). Detection datasets (RSNA, DSB-2018) only.
- "mask": uint8 [H, W] (0 background; 1 foreground, or the file's labels when not binarised)
  and, for DSB-2018, "instances": int32 [H, W] (0 background, 1..K in mask-file order, the
  same order as "boxes"). Segmentation datasets only.
- "id": str; "meta": dict (path, size and what each dataset documents).

Bad data is never dropped silently: by default a dataset raises an error naming the file (or CSV
line) at construction; with skip_bad=True it leaves the item out, records (id, reason) in
`self.skipped` and warns with the count. Splits ("train" / "val") are by patient or subject,
deterministic for a `split_seed` and independent of skip_bad, so no patient or subject is ever
in both.

Each dataset calls `transform(sample)` last when a transform is given.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_CLASSES = "stage_2_detailed_class_info.csv"
RSNA_IMAGES = "stage_2_train_images"
LUNG_OPACITY = "Lung Opacity"
PLANES = ("transverse", "coronal", "sagittal")
_PLANE_CODES = {"sagittal": "LR", "coronal": "AP", "transverse": "SI"}
_NIFTI = (".nii.gz", ".nii")
_FOLDER_EXTS = (".png", ".tif", ".tiff", ".dcm") + _NIFTI


# ----------------------------------------------------------------------------- shared helpers


def split_ids(ids, split=None, seed: int = 0, val_fraction: float = 0.2, strata=None) -> list:
    """The ids of one split, in their order in `ids`.

    split None returns all ids; "val" returns round(val_fraction * n) of them (at least 1 and at
    most n - 1 when n >= 2 and val_fraction > 0), "train" the rest. The choice depends only on
    the set of ids, `seed` and `val_fraction`, not on their order. `strata` (dict id -> key),
    when given, spreads each stratum over both splits in proportion (e.g. positives and
    negatives)."""
    ids = list(ids)
    if split is None:
        return ids
    if split not in ("train", "val"):
        raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = len(ids)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    rng = np.random.default_rng(seed)
    strata = strata or {}
    groups: dict = {}
    for i in sorted(ids):
        groups.setdefault(str(strata.get(i, "")), []).append(i)
    # Each id gets its fractional rank inside its shuffled stratum; taking the smallest ranks
    # takes about the same fraction of every stratum.
    rank = {}
    for key in sorted(groups):
        group = groups[key]
        for pos, j in enumerate(rng.permutation(len(group))):
            rank[group[j]] = (pos + rng.random()) / len(group)
    val = set(sorted(sorted(ids), key=lambda i: rank[i])[:n_val])
    return [i for i in ids if (i in val) == (split == "val")]


def _subfolders(root: Path) -> list[str]:
    """Sorted names of the folders in `root`, hidden ones (".name") left out."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def boxes_from_instances(instances: np.ndarray) -> np.ndarray:
    """float32 [K, 4] (x1, y1, x2, y2) pixel-edge boxes of the labels 1..K of an integer label
    image [H, W] (K = its maximum; an absent label gives a zero box)."""
    k = int(instances.max()) if instances.size else 0
    boxes = np.zeros((k, 4), np.float32)
    from scipy import ndimage

    for i, sl in enumerate(ndimage.find_objects(instances.astype(np.int32), k)):
        if sl is not None:
            boxes[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return boxes


def image_tensor(array: np.ndarray, rgb: bool | None = None) -> torch.Tensor:
    """[H, W] or [H, W, C] -> float32 [C, H, W]. rgb=False averages colour channels into one
    (alpha dropped), rgb=True makes 3 channels (grey repeated), None keeps the channels."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if rgb is not None and a.shape[-1] in (2, 4):  # LA / RGBA: the alpha is not image content
        a = a[..., :-1]
    if rgb is False and a.shape[-1] > 1:
        a = a.mean(-1, keepdims=True)
    elif rgb is True and a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


class _Checked(Dataset):
    """Base: collects bad items (raise, or record and warn with skip_bad) and applies the
    transform."""

    def __init__(self, skip_bad: bool, transform):
        self.skip_bad = bool(skip_bad)
        self.transform = transform
        self.skipped: list[tuple[str, str]] = []

    def _bad(self, item_id: str, kind: str, message: str, error=ValueError) -> None:
        """Raise error(message) or, with skip_bad, record (item_id, "kind: message")."""
        if not self.skip_bad:
            raise error(message)
        self.skipped.append((str(item_id), f"{kind}: {message}"))

    def _warn_skipped(self, total: int) -> None:
        if self.skipped:
            counts = Counter(reason.split(":", 1)[0] for _, reason in self.skipped)
            why = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
            warnings.warn(
                f"{type(self).__name__}: skipped {len(self.skipped)} of {total} "
                f"item(s) ({why}); see .skipped",
                stacklevel=3,
            )

    def _finish(self, sample: dict) -> dict:
        return self.transform(sample) if self.transform is not None else sample


# ----------------------------------------------------------------------------- RSNA


def _read_rsna_labels(path: Path):
    """stage_2_train_labels.csv -> ({patientId: [(x, y, w, h)]}, {patientId: error or None})
    with patients in first-appearance order. Per-row problems are kept per patient, so
    skip_bad can drop the patient; a missing column is an error for the whole file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: RSNA labels CSV not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = {"patientId", "x", "y", "width", "height", "Target"}
        missing = columns - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}"
            )
        boxes, errors, targets = {}, {}, {}
        for line, row in enumerate(reader, start=2):
            pid = (row["patientId"] or "").strip()
            if not pid:
                raise ValueError(f"{path}:{line}: empty patientId")
            boxes.setdefault(pid, [])
            errors.setdefault(pid, None)
            error = _rsna_row(row, boxes[pid], targets.setdefault(pid, set()))
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
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"patientId", "class"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected columns patientId,class, got {reader.fieldnames}")
        return {row["patientId"].strip(): row["class"].strip() for row in reader}


def _dicom_size(path: Path) -> tuple[int, int]:
    """(rows, columns) from the DICOM header, without reading the pixels."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Rows), int(ds.Columns)
    except Exception as e:  # noqa: BLE001 - any unreadable header is reported with the file
        raise ValueError(f"{path}: cannot read Rows/Columns ({type(e).__name__}: {e})") from e


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

    def __init__(
        self,
        root,
        split=None,
        split_seed: int = 0,
        val_fraction: float = 0.2,
        skip_bad: bool = False,
        transform=None,
    ):
        super().__init__(skip_bad, transform)
        self.root = Path(root)
        labels = self.root / RSNA_LABELS
        boxes, errors = _read_rsna_labels(labels)
        classes = _read_rsna_classes(self.root / RSNA_CLASSES)
        strata = {pid: bool(b) for pid, b in boxes.items()}
        chosen = split_ids(boxes, split, split_seed, val_fraction, strata)
        self.items = []
        for pid in chosen:
            item = self._check(pid, boxes[pid], errors[pid], labels)
            if item is not None:
                self.items.append((*item, classes.get(pid)))
        self.ids = [item[0] for item in self.items]
        self._warn_skipped(len(chosen))

    def _check(self, pid, boxes, error, labels):
        """(pid, path, boxes [K, 4] x1y1x2y2) or None when skipped."""
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
                return self._bad(pid, "unreadable image", str(e))
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
        return pid, path, xyxy

    def __len__(self) -> int:
        return len(self.items)

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


# ----------------------------------------------------------------------------- DSB-2018


def _png_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("P", "PA"):  # palette: expand to the colours it means
            im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
        return np.asarray(im)


class DSB2018Dataset(_Checked):
    """2018 Data Science Bowl stage1_train layout: `root/<id>/images/<id>.png` and
    `root/<id>/masks/*.png`, one binary mask per nucleus.

    Sample: "image" float32 [1, H, W] (rgb=False: mean of R, G, B; alpha dropped) or [3, H, W]
    (rgb=True), 0..255; "mask" uint8 [H, W] 0/1 (union of the masks); "instances" int32 [H, W]
    numbering the non-empty masks 1..K in file-name order (pixels claimed by two masks stay
    with the first and are counted in meta["overlap_pixels"]; masks left with no pixel are
    counted in meta["empty_masks"]); "boxes" float32 [K, 4] x1y1x2y2 of the instances;
    "labels" int64 [K] all 1. meta: path, size (H, W), n_masks, overlap_pixels, empty_masks.
    Folders whose name starts with "." (e.g. unfinished synthetic samples) are ignored.

    Checked at construction: the image file exists, the masks folder exists, every mask has the
    image's size (ValueError naming the mask file). An image without masks is kept (K = 0).
    """

    def __init__(
        self,
        root,
        rgb: bool = False,
        split=None,
        split_seed: int = 0,
        val_fraction: float = 0.2,
        skip_bad: bool = False,
        transform=None,
    ):
        super().__init__(skip_bad, transform)
        self.root = Path(root)
        self.rgb = bool(rgb)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: DSB-2018 folder not found")
        ids = _subfolders(self.root)
        chosen = split_ids(ids, split, split_seed, val_fraction)
        self.items = [item for item in map(self._check, chosen) if item is not None]
        self.ids = [item[0] for item in self.items]
        self._warn_skipped(len(chosen))

    def _check(self, sid: str):
        """(id, image path, [mask paths]) or None when skipped."""
        image = self.root / sid / "images" / f"{sid}.png"
        masks_dir = self.root / sid / "masks"
        if not image.is_file():
            return self._bad(sid, "missing image", f"{image}: image not found", FileNotFoundError)
        if not masks_dir.is_dir():
            return self._bad(
                sid, "missing masks", f"{masks_dir}: masks folder not found", FileNotFoundError
            )
        masks = sorted(masks_dir.glob("*.png"))
        size = _png_size(image)
        for mask in masks:
            if _png_size(mask) != size:
                return self._bad(
                    sid,
                    "size mismatch",
                    f"{mask}: mask size (H, W) = "
                    f"{_png_size(mask)} differs from image {image} {size}",
                )
        return sid, image, masks

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        sid, image_path, mask_paths = self.items[index]
        image = _read_png(image_path)
        instances = np.zeros(image.shape[:2], np.int32)
        overlap = empty = 0
        for path in mask_paths:
            m = _read_png(path)
            m = (m if m.ndim == 2 else m[..., 0]) > 0
            overlap += int(np.count_nonzero(m & (instances > 0)))
            new = m & (instances == 0)
            if new.any():
                instances[new] = instances.max() + 1
            else:  # an empty mask, or one wholly under earlier masks: no instance, counted
                empty += 1
        boxes = boxes_from_instances(instances)
        sample = {
            "image": image_tensor(image, rgb=self.rgb),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            "mask": torch.from_numpy((instances > 0).astype(np.uint8)),
            "instances": torch.from_numpy(instances),
            "id": sid,
            "meta": {
                "path": str(image_path),
                "size": instances.shape,
                "n_masks": len(mask_paths),
                "overlap_pixels": overlap,
                "empty_masks": empty,
            },
        }
        return self._finish(sample)


# ----------------------------------------------------------------------------- image folders


def _stem(path: Path) -> str | None:
    """The name without a supported extension, or None when the file is not supported."""
    name = path.name.lower()
    for ext in _FOLDER_EXTS:
        if name.endswith(ext):
            return path.name[: -len(ext)]
    return None


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI)


def _nibabel(path: Path):
    try:
        import nibabel
    except ImportError:
        raise ImportError(f"{path}: reading NIfTI needs nibabel (pip install nibabel)") from None
    return nibabel


def _shape_2d(path: Path) -> tuple[int, int]:
    """(H, W) of a 2-D image file from its header (PNG, TIFF, DICOM, NIfTI)."""
    suffix = path.name.lower()
    if suffix.endswith(".dcm"):
        return _dicom_size(path)
    if suffix.endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
        return _plane_shape(path, shape)
    if _is_nifti(path):
        shape = _nibabel(path).load(path).shape
        return _plane_shape(path, tuple(shape[:2])[::-1] + tuple(shape[2:]))
    return _png_size(path)


def _plane_shape(path: Path, shape) -> tuple[int, int]:
    """(H, W) of [H, W], [H, W, C<=4] or with trailing singleton axes; else ValueError."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] <= 4):
        return shape[0], shape[1]
    raise ValueError(
        f"{path}: expected a 2-D image, got shape {shape} (volumes: use MRISliceDataset)"
    )


def read_image_2d(path: Path) -> np.ndarray:
    """[H, W] or [H, W, C] array of a PNG, TIFF, DICOM (load_dicom, modality units) or 2-D
    NIfTI file (NIfTI's (x, y) axes transposed to (row, column))."""
    suffix = path.name.lower()
    if suffix.endswith(".dcm"):
        from fastdet.data.dicom import load_dicom

        return load_dicom(path)
    if suffix.endswith((".tif", ".tiff")):
        import tifffile

        a = tifffile.imread(path)
    elif _is_nifti(path):
        a = np.asarray(_nibabel(path).load(path).dataobj)
        a = a.reshape(a.shape[:2] + tuple(s for s in a.shape[2:] if s != 1)).swapaxes(0, 1)
    else:
        a = _read_png(path)
    while a.ndim > 2 and a.shape[-1] == 1:  # [H, W, 1]: grey
        a = a[..., 0]
    _plane_shape(path, a.shape)  # raises for volumes
    return a


class ImageFolderDataset(_Checked):
    """`root/images/` and `root/masks/` with matching stems: `images/case7.dcm` pairs with
    `masks/case7.png` (PNG, TIFF, DICOM, NIfTI .nii/.nii.gz through nibabel; any mix).

    Sample: "image" float32 [C, H, W] (rgb=False: one channel, colour averaged and alpha
    dropped; rgb=True: 3; None: the file's channels), "mask" uint8 [H, W]: binarize=True gives
    mask > 0 as 0/1, binarize=False keeps the label values (which must be integers in
    0..255). meta: path, mask_path, size. Files with other extensions are ignored.

    Checked at construction: every image has a mask (FileNotFoundError naming the image), a
    stem appears once per folder, image and mask sizes match (ValueError naming the mask).
    """

    def __init__(
        self,
        root,
        images: str = "images",
        masks: str = "masks",
        rgb: bool | None = False,
        binarize: bool = True,
        split=None,
        split_seed: int = 0,
        val_fraction: float = 0.2,
        skip_bad: bool = False,
        transform=None,
    ):
        super().__init__(skip_bad, transform)
        self.root = Path(root)
        self.rgb, self.binarize = rgb, bool(binarize)
        self.images_dir, self.masks_dir = self.root / images, self.root / masks
        for folder in (self.images_dir, self.masks_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: folder not found")
        image_files = self._by_stem(self.images_dir)
        self._masks = self._by_stem(self.masks_dir)
        chosen = split_ids(sorted(image_files), split, split_seed, val_fraction)
        self.items = [item for item in (self._check(s, image_files[s]) for s in chosen) if item]
        self.ids = [item[0] for item in self.items]
        self._warn_skipped(len(chosen))

    @staticmethod
    def _by_stem(folder: Path) -> dict:
        """{stem: [paths]} of the supported files in `folder` (hidden files ignored)."""
        out: dict = {}
        for path in sorted(folder.iterdir()):
            stem = _stem(path)
            if stem is not None and path.is_file() and not path.name.startswith("."):
                out.setdefault(stem, []).append(path)
        return out

    def _check(self, stem: str, images: list):
        """(stem, image path, mask path) or None when skipped."""
        masks = self._masks.get(stem, [])
        for kind, paths in (("image", images), ("mask", masks)):
            if len(paths) > 1:
                return self._bad(
                    stem,
                    "ambiguous stem",
                    f"{paths[0]}: several {kind} files "
                    f"share the stem {stem!r}: {[p.name for p in paths]}",
                )
        if not masks:
            return self._bad(
                stem,
                "missing mask",
                f"{images[0]}: no mask with stem {stem!r} in {self.masks_dir}",
                FileNotFoundError,
            )
        try:
            size, mask_size = _shape_2d(images[0]), _shape_2d(masks[0])
        except (ValueError, ImportError) as e:
            return self._bad(stem, "unreadable file", str(e), type(e))
        if size != mask_size:
            return self._bad(
                stem,
                "size mismatch",
                f"{masks[0]}: mask size (H, W) = {mask_size} differs from image {images[0]} {size}",
            )
        return stem, images[0], masks[0]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        stem, image_path, mask_path = self.items[index]
        image = read_image_2d(image_path)
        mask = read_image_2d(mask_path)
        if mask.ndim == 3:
            mask = mask[..., 0]  # RGB(A) masks: the first channel
        sample = {
            "image": image_tensor(image, rgb=self.rgb),
            "mask": torch.from_numpy(_mask_uint8(mask, self.binarize, mask_path)),
            "id": stem,
            "meta": {
                "path": str(image_path),
                "mask_path": str(mask_path),
                "size": tuple(mask.shape),
            },
        }
        return self._finish(sample)


def _mask_uint8(mask: np.ndarray, binarize: bool, path) -> np.ndarray:
    """0/1 when binarising, else the label values, which must be integers in 0..255."""
    if binarize:
        return (mask > 0).astype(np.uint8)
    m = np.asarray(mask)
    if m.size and (m.min() < 0 or m.max() > 255 or not np.array_equal(m, np.round(m))):
        raise ValueError(
            f"{path}: mask labels must be integers in 0..255, got values {m.min()!r}..{m.max()!r}"
        )
    return m.astype(np.uint8)


# ----------------------------------------------------------------------------- MRI volumes

_LABEL_NAMES = ("label.nii.gz", "label.nii", "label.npz", "label.npy")
_IMAGE_NAMES = ("image.nii.gz", "image.nii")


def _axis_code(direction) -> str:
    """The LPS axis code ("L", "P", "S" or "R", "A", "I") a direction vector mostly points to."""
    d = np.asarray(direction, float)
    m = int(np.argmax(np.abs(d)))
    return "LPS"[m] if d[m] > 0 else "RAI"[m]


def _load_label(path: Path, codes_xyz) -> np.ndarray:
    """Label volume [Z, Y, X] (volume axis order). NIfTI is reoriented to `codes_xyz` (the axis
    codes of the image's column, row and slice axes) by an axis permutation / flip, then moved
    from (x, y, z) to (z, y, x); .npz ("label") and .npy are taken as already [Z, Y, X]."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            if "label" not in z:
                raise ValueError(f"{path}: no array named 'label' (found {list(z.keys())})")
            return np.asarray(z["label"])
    if path.suffix == ".npy":
        return np.load(path)
    nib = _nibabel(path)
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D label volume, got shape {data.shape}")
    if codes_xyz is not None:
        o = nib.orientations
        transform = o.ornt_transform(o.io_orientation(img.affine), o.axcodes2ornt(codes_xyz))
        data = o.apply_orientation(data, transform)
    return np.ascontiguousarray(data.transpose(2, 1, 0))


def _load_subject(folder: Path):
    """(volume float32 [Z, Y, X], label [Z, Y, X], meta) for one subject folder.

    meta: spacing (z, y, x) mm or None, codes (axis codes of the volume's axes, LPS letters;
    None when unknown), label_path, image_path (folder for a DICOM series)."""
    label_path = next((folder / n for n in _LABEL_NAMES if (folder / n).is_file()), None)
    if label_path is None:
        raise FileNotFoundError(f"{folder}: no label volume ({', '.join(_LABEL_NAMES)})")
    image_path = next((folder / n for n in _IMAGE_NAMES if (folder / n).is_file()), None)
    if image_path is not None:
        nib = _nibabel(image_path)
        img = nib.load(image_path)
        volume = np.asarray(img.dataobj, dtype=np.float32)
        if volume.ndim != 3:
            raise ValueError(f"{image_path}: expected a 3-D volume, got shape {volume.shape}")
        volume = np.ascontiguousarray(volume.transpose(2, 1, 0))
        # NIfTI codes are RAS letters of the same meaning as the LPS letters used here.
        codes_xyz = tuple(nib.orientations.aff2axcodes(img.affine))
        spacing = tuple(float(s) for s in img.header.get_zooms()[:3][::-1])
    else:
        from fastdet.data.dicom import load_dicom_series

        volume, dmeta = load_dicom_series(folder)
        spacing = dmeta.get("spacing")
        ori = dmeta.get("image_orientation")
        codes_xyz = None
        if ori is not None:
            r, c = np.asarray(ori[:3]), np.asarray(ori[3:])
            codes_xyz = (_axis_code(r), _axis_code(c), _axis_code(np.cross(r, c)))
        image_path = folder
    label = _load_label(label_path, codes_xyz)
    if label.shape != volume.shape:
        raise ValueError(
            f"{label_path}: label shape {label.shape} (Z, Y, X) differs from the "
            f"image volume {image_path} {volume.shape}"
        )
    codes = None if codes_xyz is None else tuple(codes_xyz[::-1])
    return (
        volume,
        label,
        {
            "spacing": spacing,
            "codes": codes,
            "label_path": str(label_path),
            "image_path": str(image_path),
        },
    )


def _plane_axis(plane: str, codes) -> int:
    """The volume axis to slice along for `plane`; unknown orientation means an axial stack."""
    codes = codes or ("S", "P", "L")
    for axis, code in enumerate(codes):
        if code in _PLANE_CODES[plane]:
            return axis
    raise ValueError(f"cannot find the {plane} axis among the volume axes {codes}")


class MRISliceDataset(_Checked):
    """2-D slices of per-subject MRI volumes: `root/<subject>/` holds a DICOM series (read with
    load_dicom_series) or `image.nii.gz`/`image.nii`, and a label volume `label.nii.gz`,
    `label.nii` (reoriented to the image's axes), or `label.npz` (key "label") / `label.npy`
    already in the volume's [Z, Y, X] slice order.

    `plane` picks the slicing axis from the image orientation: "transverse" (axial, S-I),
    "coronal" (A-P) or "sagittal" (L-R); a series without orientation is taken as axial.
    Sample: "image" float32 [1, h, w] (modality units), "mask" uint8 [h, w] (the label values),
    "id" "<subject>/<plane>/<index>", meta: subject, plane, index, spacing (row, col) mm or
    None, path, label_path. Every slice is included, also those without label.

    `subjects` restricts to those subject folders (before the split); `split` splits subjects
    ("train"/"val") with `split_seed`, so no subject is in both; `self.subjects` lists the
    subjects used. Volumes are read at construction (to check the label shape) and the last
    `cache_size` are kept in memory.
    """

    def __init__(
        self,
        root,
        plane: str = "transverse",
        split=None,
        split_seed: int = 0,
        val_fraction: float = 0.25,
        subjects=None,
        skip_bad: bool = False,
        transform=None,
        cache_size: int = 4,
    ):
        super().__init__(skip_bad, transform)
        if plane not in PLANES:
            raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
        self.root, self.plane = Path(root), plane
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: MRI folder not found")
        found = _subfolders(self.root)
        if subjects is not None:
            unknown = sorted(set(subjects) - set(found))
            if unknown:
                raise FileNotFoundError(f"{self.root}: no subject folder(s) {unknown}")
            found = [s for s in found if s in set(subjects)]
        chosen = split_ids(found, split, split_seed, val_fraction)
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = max(int(cache_size), 1)
        self._info: dict = {}
        self.index: list[tuple[str, int]] = []
        for subject in chosen:
            try:
                volume, label, meta = _load_subject(self.root / subject)
                axis = _plane_axis(plane, meta["codes"])
            except FileNotFoundError as e:
                self._bad(subject, "missing file", str(e), FileNotFoundError)
                continue
            except (ValueError, ImportError) as e:
                self._bad(subject, "bad volume", str(e), type(e))
                continue
            self._info[subject] = dict(meta, axis=axis)
            self._remember(subject, volume, label)
            self.index += [(subject, i) for i in range(volume.shape[axis])]
        self.subjects = list(self._info)
        self._warn_skipped(len(chosen))

    def _remember(self, subject, volume, label) -> None:
        self._cache[subject] = (volume, label)
        self._cache.move_to_end(subject)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _volume(self, subject):
        if subject in self._cache:
            self._cache.move_to_end(subject)
            return self._cache[subject]
        volume, label, _ = _load_subject(self.root / subject)
        self._remember(subject, volume, label)
        return volume, label

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        subject, i = self.index[index]
        info = self._info[subject]
        volume, label = self._volume(subject)
        axis = info["axis"]
        image = np.take(volume, i, axis=axis)
        mask = np.take(label, i, axis=axis)
        spacing = info["spacing"]
        if spacing is not None and None not in spacing:
            spacing = tuple(s for a, s in enumerate(spacing) if a != axis)
        sample = {
            "image": image_tensor(image),
            "mask": torch.from_numpy(_mask_uint8(mask, False, info["label_path"])),
            "id": f"{subject}/{self.plane}/{i:03d}",
            "meta": {
                "subject": subject,
                "plane": self.plane,
                "index": i,
                "spacing": spacing,
                "path": info["image_path"],
                "label_path": info["label_path"],
            },
        }
        return self._finish(sample)
