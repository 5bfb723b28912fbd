"""Detection's data: a dataset image to the model's input (`prepare_image`, shared by training,
prediction and evaluation), the training pairs with flips drawn from (seed, epoch, index), and
the datasets of the layouts that have boxes.

Input pipeline: optional histogram equalization, then the image is brought to [0, 1] (divided
by 255 when it fits in 0..255, else min-max scaled), grey repeated to 3 channels. The models
normalize inside (ResNet: ImageNet's mean and std; vgg16: Caffe's BGR means, which earlier
releases applied here: their checkpoints give the same detections)."""

from __future__ import annotations

import torch

from ....data import DSB2018Dataset, ImageFolderDataset, RSNADataset
from ....data.transforms import (
    Compose,
    HistogramEqualization,
    RandomHorizontalFlip,
    RandomVerticalFlip,
)
from ...sampling import EpochDataset

DET_LAYOUTS = ("rsna", "dsb2018", "folders")


def prepare_image(image, config) -> torch.Tensor:
    """A dataset image [C, H, W] (file units) -> the model's float32 [3, H, W] input: histogram
    equalized (config.hist_eq) or scaled to [0, 1] (/ 255 when within 0..255, else min-max),
    grey repeated to 3 channels. No normalization: every detector normalizes inside."""
    x = torch.as_tensor(image, dtype=torch.float32)
    if x.ndim == 2:
        x = x[None]
    if config.hist_eq:
        x = HistogramEqualization()({"image": x})["image"]
    elif not bool(torch.isfinite(x).all()) or (float(x.min()) >= 0 and float(x.max()) <= 255):
        x = x / 255.0  # NaN/inf pass through, to be reported by the loss check
    else:
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    elif x.shape[0] != 3:
        raise ValueError(f"detection needs 1 or 3 image channels, got {x.shape[0]}")
    return x.contiguous()


class DetTensors(EpochDataset):
    """(image [3, H, W], target {"boxes", "labels"}) pairs of a dataset of sample dicts; an
    image without boxes gives an empty target (a negative). augment=True applies config.hflip /
    config.vflip (image and boxes flipped together), image i of epoch e drawing from the
    generator of (seed, e, i)."""

    def __init__(self, dataset, config, augment: bool = False):
        super().__init__(dataset, config.seed)
        self.config = config
        self.masks = config.model.startswith("maskrcnn_")
        flips = []
        if augment and config.hflip > 0:
            flips.append(RandomHorizontalFlip(config.hflip, self.generator))
        if augment and config.vflip > 0:
            flips.append(RandomVerticalFlip(config.vflip, self.generator))
        self.flips = Compose(flips) if flips else None

    def __getitem__(self, i: int):
        s = self.base[i]
        image = s["image"]
        boxes = torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1)
        instances = instance_image(s) if self.masks else None
        if self.flips is not None:
            image = torch.as_tensor(image, dtype=torch.float32)
            image = image[None] if image.ndim == 2 else image
            self.generator_for(i)
            sample = {"image": image, "boxes": boxes, "labels": labels}
            if instances is not None:
                sample["instances"] = instances
            out = self.flips(sample)
            image, boxes, instances = out["image"], out["boxes"], out.get("instances")
        target = {"boxes": boxes, "labels": labels}
        if instances is not None:
            target["masks"] = instance_masks(instances, len(boxes))
        return prepare_image(image, self.config), target


def instance_image(sample: dict) -> torch.Tensor:
    """The sample's instance label image [H, W] (labels 1..K matching its K boxes)."""
    if "instances" not in sample:
        raise ValueError(
            f"sample {sample.get('id', '?')!r} has no instance masks: Mask R-CNN trains on "
            "layouts with instances (dsb2018, folders)"
        )
    return torch.as_tensor(sample["instances"])


def instance_masks(instances: torch.Tensor, k: int) -> torch.Tensor:
    """uint8 [K, H, W]: mask i is the pixels labelled i + 1."""
    ids = torch.arange(1, k + 1, dtype=instances.dtype, device=instances.device)
    return (instances[None] == ids[:, None, None]).to(torch.uint8)


def collate(batch):
    """(images, targets) lists: images differ in size, the model batches them itself."""
    return [b[0] for b in batch], [b[1] for b in batch]


def open_det_dataset(
    layout: str, root, split=None, seed: int = 0, val_fraction: float = 0.2, test_fraction=0.0
):
    """RSNADataset ("rsna"), DSB2018Dataset ("dsb2018", boxes and masks of the nuclei) or
    ImageFolderDataset with instance label images ("folders": images/ and masks/, each mask an
    integer label image, 0 background), split None / "train" / "val" / "test" with
    split_seed=seed."""
    if layout not in DET_LAYOUTS:
        raise ValueError(f"layout must be one of {DET_LAYOUTS}, got {layout!r}")
    kw = dict(split=split, split_seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    if layout == "folders":
        return ImageFolderDataset(root, instances=True, **kw)
    return (RSNADataset if layout == "rsna" else DSB2018Dataset)(root, **kw)
