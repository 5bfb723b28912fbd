"""The inputs of `predict`: PNG, JPEG, TIFF, DICOM files (2-D), NIfTI, and folders holding a
DICOM series (a volume, predicted slice by slice); engine.archive lists them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.datasets import image_tensor, read_image_2d  # the datasets' own reading rules
from ..data.dicom import DataError, load_dicom, load_dicom_series

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")


def read_input(path) -> tuple[str, torch.Tensor | np.ndarray, dict]:
    """(kind, data, meta): kind "image" with a float32 [C, H, W] tensor (PNG, TIFF, DICOM,
    2-D NIfTI; colour as the datasets read it), or "volume" with a float32 [Z, H, W] array (a
    folder of DICOM files, or a multi-frame DICOM) and meta holding its spacing (z, y, x)."""
    path = Path(path)
    if path.is_dir():
        volume, meta = load_dicom_series(path)
        return "volume", volume, {"spacing": meta.get("spacing")}
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.name.lower().endswith(".dcm"):
        a = load_dicom(path)
        if a.ndim == 3 and a.shape[-1] not in (3, 4):
            return "volume", a, {"spacing": None}
        return "image", image_tensor(a, rgb=True if a.ndim == 3 else None), {}
    try:
        a = read_image_2d(path)
    except DataError:
        raise  # names the file already
    except ValueError as e:
        raise ValueError(f"{path}: cannot read as a 2-D image ({e})") from e
    # colour keeps R, G, B (alpha dropped); match_channels averages them for a grey model,
    # as the datasets' rgb=False does
    return "image", image_tensor(a, rgb=True if a.ndim == 3 else None), {}
