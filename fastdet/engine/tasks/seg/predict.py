"""Inference for segmentation: the training-time preprocessing (per-image standardization,
shorter side scaled to the training size), sliding-window tiling with overlap for images larger
than a tile (logits averaged where windows overlap), and the masks' files: 0/255 PNG masks;
NIfTI (nibabel) for volumes (engine.inputs reads the inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ....metrics import clean_mask
from ...archive import read_parts, write_csv
from .data import match_channels, standardize


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Window starts covering [0, length): regular steps, the last window flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


@torch.no_grad()
def sliding_window(model, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Logits [B, K, H, W] of `model` run on tile x tile windows of x [B, C, H, W] with
    `overlap` pixels between neighbours, averaged where windows overlap (a window near an edge
    is shifted inward rather than padded, so every window is full size)."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(
            f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}"
        )
    h, w = x.shape[-2:]
    stride = tile - overlap
    out = counts = None
    for y0 in _starts(h, tile, stride):
        for x0 in _starts(w, tile, stride):
            logits = model(x[..., y0 : y0 + tile, x0 : x0 + tile]).float()
            if out is None:
                out = x.new_zeros((x.shape[0], logits.shape[1], h, w), dtype=torch.float32)
                counts = x.new_zeros((1, 1, h, w), dtype=torch.float32)
            out[..., y0 : y0 + tile, x0 : x0 + tile] += logits
            counts[..., y0 : y0 + tile, x0 : x0 + tile] += 1
    return out / counts


@torch.no_grad()
def predict_logits(
    model, image, config, tile: int | None = None, overlap: int = 0, device="cpu"
) -> torch.Tensor:
    """Foreground logits [H, W] (CPU, float32) of one image [C, H, W] at its own size.

    As in training: channels matched to config.in_channels, per-image standardization, and
    (config.resize) the shorter side scaled to config.size; the logits are scaled back.
    tile: window side for sliding-window inference when the (scaled) image is larger than it;
    None or 0 runs the whole image at once."""
    img = match_channels(torch.as_tensor(image).float(), config.in_channels)
    h, w = img.shape[-2:]
    x = standardize(img[None].to(device))
    if config.resize:
        s = config.size / min(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=s < 1)
    if tile and max(x.shape[-2:]) > tile:
        logits = sliding_window(model, x, tile, overlap)
    else:
        logits = model(x).float()
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits[0, 0].cpu()


def predict_mask(
    model, image, config, tile=None, overlap=0, device="cpu", post_process=False, min_size: int = 16
) -> np.ndarray:
    """bool [H, W]: logits > 0, cleaned (small objects removed, holes filled) with post_process."""
    mask = (predict_logits(model, image, config, tile, overlap, device) > 0).numpy()
    if post_process:
        mask = clean_mask(mask, min_size=min_size, fill=True)
    return mask


# ---------------------------------------------------------------------- archives

MASKS = ["path", "mask", "foreground_pixels"]


def batch_predictor(model, out: Path, **opts):
    """predict(batch) for engine.archive.Job: each input's mask file (<stem>_mask.png for an
    image, <stem>_mask.nii.gz for a volume) in `out` and its masks row; opts: predict_mask's."""

    def predict(batch):
        rows = []
        for _, path, (kind, data, meta), _ in batch:
            stem = path.name.split(".")[0] if path.is_file() else path.name
            if kind == "image":
                mask = predict_mask(model, data, **opts)
                written = write_png_mask(out / f"{stem}_mask.png", mask)
            else:
                slices = [predict_mask(model, torch.from_numpy(s[None]), **opts) for s in data]
                mask = np.stack(slices)
                written = write_volume_mask(out / f"{stem}_mask", mask, meta.get("spacing"))
            rows.append({"masks": [[str(path), written.name, int(mask.sum())]]})
        return rows

    return predict


def merge(out: Path, settings: dict) -> list[Path]:
    """masks.csv: every input's mask file and foreground pixels, sorted by path."""
    rows = sorted(read_parts(out, "masks"), key=lambda r: r["path"])
    return [write_csv(out / "masks.csv", MASKS, [[r[k] for k in MASKS] for r in rows])]


# ---------------------------------------------------------------------- files


def write_png_mask(path, mask: np.ndarray) -> Path:
    """uint8 PNG, 255 foreground, 0 background."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)
    return path


def write_volume_mask(path_stem, mask: np.ndarray, spacing=None) -> Path:
    """uint8 0/1 [Z, H, W] as NIfTI (x, y, z axes, diagonal affine from the spacing) when
    nibabel is installed, else as .npy."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    try:
        import nibabel as nib
    except ImportError:
        path = path_stem.with_name(path_stem.name + ".npy")
        np.save(path, mask.astype(np.uint8))
        return path
    z, y, x = (float(s) for s in spacing) if spacing and None not in spacing else (1.0, 1.0, 1.0)
    img = nib.Nifti1Image(
        np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)), np.diag([x, y, z, 1.0])
    )
    path = path_stem.with_name(path_stem.name + ".nii.gz")
    nib.save(img, path)
    return path
