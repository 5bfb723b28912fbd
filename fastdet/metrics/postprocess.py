"""Mask post-processing: the clean-up a BCE-trained U-Net's output needs (isolated pixels, holes,
spurious blobs) and the split of touching instances, on 2-D images and 3-D volumes.

Masks are binary arrays (bool, or 0/1 integers or floats; numpy or torch) and results are numpy
bool masks or int32 label images (0 = background). `connectivity` is scipy/scikit-image's: 1
joins pixels sharing a face (4-neighbourhood in 2-D, 6 in 3-D), ndim joins any touching pixels
(8 in 2-D, 26 in 3-D). Built on scipy.ndimage and scikit-image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from . import _inputs as inputs


def _mask(mask, name: str = "mask") -> np.ndarray:
    m = inputs.binary(mask, name)
    if m.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D or 3-D, got shape {tuple(m.shape)}")
    return m


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if not isinstance(connectivity, (int, np.integer)) or not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be an int in [1, {ndim}], got {connectivity!r}")
    return ndi.generate_binary_structure(ndim, int(connectivity))


def label_components(mask, *, connectivity: int = 1):
    """Connected components: (labels int32 of the mask's shape, count)."""
    m = _mask(mask)
    lab, n = ndi.label(m, structure=_structure(m.ndim, connectivity))
    return lab.astype(np.int32), int(n)


def keep_largest_component(mask, *, connectivity: int = 1) -> np.ndarray:
    """Keep only the largest connected component (ties: the first in raster order).
    An empty mask stays empty."""
    lab, n = label_components(mask, connectivity=connectivity)
    if n == 0:
        return np.zeros(lab.shape, bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def remove_small_objects(mask, min_size: int, *, connectivity: int = 1) -> np.ndarray:
    """Drop connected components with fewer than `min_size` pixels (voxels); keeps the rest."""
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    lab, n = label_components(mask, connectivity=connectivity)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[lab]


def fill_holes(mask, *, max_size=None, per_slice: bool = False) -> np.ndarray:
    """Fill background regions enclosed by the mask (not connected to the array border).

    max_size: fill only holes of at most this many pixels (None: all). per_slice: for a 3-D
    volume, fill each 2-D slice along axis 0 (a lumen open along the volume's axis is a hole in
    every slice, not in 3-D). Holes are face-connected background regions, as scipy defines them.
    """
    m = _mask(mask)
    if per_slice and m.ndim == 3:
        return np.stack([fill_holes(s, max_size=max_size) for s in m]) if len(m) else m.copy()
    filled = ndi.binary_fill_holes(m)
    if max_size is None:
        return filled
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
    holes, _ = ndi.label(filled & ~m)
    sizes = np.bincount(holes.ravel())
    small = sizes <= max_size
    small[0] = False
    return m | small[holes]


def split_instances(
    mask, *, min_distance: int = 5, connectivity: int = 1, sigma: float = 0.0
) -> np.ndarray:
    """Split touching objects: watershed of the negated Euclidean distance transform, seeded at
    its local maxima (peaks at least `min_distance` pixels apart, found per component).

    Returns an int32 label image (labels 1..N, 0 = background). Every connected component gets at
    least one label, so nothing in the mask is lost. sigma > 0 smooths the distance map first,
    which merges the spurious peaks of ragged outlines. Works on 2-D and 3-D masks."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import relabel_sequential, watershed

    m = _mask(mask)
    if min_distance < 1:
        raise ValueError(f"min_distance must be >= 1, got {min_distance}")
    comps, n = ndi.label(m, structure=_structure(m.ndim, connectivity))
    if n == 0:
        return np.zeros(m.shape, np.int32)
    dist = ndi.distance_transform_edt(m)
    if sigma > 0:
        dist = ndi.gaussian_filter(dist, sigma) * m
    peaks = peak_local_max(dist, min_distance=int(min_distance), labels=comps, exclude_border=False)
    markers = np.zeros(m.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    lab = watershed(-dist, markers, mask=m, connectivity=connectivity)
    # a component without a peak (e.g. a flat one pixel wide) keeps its own label
    lost = m & (lab == 0)
    if lost.any():
        extra, _ = ndi.label(lost, structure=_structure(m.ndim, connectivity))
        lab = np.where(lost, extra + lab.max(), lab)
    return relabel_sequential(lab.astype(np.int32))[0]


def clean_mask(
    mask,
    *,
    threshold=None,
    min_size: int = 64,
    fill: bool = True,
    keep_largest: bool = False,
    connectivity: int = 1,
) -> np.ndarray:
    """The usual clean-up of a U-Net's output: threshold probabilities (if `threshold` is given,
    `mask > threshold`), remove components under `min_size` pixels, fill holes, and optionally
    keep only the largest component (one organ per image, e.g. a lung field or the prostate)."""
    if threshold is not None:
        a = inputs.to_numpy(mask, "mask")
        mask = np.asarray(a, np.float64) > float(threshold)
    m = remove_small_objects(mask, min_size, connectivity=connectivity)
    if fill:
        m = fill_holes(m)
    if keep_largest:
        m = keep_largest_component(m, connectivity=connectivity)
    return m
