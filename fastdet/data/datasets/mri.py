"""Per-subject MRI volumes (DICOM series or NIfTI with a label volume), sliced in one plane."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from fastdet.data.dicom import DataError

from .common import (
    _Checked,
    _folder,
    _mask_uint8,
    _nibabel,
    _reading,
    _subfolders,
    chosen_ids,
    image_tensor,
)

PLANES = ("transverse", "coronal", "sagittal")
_PLANE_CODES = {"sagittal": "LR", "coronal": "AP", "transverse": "SI"}
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
    if path.suffix in (".npz", ".npy"):
        with _reading(path, "NumPy file"):
            if path.suffix == ".npy":
                return np.load(path)
            with np.load(path) as z:
                if "label" not in z:
                    raise DataError(f"{path}: no array named 'label' (found {list(z.keys())})")
                return np.asarray(z["label"])
    nib = _nibabel(path)
    with _reading(path, "NIfTI file"):
        img = nib.load(path)
        data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D label volume, got shape {data.shape}")
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
        with _reading(image_path, "NIfTI file"):
            img = nib.load(image_path)
            volume = np.asarray(img.dataobj, dtype=np.float32)
        if volume.ndim != 3:
            raise DataError(f"{image_path}: expected a 3-D volume, got shape {volume.shape}")
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
        raise DataError(
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
        subjects=None,
        skip_bad: bool = False,
        transform=None,
        cache_size: int = 4,
        **split,
    ):
        split.setdefault("val_fraction", 0.25)
        super().__init__(skip_bad, transform)
        if plane not in PLANES:
            raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
        self.root, self.plane = _folder(root, "MRI folder"), plane
        found = _subfolders(self.root)
        if subjects is not None:
            unknown = sorted(set(subjects) - set(found))
            if unknown:
                raise FileNotFoundError(f"{self.root}: no subject folder(s) {unknown}")
            found = [s for s in found if s in set(subjects)]
        chosen = chosen_ids(found, **split)
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = max(int(cache_size), 1)
        self._info: dict = {}
        self.index: list[tuple[str, int]] = []
        for subject in chosen:
            try:
                volume, label, meta = _load_subject(self.root / subject)
                axis = _plane_axis(plane, meta["codes"])
            except FileNotFoundError as e:
                self._bad(subject, "missing file", e)
                continue
            except (ValueError, ImportError) as e:  # DataError / DicomError, or no nibabel
                self._bad(subject, "bad volume", e)
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
