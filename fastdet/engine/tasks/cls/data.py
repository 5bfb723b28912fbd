"""Classification's data: the class names and labels of a dataset, a dataset image to the
network's input (`prepare_image`, shared by training, prediction, evaluation and a gate), the
training pairs with flips drawn from (seed, epoch, index) and balanced sampling, and the
datasets of the layouts with image-level labels.

Input pipeline: channels matched to config.in_channels (grey repeated, colour averaged), the
image resized to config.size x config.size (bilinear, antialiased when shrinking; the aspect
ratio is not kept), then per-image standardization (zero mean, unit std). The standardization
makes the input independent of the image's units: a dataset image in file units (0..255, HU)
and the same image scaled to [0, 1] and repeated to 3 channels (detection's input) give the
same network input."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ....data.datasets import ClassFolderDataset, RSNADataset
from ...sampling import EpochDataset
from ..seg.data import match_channels, standardize
from .lungs import lung_cropper

CLS_LAYOUTS = ("rsna", "classes")
# The RSNA challenge's stage_2_detailed_class_info.csv classes, in the label order fastdet uses.
RSNA_CLASS_ORDER = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")


def _base(dataset):
    """(dataset, indices or None) through torch Subsets (nested ones composed)."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        idx = list(dataset.indices)
        indices = idx if indices is None else [idx[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def class_name_list(dataset) -> list:
    """The class name of each item of a dataset of sample dicts, read without the images where
    the dataset allows (ClassFolderDataset, RSNADataset, Subsets of them); otherwise each
    sample's meta["class"] (RSNA's name, the folder's name) or, failing that, its "label"."""
    base, indices = _base(dataset)
    if isinstance(base, ClassFolderDataset):
        names = [base.classes[t] for t in base.targets]
    elif isinstance(base, RSNADataset):
        names = [item[3] for item in base.items]
        missing = [item[0] for item, n in zip(base.items, names) if n is None]
        if missing:
            raise ValueError(
                f"{base.root}: patientId {missing[0]} has no class: classification needs "
                "stage_2_detailed_class_info.csv"
            )
    else:
        return [_sample_class(dataset[i], i) for i in range(len(dataset))]
    return names if indices is None else [names[i] for i in indices]


def _sample_class(sample: dict, index: int) -> str:
    name = sample.get("meta", {}).get("class")
    if name is None and "label" in sample:
        name = str(int(sample["label"]))
    if name is None:
        raise ValueError(
            f"sample {sample.get('id', index)!r} has no class (meta['class'] or 'label'): "
            "classification needs image-level labels"
        )
    return str(name)


def dataset_classes(dataset) -> list:
    """The class names of a dataset in label order: its `classes` attribute (ClassFolderDataset:
    the folder names, sorted), RSNA's three classes in RSNA_CLASS_ORDER for RSNA data (whichever
    of them occur), else the sorted names found."""
    base, _ = _base(dataset)
    names = getattr(base, "classes", None)
    if names:
        return [str(n) for n in names]

    if isinstance(base, RSNADataset):
        return list(RSNA_CLASS_ORDER)
    found = set(class_name_list(dataset))
    return list(RSNA_CLASS_ORDER) if found <= set(RSNA_CLASS_ORDER) else sorted(found)


def labels_for(dataset, classes) -> np.ndarray:
    """int64 [N]: each item's index in `classes` (by name); a class not in `classes` is a
    ValueError naming it."""
    index = {c: i for i, c in enumerate(classes)}
    names = class_name_list(dataset)
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(f"the data has class(es) {unknown} that the model does not know {classes}")
    return np.array([index[n] for n in names], np.int64)


def inverse_frequency_weights(labels: np.ndarray, k: int) -> np.ndarray:
    """float64 [k]: n / (k * count) per class (scikit-learn's "balanced"), 0 for a class without
    images (it never appears in the loss)."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return np.divide(len(labels), k * counts, out=np.zeros(k), where=counts > 0)


def prepare_image(image, config) -> torch.Tensor:
    """A dataset image [C, H, W] or [H, W] (any units) -> the network's float32
    [in_channels, size, size] input (see the module's docstring). NaN/inf raise ValueError."""
    x = torch.as_tensor(image).float()
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"image must be [C, H, W] or [H, W], got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("image holds NaN or inf")
    x = match_channels(x, config.in_channels)
    size = (config.size, config.size)
    if tuple(x.shape[-2:]) != size:
        shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
        x = F.interpolate(x[None], size, mode="bilinear", align_corners=False, antialias=shrink)[0]
    return standardize(x[None])[0]


class ClsTensors(EpochDataset):
    """(image [in_channels, size, size], label int64) pairs of a dataset of sample dicts, labels
    by name in config.classes. With `augment`: config.hflip / config.vflip flips of image i in
    epoch e drawn from the generator of (seed, e, i) (after the lung stage's crop, config.lungs),
    and with config.balance == "sampling" the
    epoch's items are drawn class-balanced (each class equally likely, items with replacement)
    from (seed, epoch), so a resumed run sees the same epochs."""

    def __init__(self, base, config, augment: bool):
        super().__init__(base, config.seed)
        self.config, self.augment = config, augment
        self.labels = labels_for(base, config.classes)
        self.balanced = augment and config.balance == "sampling"
        self.order = np.arange(len(base))
        if self.balanced:
            self.set_epoch(0)
        self.boxes = {}  # lung stage: each item's crop box, found once (the images do not change)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.balanced:
            rng = np.random.default_rng([self.seed, self.epoch, 0xBA1A])
            present = np.unique(self.labels)
            by_class = {c: np.flatnonzero(self.labels == c) for c in present}
            picks = rng.choice(present, len(self.labels))
            self.order = np.array([rng.choice(by_class[c]) for c in picks], np.int64)

    def __getitem__(self, index: int):
        i = int(self.order[index])
        s = self.base[i]
        x = torch.as_tensor(s["image"]).float()
        x = x[None] if x.ndim == 2 else x
        crop = lung_cropper(self.config)  # on the CPU, in the loader's process
        if crop is not None:
            if i not in self.boxes:
                self.boxes[i] = crop.box(x)
            x = crop.crop(x, self.boxes[i])
        if self.augment:
            g = self.generator_for(index)
            flips = torch.rand(2, generator=g)
            if flips[0] < self.config.hflip:
                x = x.flip(-1)
            if flips[1] < self.config.vflip:
                x = x.flip(-2)
        try:
            x = prepare_image(x, self.config)
        except ValueError as e:
            raise ValueError(f"sample {s.get('id', i)!r}: {e}") from e
        return x, int(self.labels[i])


def open_cls_dataset(
    layout: str,
    root,
    split=None,
    seed: int = 0,
    val_fraction: float = 0.2,
    rgb: bool = False,
    test_fraction: float = 0.0,
):
    """The dataset of one layout with image-level labels: "rsna" (RSNADataset; the classes of
    stage_2_detailed_class_info.csv) or "classes" (ClassFolderDataset: root/<class>/<image>),
    split None / "train" / "val" / "test" with split_seed=seed."""
    if layout not in CLS_LAYOUTS:
        hint = " (images/ and masks/ are segmentation's)" if layout == "folders" else ""
        raise ValueError(f"layout must be one of {CLS_LAYOUTS}, got {layout!r}{hint}")
    kw = dict(split=split, split_seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    if layout == "rsna":
        return RSNADataset(root, **kw)
    return ClassFolderDataset(root, rgb=rgb, **kw)
