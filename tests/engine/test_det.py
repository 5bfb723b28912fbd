"""The detection engine on a tiny synthetic RSNA dataset (4 images of 64 x 64, ResNet-18 FPN at
min_size 64): files of a run, exact resume (with flips and warmup), NaN loss, config checks, input
pipeline, flips, the warmup schedule, gradients of a batch without boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdet.data import RSNADataset
from fastdet.data.synthetic import synth_rsna
from fastdet.engine import NonFiniteLossError, Trainer, load_detector, task_for, train_detection
from fastdet.engine.logging import read_metrics_csv
from fastdet.engine.tasks.det.data import DetTensors, prepare_image
from fastdet.engine.tasks.det.task import DET_COLUMNS, LOSS_KEYS, DetConfig
from fastdet.engine.tasks.det.task import build_model as build_detector
from fastdet.engine.trainer import WARMUP_FACTOR, warmup_factor

from .conftest import det_tiny as tiny


@pytest.fixture(scope="module")
def rsna(module_tmp):
    root = synth_rsna(module_tmp("det") / "rsna", n=4, seed=0, size=64)
    return RSNADataset(root)


def test_run_folder(rsna, tmp_path):
    history = train_detection(tiny(), rsna, rsna, tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "last.pt", "best.pt", "metrics.csv", "metrics.png"} <= names
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and tuple(rows[0]) == DET_COLUMNS
    assert all(math.isfinite(r["loss"]) and 0 <= r["val_map_50"] <= 1 for r in rows)
    assert history[0]["lr"] == pytest.approx(1e-3)
    model, config = load_detector(tmp_path / "run" / "last.pt")
    assert config == tiny() and not model.training
    with pytest.raises(FileExistsError):
        train_detection(tiny(), rsna, rsna, tmp_path / "run")


def test_resume_is_exact(rsna, tmp_path):
    # flips drawn per (seed, epoch, image); the warmup (3 steps, 2 per epoch) spans the resume
    aug = dict(hflip=0.5, vflip=0.5, warmup_steps=3)
    train_detection(tiny(epochs=2, **aug), rsna, None, tmp_path / "straight")
    train_detection(tiny(epochs=1, **aug), rsna, None, tmp_path / "split")
    train_detection(tiny(epochs=2, **aug), rsna, None, tmp_path / "split", resume=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"][1]["loss"] == b["history"][1]["loss"]
    with pytest.raises(ValueError, match="lr"):
        train_detection(tiny(epochs=3, lr=0.5, **aug), rsna, None, tmp_path / "split", resume=True)
    with pytest.raises(ValueError, match="hflip"):  # augmentation is not a resumable change
        train_detection(
            tiny(epochs=3, **{**aug, "hflip": 0.0}), rsna, None, tmp_path / "split", resume=True
        )


def test_nan_loss_names_epoch_and_step(rsna, tmp_path, monkeypatch):
    import fastdet.engine.tasks.det.task as det

    build = det.build_model
    calls = []

    def nan_on_second_step(config, pretrained=True):
        model = build(config, pretrained)
        forward = model.forward

        def patched(images, targets=None):
            out = forward(images, targets)
            calls.append(1)
            if model.training and len(calls) == 2:
                out["loss_classifier"] = out["loss_classifier"] * float("nan")
            return out

        model.forward = patched
        return model

    monkeypatch.setattr(det, "build_model", nan_on_second_step)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 2") as e:
        train_detection(tiny(), rsna, None, tmp_path / "nan")
    assert (e.value.epoch, e.value.step, e.value.global_step) == (1, 2, 2)
    assert not (tmp_path / "nan" / "last.pt").exists()


def test_diverged_weights_stop_like_a_nan_loss(rsna, tmp_path, monkeypatch):
    """Box deltas gone to inf make the ops refuse them inside the forward pass (before any
    loss): reported as a non-finite loss at that step, not as a bare ValueError."""
    import fastdet.engine.tasks.det.task as det

    class Diverged(FakeDetector):
        def forward(self, images, targets=None):
            if self.training:
                raise ValueError("rel_codes contains NaN or inf")
            return super().forward(images, targets)

    monkeypatch.setattr(det, "build_model", lambda config, pretrained=True: Diverged())
    with pytest.raises(NonFiniteLossError, match="forward pass failed: rel_codes") as e:
        train_detection(tiny(), rsna, None, tmp_path / "inf")
    assert (e.value.epoch, e.value.step) == (1, 1)
    assert isinstance(e.value.__cause__, ValueError)


def test_anchor_sizes_and_rois_per_image_reach_the_model():
    net = build_detector(DetConfig(anchor_sizes=[8, 16, 32, 64, 128], rois_per_image=32))
    assert net.rpn.anchor_generator.sizes == ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    assert net.roi_heads.batch_size_per_image == 32
    vgg = build_detector(DetConfig(model="vgg16", anchor_sizes=[64]))
    assert vgg.rpn.anchor_generator.sizes == ((64.0, 128.0, 256.0),)
    with pytest.raises(ValueError, match="anchor_sizes"):
        DetConfig(anchor_sizes=[16, 32])
    with pytest.raises(ValueError, match="rois_per_image"):
        DetConfig(rois_per_image=0)


def test_loss_options_reach_both_heads(rsna, tmp_path):

    net = build_detector(DetConfig(box_loss="l1", cls_loss="focal"))
    assert (net.rpn.box_loss, net.rpn.cls_loss) == ("l1", "focal")
    assert (net.roi_heads.box_loss, net.roi_heads.cls_loss) == ("l1", "focal")
    hist = train_detection(
        tiny(epochs=1, box_loss="l1", cls_loss="focal"), rsna, None, tmp_path / "r"
    )
    assert math.isfinite(hist[0]["loss"])
    with pytest.raises(ValueError, match="cls_loss"):
        DetConfig(cls_loss="hinge")


def test_config_checks():
    with pytest.raises(ValueError, match="model"):
        DetConfig(model="yolo")
    with pytest.raises(ValueError, match="max_size"):
        DetConfig(min_size=100, max_size=50)
    with pytest.raises(ValueError, match="unknown"):
        DetConfig.from_dict({"modle": "vgg16"})
    for bad in (dict(hflip=1.5), dict(vflip=-0.1), dict(warmup_steps=-1), dict(warmup_steps=2.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DetConfig(**bad)
    c = DetConfig()
    assert (c.lr, c.momentum, c.step_size, c.gamma, c.optimizer) == (1e-3, 0.9, 20, 0.1, "sgd")
    assert (c.hflip, c.vflip, c.warmup_steps) == (0.0, 0.0, 0)
    assert DetConfig.from_dict(c.to_dict()) == c


def test_prepare_image():
    grey = torch.arange(16.0).reshape(1, 4, 4) * 10
    x = prepare_image(grey, tiny())
    assert x.shape == (3, 4, 4) and x.max() == pytest.approx(150 / 255) and torch.equal(x[0], x[2])
    eq = prepare_image(grey, tiny(hist_eq=True))
    assert 0 <= eq.min() and eq.max() <= 1
    # vgg16 normalizes inside its model now: the same [0, 1] input as the ResNets
    assert torch.equal(prepare_image(grey, tiny(model="vgg16")), x)


def test_vgg16_normalizes_inside_and_old_checkpoints_detect_the_same(rng):
    """vgg16 checkpoints of the releases that Caffe-normalized in prepare_image (the model
    without normalization) give the same detections through today's pipeline (the model
    normalizes, BGR order included): the normalization holds no weights."""
    from fastdet.data.transforms import CaffeNormalize
    from fastdet.models.detection import fasterrcnn_vgg16

    config = tiny(model="vgg16", anchor_sizes=[32], min_size=64, max_size=64)
    torch.manual_seed(0)
    new = build_detector(config, pretrained=False).eval()
    assert new.transform.bgr and new.transform.image_mean is not None
    old = fasterrcnn_vgg16(2, min_size=64, max_size=64, rpn_anchor_generator=_vgg_anchors())
    old.load_state_dict(new.state_dict())  # an old checkpoint's state loads as it is
    old.eval()
    with torch.no_grad():
        new.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.2)
        old.roi_heads.box_predictor.cls_score.weight.copy_(
            new.roi_heads.box_predictor.cls_score.weight
        )
    # an RGB image, so the channel order matters
    image = torch.as_tensor(rng.random((3, 48, 56)) * 255, dtype=torch.float32)
    x = prepare_image(image, config)
    before = CaffeNormalize(input_max=1.0)({"image": x})["image"]  # the old prepare_image
    with torch.no_grad():
        got, want = new([x])[0], old([before])[0]
    assert len(want["scores"]) > 0
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(got["scores"], want["scores"], atol=1e-5, rtol=0)
    assert torch.equal(got["labels"], want["labels"])
    # and the channels are reversed: a grey-free RGB image reversed gives other detections
    with torch.no_grad():
        flipped = new([x.flip(0)])[0]
    assert not (
        flipped["scores"].shape == got["scores"].shape
        and torch.allclose(flipped["scores"], got["scores"])
    )


def _vgg_anchors():
    from fastdet.ops import AnchorGenerator

    return AnchorGenerator(((32.0, 64.0, 128.0),), ((0.5, 1.0, 2.0),))


# ---------------------------------------------------------------------- flips


class RectDataset(torch.utils.data.Dataset):
    """n grey 40 x 60 images, 0 but for a 200-valued rectangle: rows 5..14, columns 10..29,
    i.e. the box (10, 5, 30, 15) in pixel-edge coordinates."""

    def __init__(self, n: int = 1):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        image = torch.zeros(1, 40, 60)
        image[0, 5:15, 10:30] = 200
        return {
            "image": image,
            "boxes": torch.tensor([[10.0, 5.0, 30.0, 15.0]]),
            "labels": torch.tensor([1]),
            "id": f"r{i}",
        }


@pytest.mark.parametrize(
    "flips, expected",
    [
        (dict(hflip=1.0), [30, 5, 50, 15]),  # x -> 60 - x
        (dict(vflip=1.0), [10, 25, 30, 35]),  # y -> 40 - y
        (dict(hflip=1.0, vflip=1.0), [30, 25, 50, 35]),
    ],
)
def test_flipped_boxes_frame_the_same_pixels(flips, expected):
    image, target = DetTensors(RectDataset(), tiny(**flips), augment=True)[0]
    assert target["boxes"].tolist() == [expected] and target["labels"].tolist() == [1]
    x1, y1, x2, y2 = expected
    bright = image[0] > 0.5
    assert bright[y1:y2, x1:x2].all() and int(bright.sum()) == (x2 - x1) * (y2 - y1)
    assert torch.equal(image[0], image[2])
    # not for validation data, whatever the config says
    image, target = DetTensors(RectDataset(), tiny(**flips), augment=False)[0]
    assert target["boxes"].tolist() == [[10, 5, 30, 15]] and bool(
        (image[0, 5:15, 10:30] > 0.5).all()
    )


def test_flips_are_drawn_per_seed_epoch_and_image():
    data = DetTensors(RectDataset(16), tiny(hflip=0.5), augment=True)

    def flipped(epoch, order=range(16)):
        data.set_epoch(epoch)
        out = {i: data[i][1]["boxes"][0, 0].item() == 30 for i in order}
        return [out[i] for i in range(16)]

    first = flipped(0)
    assert 0 < sum(first) < 16
    assert flipped(0, reversed(range(16))) == first  # the order of requests does not matter
    assert flipped(1) != first
    other = DetTensors(RectDataset(16), tiny(hflip=0.5, seed=1), augment=True)
    assert [other[i][1]["boxes"][0, 0].item() == 30 for i in range(16)] != first


# ---------------------------------------------------------------------- warmup


class FakeDetector(torch.nn.Module):
    """Stands in for Faster R-CNN where only the optimizer's schedule matters: one weight, the
    training losses linear in it, no detections."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, images, targets=None):
        if self.training:
            x = torch.stack([im.mean() for im in images]).mean()
            return {k: self.w * x * (i + 1) for i, k in enumerate(LOSS_KEYS)}
        return [
            {
                "boxes": torch.zeros(0, 4),
                "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.int64),
            }
            for _ in images
        ]


def _lrs_of_run(config, data, out, resume=False) -> list:
    """The learning rate of each optimizer step of a run (or of its resumed part)."""
    trainer = Trainer(task_for(config), data, None, out, resume)
    lrs = []
    trainer.opt.register_step_pre_hook(lambda opt, args, kw: lrs.append(opt.param_groups[0]["lr"]))
    try:
        trainer.fit()
    finally:
        trainer.close()
    return lrs


def test_warmup_learning_rate_per_step(rsna, tmp_path, monkeypatch):
    import fastdet.engine.tasks.det.task as det

    monkeypatch.setattr(det, "build_model", lambda config, pretrained=True: FakeDetector())
    config = tiny(epochs=3, batch_size=1, warmup_steps=5, step_size=2, gamma=0.1, lr=0.02)
    lrs = _lrs_of_run(config, rsna, tmp_path / "straight")
    assert len(lrs) == 12  # 4 steps per epoch
    for k, lr in enumerate(lrs):
        decay = 0.1 ** (k // 4 // 2)  # StepLR: after 2 epochs
        ramp = WARMUP_FACTOR * (1 - k / 5) + k / 5 if k < 5 else 1.0
        assert lr == pytest.approx(0.02 * decay * ramp, rel=1e-12), k
    assert lrs[0] == pytest.approx(0.02 * WARMUP_FACTOR) and lrs[5] == pytest.approx(0.02)
    assert [warmup_factor(k, 0) for k in (0, 7)] == [1.0, 1.0]
    history = read_metrics_csv(tmp_path / "straight" / "metrics.csv")
    assert [r["lr"] for r in history] == pytest.approx([0.02, 0.02, 0.002])  # the step decay's
    # resumed in the middle of the warmup: the same rates (from global_step, no hidden state)
    first = _lrs_of_run(tiny(**{**config.to_dict(), "epochs": 1}), rsna, tmp_path / "split")
    rest = _lrs_of_run(config, rsna, tmp_path / "split", resume=True)
    assert first + rest == lrs


def test_resume_of_a_run_saved_before_the_new_settings(rsna, tmp_path, monkeypatch):
    """A checkpoint whose config predates hflip / vflip / warmup_steps resumes with their
    defaults (what that run did), and not with other values."""
    import fastdet.engine.tasks.det.task as det

    monkeypatch.setattr(det, "build_model", lambda config, pretrained=True: FakeDetector())
    train_detection(tiny(epochs=1), rsna, None, tmp_path / "old")
    ckpt = torch.load(tmp_path / "old" / "last.pt", weights_only=True)
    for k in ("hflip", "vflip", "warmup_steps"):
        del ckpt["config"][k]
    torch.save(ckpt, tmp_path / "old" / "last.pt")
    with pytest.raises(ValueError, match="warmup_steps"):
        train_detection(tiny(epochs=2, warmup_steps=10), rsna, None, tmp_path / "old", resume=True)
    assert len(train_detection(tiny(epochs=2), rsna, None, tmp_path / "old", resume=True)) == 2


# ------------------------------------------------------------ DDP without unused parameters


def test_batch_without_boxes_reaches_every_trainable_parameter():
    """DDP runs without find_unused_parameters: every trainable parameter must get a gradient at
    every step, also from images without boxes (no positive anchors or RoIs)."""
    torch.manual_seed(0)
    model = build_detector(tiny(), pretrained=False)  # from scratch: every layer trains
    model.train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)], [empty, empty])
    assert float(losses["loss_box_reg"].detach()) == 0 == float(losses["loss_rpn_box_reg"].detach())
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not [n for n, p in trainable if p.grad is None]


def test_draw_boxes_enlarges_and_draws_truth(tmp_path):
    from PIL import Image

    from fastdet.metrics import draw_boxes

    pred = {"boxes": torch.tensor([[2.0, 2, 8, 8]]), "scores": torch.tensor([0.9])}
    path = draw_boxes(
        tmp_path / "b.png",
        torch.zeros(1, 20, 30),
        pred,
        truth=torch.tensor([[10.0, 10, 15, 15]]),
        scale=2,
    )
    im = np.asarray(Image.open(path))
    assert im.shape == (40, 60, 3)
    assert tuple(im[20, 25]) == (0, 255, 0)  # the truth's top edge, at twice its coordinates
    assert tuple(im[10, 4]) == (255, 0, 0)  # the detection's left edge
    assert tuple(im[0, 0]) == (0, 0, 0)
