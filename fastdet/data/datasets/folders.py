"""Image folders: `root/images/` and `root/masks/` paired by file stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .common import (
    _NIFTI,
    _Checked,
    _dicom_size,
    _files,
    _folder,
    _is_nifti,
    _mask_uint8,
    _nibabel,
    _plane_shape,
    _png_size,
    _reading,
    boxes_from_instances,
    chosen_ids,
    image_tensor,
    layout_error,
    looks_like,
    read_image_2d,
)

_FOLDER_EXTS = (".png", ".tif", ".tiff", ".dcm") + _NIFTI


def _stem(path: Path) -> str | None:
    """The name without a supported extension, or None when the file is not supported."""
    name = path.name.lower()
    for ext in _FOLDER_EXTS:
        if name.endswith(ext):
            return path.name[: -len(ext)]
    return None


def _shape_2d(path: Path) -> tuple[int, int]:
    """(H, W) of a 2-D image file from its header (PNG, TIFF, DICOM, NIfTI)."""
    suffix = path.name.lower()
    if suffix.endswith(".dcm"):
        return _dicom_size(path)
    if suffix.endswith((".tif", ".tiff")):
        import tifffile

        with _reading(path, "TIFF file"), tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
        return _plane_shape(path, shape)
    if _is_nifti(path):
        nib = _nibabel(path)
        with _reading(path, "NIfTI file"):
            shape = nib.load(path).shape
        return _plane_shape(path, tuple(shape[:2])[::-1] + tuple(shape[2:]))
    return _png_size(path)


class ImageFolderDataset(_Checked):
    """`root/images/` and `root/masks/` with matching stems: `images/case7.dcm` pairs with
    `masks/case7.png` (PNG, TIFF, DICOM, NIfTI .nii/.nii.gz through nibabel; any mix).

    Sample: "image" float32 [C, H, W] (rgb=False: one channel, colour averaged and alpha
    dropped; rgb=True: 3; None: the file's channels), "mask" uint8 [H, W]: binarize=True gives
    mask > 0 as 0/1, binarize=False keeps the label values (which must be integers in
    0..255). meta: path, mask_path, size. Files with other extensions are ignored.

    instances=True reads each mask as an instance label image (integers, 0 background; any
    integer dtype, e.g. uint16 PNG/TIFF for hundreds of objects) and adds "instances" int32
    [H, W] renumbered 1..K in order of the original labels, "boxes" float32 [K, 4] x1y1x2y2
    and "labels" int64 [K] all 1 (the detection and instance tasks' sample); "mask" is then
    instances > 0.

    Checked at construction: every image has a mask (FileNotFoundError naming the image), a
    stem appears once per folder, headers are readable and PNGs whole (DataError naming the
    file), image and mask sizes match (ValueError naming the mask).
    """

    def __init__(
        self,
        root,
        images: str = "images",
        masks: str = "masks",
        rgb: bool | None = False,
        binarize: bool = True,
        instances: bool = False,
        skip_bad: bool = False,
        transform=None,
        **split,
    ):
        self.root = Path(root)
        super().__init__(skip_bad, transform)
        self.rgb, self.binarize, self.instances = rgb, bool(binarize), bool(instances)
        if not (self.root / images).is_dir() and self.root.is_dir() and looks_like(self.root):
            raise layout_error(self.root, "folders")
        self.images_dir, self.masks_dir = _folder(self.root / images), _folder(self.root / masks)
        image_files = self._by_stem(self.images_dir)
        self._masks = self._by_stem(self.masks_dir)
        chosen = chosen_ids(sorted(image_files), **split)
        self._check_all(chosen, lambda s: self._check(s, image_files[s]))

    @staticmethod
    def _by_stem(folder: Path) -> dict:
        """{stem: [paths]} of the supported files in `folder` (hidden files ignored)."""
        out: dict = {}
        for path in _files(folder):
            stem = _stem(path)
            if stem is not None:
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
        except (ValueError, ImportError) as e:  # DataError, or nibabel not installed
            return self._bad(stem, "unreadable file", e)
        if size != mask_size:
            return self._bad(
                stem,
                "size mismatch",
                f"{masks[0]}: mask size (H, W) = {mask_size} differs from image {images[0]} {size}",
            )
        return stem, images[0], masks[0]

    def __getitem__(self, index: int) -> dict:
        stem, image_path, mask_path = self.items[index]
        image = read_image_2d(image_path)
        mask = read_image_2d(mask_path)
        if mask.ndim == 3:
            mask = mask[..., 0]  # RGB(A) masks: the first channel
        sample = {
            "image": image_tensor(image, rgb=self.rgb),
            "id": stem,
            "meta": {
                "path": str(image_path),
                "mask_path": str(mask_path),
                "size": tuple(mask.shape),
            },
        }
        if self.instances:
            inst = _instance_labels(mask, mask_path)
            boxes = boxes_from_instances(inst)
            sample["instances"] = torch.from_numpy(inst)
            sample["boxes"] = torch.from_numpy(boxes)
            sample["labels"] = torch.ones(len(boxes), dtype=torch.int64)
            sample["mask"] = torch.from_numpy((inst > 0).astype(np.uint8))
        else:
            sample["mask"] = torch.from_numpy(_mask_uint8(mask, self.binarize, mask_path))
        return self._finish(sample)


def _instance_labels(mask: np.ndarray, path: Path) -> np.ndarray:
    """int32 [H, W]: an integer label image renumbered 1..K (0 stays background)."""
    if not np.issubdtype(mask.dtype, np.integer) and not np.array_equal(mask, np.round(mask)):
        raise ValueError(f"{path}: an instance label image must hold integers, got {mask.dtype}")
    if mask.size and mask.min() < 0:
        raise ValueError(f"{path}: instance labels must be >= 0, found {mask.min()}")
    ids, inverse = np.unique(mask, return_inverse=True)
    if ids[0] != 0:  # no background pixel: every id is an instance
        inverse = inverse + 1
    return inverse.reshape(mask.shape).astype(np.int32)
