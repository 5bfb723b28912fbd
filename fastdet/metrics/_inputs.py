"""Input plumbing for the metrics: numpy arrays or torch tensors in, numpy out, with the
validation every metric shares (types, shapes, binary values, label images, box lists)."""

from __future__ import annotations

import numpy as np

try:  # torch is a dependency of fastdet, but the metrics do not need it to run
    import torch
except ImportError:  # pragma: no cover
    torch = None


def to_numpy(x, name: str) -> np.ndarray:
    """A numpy view of a numpy array or torch tensor (detached, on the CPU); TypeError otherwise."""
    if isinstance(x, np.ndarray):
        return x
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    raise TypeError(f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")


def binary(x, name: str) -> np.ndarray:
    """`x` as a bool array; ValueError unless it is bool or holds only 0 and 1."""
    a = to_numpy(x, name)
    if a.dtype == bool:
        return a
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name} must be a bool, integer or float array, got dtype {a.dtype}")
    # NaN fails both comparisons, so it is reported as non-binary too
    if a.size and np.any((a != 0) & (a != 1)):
        bad = a[(a != 0) & (a != 1)].flat[0]
        raise ValueError(f"{name} must be binary (bool or values 0 and 1), found value {bad}")
    return a.astype(bool)


def labels(x, name: str) -> np.ndarray:
    """`x` as an integer label image (0 = background); ValueError on negative labels."""
    a = to_numpy(x, name)
    if a.dtype == bool:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer (or bool) label image, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must hold labels >= 0 (0 = background), found {a.min()}")
    return a


def same_shape(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{na} and {nb} must have the same shape, got {na} {tuple(a.shape)} "
            f"and {nb} {tuple(b.shape)}"
        )


def same_length(a, b, na: str, nb: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{na} and {nb} must have the same length, got {len(a)} and {len(b)}")


def is_sequence(x) -> bool:
    return isinstance(x, (list, tuple))


def both_lists(a, b, na: str, nb: str, lists: str = "lists of arrays") -> bool:
    """True for two lists (or tuples) of one length, False for two single arrays; TypeError
    for one of each."""
    if not (is_sequence(a) or is_sequence(b)):
        return False
    if not (is_sequence(a) and is_sequence(b)):
        raise TypeError(
            f"{na} and {nb} must both be arrays or both be {lists}, got "
            f"{type(a).__name__} and {type(b).__name__}"
        )
    same_length(a, b, na, nb)
    return True


def square_matrix_names(cm: np.ndarray, names) -> list[str]:
    """The K class names of a square [K, K] confusion matrix as strings ("0".."K-1" for None);
    ValueError for a matrix that is not square, or another number of names."""
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square [K, K] matrix, got shape {cm.shape}")
    k = cm.shape[0]
    names = [str(i) for i in range(k)] if names is None else [str(n) for n in names]
    if len(names) != k:
        raise ValueError(f"names must have one entry per class ({k}), got {len(names)}")
    return names


def boxes(x, name: str) -> np.ndarray:
    """[N, 4] float64 boxes (x1, y1, x2, y2); ValueError on a bad shape or non-finite values."""
    a = to_numpy(x, name)
    if a.size == 0:
        return np.zeros((0, 4))
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4], got {tuple(a.shape)}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, found NaN or inf")
    return a


def vector(x, name: str, n: int, dtype) -> np.ndarray:
    """[n] vector; ValueError when its length is not n."""
    a = to_numpy(x, name).reshape(-1) if not np.isscalar(x) else np.asarray([x])
    if a.shape[0] != n:
        raise ValueError(f"{name} must have one entry per box ({n}), got {a.shape[0]}")
    return a.astype(dtype)


def detections(items, name: str, with_scores: bool) -> list[dict]:
    """Normalise a list of per-image dicts {"boxes", ["scores"], ["labels"]} to numpy.

    Missing "labels" means one class (all 0). Returns dicts with "boxes" [N, 4] float64,
    "labels" [N] int64 and, if `with_scores`, "scores" [N] float64."""
    if not is_sequence(items):
        raise TypeError(
            f"{name} must be a list of dicts, one per image, got {type(items).__name__}"
        )
    out = []
    for i, d in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(d, dict):
            raise TypeError(f"{where} must be a dict, got {type(d).__name__}")
        if "boxes" not in d:
            raise ValueError(f"{where} has no 'boxes' key")
        b = boxes(d["boxes"], f"{where}['boxes']")
        n = b.shape[0]
        lab = d.get("labels")
        lab = (
            np.zeros(n, np.int64) if lab is None else vector(lab, f"{where}['labels']", n, np.int64)
        )
        row = {"boxes": b, "labels": lab}
        if with_scores:
            if "scores" not in d:
                raise ValueError(f"{where} has no 'scores' key")
            s = vector(d["scores"], f"{where}['scores']", n, np.float64)
            if not np.isfinite(s).all():
                raise ValueError(f"{where}['scores'] must be finite, found NaN or inf")
            row["scores"] = s
        if "masks" in d:  # checked by the metric that uses them
            row["masks"] = d["masks"]
        out.append(row)
    return out
