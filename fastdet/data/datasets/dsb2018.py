"""2018 Data Science Bowl (stage1_train) layout."""

from __future__ import annotations

import numpy as np
import torch

from fastdet.data.dicom import DataError

from .common import (
    _Checked,
    _folder,
    _png_size,
    _read_png,
    _subfolders,
    boxes_from_instances,
    chosen_ids,
    image_tensor,
    layout_error,
)


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

    Checked at construction: the image file exists, the masks folder exists, every PNG is whole
    (PIL's verify: truncation, chunk checksums; DataError naming the file), every mask has the
    image's size (ValueError naming the mask file). An image without masks is kept (K = 0).
    """

    def __init__(
        self,
        root,
        rgb: bool = False,
        skip_bad: bool = False,
        transform=None,
        **split,
    ):
        self.root = _folder(root, "DSB-2018 folder")
        self.rgb = bool(rgb)
        super().__init__(skip_bad, transform)
        ids = _subfolders(self.root)
        if ids and not any((self.root / s / "images" / f"{s}.png").is_file() for s in ids):
            raise layout_error(self.root, "dsb2018")  # not one image folder: another layout
        self._check_all(
            chosen_ids(ids, **split),
            self._check,
        )

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
        try:
            size = _png_size(image)
            for mask in masks:
                mask_size = _png_size(mask)
                if mask_size != size:
                    return self._bad(
                        sid,
                        "size mismatch",
                        f"{mask}: mask size (H, W) = {mask_size} differs from image {image} {size}",
                    )
        except DataError as e:  # truncated or corrupt PNG
            return self._bad(sid, "unreadable file", e)
        return sid, image, masks

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
