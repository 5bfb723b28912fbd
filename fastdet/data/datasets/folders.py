"""Image folders: `root/images/` and `root/masks/` paired by file stem."""

from __future__ import annotations

from pathlib import Path

import torch

from .common import (
    _NIFTI,
    _Checked,
    _dicom_size,
    _is_nifti,
    _mask_uint8,
    _nibabel,
    _plane_shape,
    _png_size,
    _reading,
    image_tensor,
    read_image_2d,
    split_ids,
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
        except (ValueError, ImportError) as e:  # DataError, or nibabel not installed
            return self._bad(stem, "unreadable file", e)
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
