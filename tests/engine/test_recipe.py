"""The detector's training recipe options: GroupNorm, scale and intensity augmentation, anchor
sizes fitted to the training boxes, cosine decay."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fastdet.data.synthetic import synth_rsna
from fastdet.engine import DetConfig
from fastdet.engine.config import RunConfig
from fastdet.engine.tasks.det.data import DetTensors, jitter_intensity, open_det_dataset, zoom
from fastdet.engine.tasks.det.task import DetTask, build_model, fit_anchor_sizes, norm_of
from fastdet.engine.trainer import make_scheduler

from .conftest import det_tiny


@pytest.fixture(scope="module")
def rsna_tiny(module_tmp):
    """Six synthetic RSNA patients of 64 px (boxes on the positives)."""
    return open_det_dataset("rsna", synth_rsna(module_tmp("recipe") / "rsna", n=6, size=64))


def test_group_norm_replaces_every_batch_norm_and_trains():
    model = build_model(det_tiny(norm="gn"))
    kinds = {type(m).__name__ for m in model.backbone.modules()}
    assert "GroupNorm" in kinds and not kinds & {"BatchNorm2d", "FrozenBatchNorm2d"}
    frozen = build_model(det_tiny(norm="frozen_bn"))
    assert "FrozenBatchNorm2d" in {type(m).__name__ for m in frozen.backbone.modules()}
    with pytest.raises(ValueError, match="vgg16 has no normalization"):
        build_model(det_tiny(model="vgg16", norm="gn"))
    model.train()
    target = {"boxes": torch.tensor([[4.0, 4, 30, 40]]), "labels": torch.tensor([1])}
    losses = model([torch.rand(3, 64, 64)], [target])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def test_zoom_cuts_boxes_to_the_crop_and_drops_mostly_cut_ones():
    image = torch.zeros(1, 100, 100)
    boxes = torch.tensor([[10.0, 10, 30, 30], [80, 80, 100, 100], [0, 0, 100, 100]])
    labels = torch.tensor([1, 1, 1])
    instances = torch.zeros(100, 100, dtype=torch.int32)
    instances[10:30, 10:30], instances[80:, 80:] = 1, 2
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        im, b, lab, ins = zoom(image, boxes, labels, instances, 0.5, g)
        h, w = im.shape[-2:]
        assert 50 <= h <= 100 and h == w and ins.shape == (h, w)
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and len(b) == len(lab)
        assert int(ins.max()) <= len(b)  # instances relabelled to the kept boxes
        assert len(b) >= 1  # the image-sized box fills the crop: always kept ...
    assert zoom(image, boxes, labels, None, 0.0, g)[1].tolist() == boxes.tolist()  # ... J 0: all


def test_intensity_jitter_stays_in_range_and_is_reproducible():
    x = torch.rand(3, 32, 32)
    a = jitter_intensity(x, 0.5, torch.Generator().manual_seed(1))
    b = jitter_intensity(x, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x) and 0 <= a.min() and a.max() <= 1


def test_augmented_samples_depend_on_seed_epoch_and_index_only(rsna_tiny):
    config = det_tiny(hflip=0.5, scale_jitter=0.3, intensity=0.3)
    t1, t2 = DetTensors(rsna_tiny, config, augment=True), DetTensors(rsna_tiny, config, True)
    assert torch.equal(t1[1][0], t2[1][0])
    t2.set_epoch(1)
    assert not torch.equal(t1[1][0], t2[1][0])


def test_anchor_sizes_auto_are_fitted_and_saved(rsna_tiny):
    config = det_tiny(anchor_sizes=["auto"])
    assert config.anchor_sizes == "auto"
    sizes = fit_anchor_sizes(config, rsna_tiny)
    assert len(sizes) == 5 and sizes == sorted(sizes) and sizes[0] > 0
    fitted = DetTask(config).prepare(config, rsna_tiny, None)
    assert fitted.anchor_sizes == sizes and DetConfig.from_dict(fitted.to_dict()) == fitted
    with pytest.raises(ValueError, match="auto"):
        build_model(config)
    assert len(fit_anchor_sizes(det_tiny(model="vgg16"), rsna_tiny)) == 1


def test_cosine_decays_to_zero_at_the_last_epoch():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(p, lr=0.1)
    config = dataclasses.replace(RunConfig(epochs=4), lr_schedule="cosine")
    sched, lrs = make_scheduler(config, opt), []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs == sorted(lrs, reverse=True)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert isinstance(make_scheduler(RunConfig(), opt), torch.optim.lr_scheduler.StepLR)


def test_auto_norm_is_group_norm_from_scratch_and_old_configs_keep_batch_norm():
    assert norm_of(det_tiny()) == "gn"
    assert norm_of(det_tiny(model="maskrcnn_resnet18_fpn")) == "bn"
    assert norm_of(det_tiny(weights_backbone="r18.pth")) == "frozen_bn"
    saved = det_tiny().to_dict()
    del saved["norm"]  # a checkpoint from before the setting: built with BatchNorm
    assert DetConfig.from_dict(saved).norm == "bn"
    assert DetConfig.from_dict({**saved, "model": "vgg16"}).norm == "auto"
