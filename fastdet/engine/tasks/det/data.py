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
    config.vflip (image and boxes flipped together), then config.scale_jitter (a random crop,
    see zoom) and config.intensity (see jitter_intensity), image i of epoch e drawing from the
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
        self.augment = augment

    def __getitem__(self, i: int):
        s = self.base[i]
        image = s["image"]
        boxes = torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1)
        instances = instance_image(s) if self.masks else None
        if self.augment:
            self.generator_for(i)  # every draw below, in order, from (seed, epoch, i)
        if self.flips is not None:
            image = torch.as_tensor(image, dtype=torch.float32)
            image = image[None] if image.ndim == 2 else image
            sample = {"image": image, "boxes": boxes, "labels": labels}
            if instances is not None:
                sample["instances"] = instances
            out = self.flips(sample)
            image, boxes, instances = out["image"], out["boxes"], out.get("instances")
        if self.augment and self.config.scale_jitter > 0:
            image, boxes, labels, instances = zoom(
                image, boxes, labels, instances, self.config.scale_jitter, self.generator
            )
        target = {"boxes": boxes, "labels": labels}
        if instances is not None:
            target["masks"] = instance_masks(instances, len(boxes))
        x = prepare_image(image, self.config)
        if self.augment and self.config.intensity > 0:
            x = jitter_intensity(x, self.config.intensity, self.generator)
        return x, target


def zoom(image, boxes, labels, instances, jitter: float, g: torch.Generator):
    """Scale jitter the model's resize cannot undo: a random crop whose sides are a fraction
    1 - jitter .. 1 of the image's (the model then resizes it to min_size, so objects appear up
    to 1 / (1 - jitter) larger). Boxes are cut to the crop; a box keeping less than half its
    area is dropped (and its instance, for Mask R-CNN, relabelled away) unless what remains
    covers half the crop (an object larger than the crop still fills it)."""
    image = torch.as_tensor(image, dtype=torch.float32)
    image = image[None] if image.ndim == 2 else image
    h, w = image.shape[-2:]
    s = 1.0 - jitter * float(torch.rand((), generator=g))
    ch, cw = max(1, round(h * s)), max(1, round(w * s))
    y0 = int(torch.randint(0, h - ch + 1, (), generator=g))
    x0 = int(torch.randint(0, w - cw + 1, (), generator=g))
    image = image[..., y0 : y0 + ch, x0 : x0 + cw]
    cut = (boxes - torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)).clamp(min=0)
    cut = torch.minimum(cut, torch.tensor([cw, ch, cw, ch], dtype=boxes.dtype))
    area = lambda b: (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)  # noqa: E731
    keep = (area(cut) >= 0.5 * area(boxes)) | (area(cut) >= 0.5 * ch * cw)
    if instances is not None:
        instances = instances[y0 : y0 + ch, x0 : x0 + cw]
        new = torch.zeros(len(boxes) + 1, dtype=instances.dtype)
        new[1:][keep] = torch.arange(1, int(keep.sum()) + 1, dtype=instances.dtype)
        instances = new[instances.long()]
    return image, cut[keep], labels[keep], instances


def jitter_intensity(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """A model input in [0, 1] with a random gamma (2^(+-strength)), contrast (1 +- strength)
    and brightness (+- strength / 4), clipped to [0, 1]: exposure and processing differ from
    one scanner to the next."""
    u = torch.rand(3, generator=g) * 2 - 1
    gamma = 2.0 ** (strength * float(u[0]))
    contrast, brightness = 1 + strength * float(u[1]), strength / 4 * float(u[2])
    mean = x.mean()
    return ((x.clamp(0, 1) ** gamma - mean) * contrast + mean + brightness).clamp(0, 1)


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
