"""Data: DICOM loading, the datasets' on-disk layouts, transforms and synthetic datasets.

- dicom: load_dicom (modality LUT, VOI LUT or window, MONOCHROME1 inverted, multi-frame),
  load_dicom_series (a volume sorted by position, with spacing); DataError (a ValueError) for
  any damaged or malformed data file, image, mask, volume or CSV, its message starting with the
  file's path, and its subclass DicomError for DICOM files.
- datasets: RSNADataset, DSB2018Dataset, ImageFolderDataset, ClassFolderDataset,
  MRISliceDataset (torch Datasets of sample dicts: image, boxes/labels and/or mask/instances or
  an image-level label, id, meta), split_ids.
- transforms: Resize, RandomCrop, flips, HistogramEqualization, Window, CaffeNormalize, Compose.
- synthetic: synth("rsna" | "dsb2018" | "mri", out) writes a small dataset in the real layout.
"""

from . import transforms
from .datasets import (
    ClassFolderDataset,
    DSB2018Dataset,
    ImageFolderDataset,
    MRISliceDataset,
    RSNADataset,
    boxes_from_instances,
    split_ids,
)
from .dicom import DataError, DicomError, load_dicom, load_dicom_series
from .synthetic import synth, synth_dsb2018, synth_mri, synth_rsna

__all__ = [
    "DataError",
    "DicomError",
    "load_dicom",
    "load_dicom_series",
    "RSNADataset",
    "DSB2018Dataset",
    "ImageFolderDataset",
    "ClassFolderDataset",
    "MRISliceDataset",
    "split_ids",
    "boxes_from_instances",
    "transforms",
    "synth",
    "synth_rsna",
    "synth_dsb2018",
    "synth_mri",
]
