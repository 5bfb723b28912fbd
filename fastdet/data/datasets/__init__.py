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
`self.skipped` and warns with the count. Malformed files (truncated or corrupt images, masks,
volumes, a binary or ill-formed CSV, inconsistent sizes) raise fastdet.data.DataError, a
ValueError; a missing one FileNotFoundError. Construction reads headers (and checks PNGs whole),
not every pixel: a file damaged in its pixel data past those checks, e.g. a truncated DICOM,
raises DataError naming it when the sample is read.

Splits ("train" / "val") are by patient or subject, deterministic for a `split_seed` and
independent of skip_bad, so no patient or subject is ever in both.

Each dataset calls `transform(sample)` last when a transform is given.

One module per layout: rsna, dsb2018, folders (ImageFolderDataset: images/ and masks/), classes
(ClassFolderDataset: root/<class>/<image>, image-level labels), mri (MRISliceDataset); what
they share is in common.
"""

from .classes import ClassFolderDataset
from .common import boxes_from_instances, image_tensor, read_image_2d, split_ids
from .dsb2018 import DSB2018Dataset
from .folders import ImageFolderDataset
from .mri import PLANES, MRISliceDataset
from .rsna import LUNG_OPACITY, RSNA_CLASSES, RSNA_IMAGES, RSNA_LABELS, RSNADataset

__all__ = [
    "RSNADataset",
    "DSB2018Dataset",
    "ImageFolderDataset",
    "ClassFolderDataset",
    "MRISliceDataset",
    "split_ids",
    "boxes_from_instances",
    "image_tensor",
    "read_image_2d",
    "PLANES",
    "RSNA_LABELS",
    "RSNA_CLASSES",
    "RSNA_IMAGES",
    "LUNG_OPACITY",
]
