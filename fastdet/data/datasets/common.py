"""What the dataset layouts share: splits, the checked-dataset base, image tensors, boxes of
instance labels and the readers of 2-D image files (PNG, TIFF, DICOM, NIfTI)."""

from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fastdet.data.dicom import DataError, DicomError, _kind

_NIFTI = (".nii.gz", ".nii")


def split_ids(
    ids, split=None, seed: int = 0, val_fraction: float = 0.2, strata=None, test_fraction=0.0
) -> list:
    """The ids of one split, in their order in `ids`.

    split None returns all ids; "val" returns round(val_fraction * n) of them (at least 1 and at
    most n - 1 when n >= 2 and val_fraction > 0), "test" round(test_fraction * n) others (at
    least 1 when test_fraction > 0 and n >= 3, leaving at least one for training), "train" the
    rest. The choice depends only on the set of ids, `seed` and the fractions, not on their
    order; the val split does not depend on test_fraction (the test split is taken from what
    was training), so adding a test split to a run leaves its validation images as they were.
    `strata` (dict id -> key), when given, spreads each stratum over the splits in proportion
    (e.g. positives and negatives)."""
    ids = list(ids)
    if split is None:
        return ids
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be None, 'train', 'val' or 'test', got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not (0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(
            f"test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got "
            f"{test_fraction!r} (val_fraction {val_fraction!r})"
        )
    n = len(ids)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    n_test = round(test_fraction * n)
    if test_fraction > 0 and n >= 3:
        n_test = min(max(n_test, 1), n - n_val - 1)
    n_test = max(min(n_test, n - n_val - 1), 0)
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
    ranked = sorted(sorted(ids), key=lambda i: rank[i])
    val, test = set(ranked[:n_val]), set(ranked[n - n_test :] if n_test else ())
    part = {i: "val" if i in val else "test" if i in test else "train" for i in ids}
    return [i for i in ids if part[i] == split]


def chosen_ids(
    ids,
    strata=None,
    *,
    split=None,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> list:
    """split_ids under the keywords every layout's constructor takes (as **split): split
    (None, "train", "val", "test"), split_seed, val_fraction, test_fraction."""
    return split_ids(ids, split, split_seed, val_fraction, strata, test_fraction)


def _subfolders(root: Path) -> list[str]:
    """Sorted names of the folders in `root`, hidden ones (".name") left out."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    """Sorted paths of the files in `folder`, hidden ones (".name") left out."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _folder(path, what: str = "folder") -> Path:
    """`path` as a Path; FileNotFoundError ("<path>: <what> not found") unless it is a folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


# What each layout's root holds (the layout-mismatch message says it).
LAYOUT_SHAPES = {
    "rsna": "stage_2_train_labels.csv and stage_2_train_images/<patientId>.dcm",
    "dsb2018": "a folder per image, <id>/images/<id>.png with its masks in <id>/masks/*.png",
    "folders": "images/ and masks/ folders holding files of the same names",
}


def looks_like(root: Path) -> str | None:
    """The layout a folder's top level resembles (rsna, folders, dsb2018), else None."""
    if (root / "stage_2_train_labels.csv").is_file():
        return "rsna"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folders"
    if any((root / s / "images" / f"{s}.png").is_file() for s in _subfolders(root)[:20]):
        return "dsb2018"
    return None


def layout_error(root: Path, layout: str) -> DataError:
    """The error of a folder that is not in `layout`: the folder, what the layout expects and
    the layout it looks like, if any."""
    guess = looks_like(root)
    hint = f"; it looks like the {guess} layout (--layout {guess})" if guess else ""
    return DataError(f"{root}: not in the {layout} layout ({LAYOUT_SHAPES[layout]}){hint}")


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

    def _bad(self, item_id: str, kind: str, message, error=DataError) -> None:
        """Raise error(message) or, with skip_bad, record (item_id, "kind: message").
        `message` may be the exception caught, which is then raised as it is (its chain to
        the library's error kept) or recorded by its message."""
        if not self.skip_bad:
            raise message if isinstance(message, Exception) else error(message)
        self.skipped.append((str(item_id), f"{kind}: {message}"))

    def _check_all(self, keys: list, check) -> None:
        """items: check(key) for each key, less the skipped ones (None); ids: their keys (an
        item's first field). Warns of the skipped ones, as from the dataset's constructor."""
        self.items = [item for item in map(check, keys) if item is not None]
        self.ids = [item[0] for item in self.items]
        self._warn_skipped(len(keys), stacklevel=4)

    def __len__(self) -> int:
        return len(self.items)

    def _warn_skipped(self, total: int, stacklevel: int = 3) -> None:
        if self.skipped:
            counts = Counter(reason.split(":", 1)[0] for _, reason in self.skipped)
            why = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
            warnings.warn(
                f"{type(self).__name__}: skipped {len(self.skipped)} of {total} "
                f"item(s) ({why}); see .skipped",
                stacklevel=stacklevel,
            )

    def _finish(self, sample: dict) -> dict:
        return self.transform(sample) if self.transform is not None else sample


# ----------------------------------------------------------------------------- file readers


@contextmanager
def _reading(path: Path, what: str, error=DataError):
    """Turn a reader's error (PIL's "image file is truncated", tifffile's, nibabel's, zlib's,
    numpy's) into `error` naming the file; errors that already name it pass through."""
    try:
        yield
    except (DataError, FileNotFoundError, IsADirectoryError, PermissionError, ImportError):
        raise
    except Exception as e:  # noqa: BLE001 - the readers raise any type for damaged files
        raise error(f"{path}: not a readable {what} ({_kind(e)}: {e})") from e


def _dicom_size(path: Path) -> tuple[int, int]:
    """(rows, columns) from the DICOM header, without reading the pixels."""
    import pydicom

    with _reading(path, "DICOM file", DicomError):
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Rows), int(ds.Columns)


def _png_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header, after PIL's verify: a truncated file or a bad
    chunk checksum is found here, at a dataset's construction (where skip_bad can leave the
    item out) rather than mid-epoch. verify checks without decoding (~1 ms for 3 MB)."""
    from PIL import Image

    with _reading(path, "image file"):
        with Image.open(path) as im:
            size = im.size[1], im.size[0]
            im.verify()
        return size


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with _reading(path, "image file"):
        with Image.open(path) as im:
            if im.mode in ("P", "PA"):  # palette: expand to the colours it means
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            return np.asarray(im)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI)


def _nibabel(path: Path):
    try:
        import nibabel
    except ImportError:
        raise ImportError(f"{path}: reading NIfTI needs nibabel (pip install nibabel)") from None
    return nibabel


def _plane_shape(path: Path, shape) -> tuple[int, int]:
    """(H, W) of [H, W], [H, W, C<=4] or with trailing singleton axes; else ValueError."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] <= 4):
        return shape[0], shape[1]
    raise DataError(
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

        with _reading(path, "TIFF file"):
            a = tifffile.imread(path)
    elif _is_nifti(path):
        nib = _nibabel(path)
        with _reading(path, "NIfTI file"):
            a = np.asarray(nib.load(path).dataobj)
        a = a.reshape(a.shape[:2] + tuple(s for s in a.shape[2:] if s != 1)).swapaxes(0, 1)
    else:
        a = _read_png(path)
    while a.ndim > 2 and a.shape[-1] == 1:  # [H, W, 1]: grey
        a = a[..., 0]
    _plane_shape(path, a.shape)  # raises for volumes
    return a


def _mask_uint8(mask: np.ndarray, binarize: bool, path) -> np.ndarray:
    """0/1 when binarising, else the label values, which must be integers in 0..255."""
    if binarize:
        return (mask > 0).astype(np.uint8)
    m = np.asarray(mask)
    if m.size and (m.min() < 0 or m.max() > 255 or not np.array_equal(m, np.round(m))):
        raise DataError(
            f"{path}: mask labels must be integers in 0..255, got values {m.min()!r}..{m.max()!r}"
        )
    return m.astype(np.uint8)
