"""Mask R-CNN (fastdet.models.detection) against torchvision's (a test peer only): the same
state_dict keys, detections and masks from the same random weights, the same training losses
from the same seed, and the mask branch's rules (targets, loss, empty inputs)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import Tensor

tv_det = pytest.importorskip("torchvision.models.detection")
from torchvision.models.detection import roi_heads as tv_roi_heads  # noqa: E402

from fastdet.models.detection import (  # noqa: E402
    MaskRCNN,
    maskrcnn_resnet18_fpn,
    maskrcnn_resnet50_fpn,
)
from fastdet.models.detection.mask_head import mask_loss, mask_targets  # noqa: E402

from .test_faster_rcnn import SMALL, _assert_same_detections, _boxes, random_pair  # noqa: E402


def _pair_up(a: dict, b: dict) -> Tensor:
    """For each detection of b, the index of a's detection with its label and nearest box."""
    dist = (a["boxes"][:, None] - b["boxes"][None]).abs().amax(-1)
    dist[a["labels"][:, None] != b["labels"][None]] = float("inf")
    return dist.argmin(0)


def _targets(gen, sizes, n=3):
    """Boxes with their instance masks (an ellipse-ish blob inside each box), labels 1..3."""
    out = []
    for h, w in sizes:
        boxes = _boxes(gen, n, min(h, w)).round()
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1 + 1 : y2 - 1, x1 + 2 : x2 - 2] = 1
        out.append(
            {"boxes": boxes, "labels": torch.randint(1, 4, (n,), generator=gen), "masks": masks}
        )
    return out


@pytest.fixture(scope="module")
def pair(module_tmp):
    """torchvision's and fastdet's maskrcnn_resnet50_fpn with the same random weights (eval)."""
    path = module_tmp("weights") / "mrcnn.pth"
    return random_pair(tv_det.maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn, 4321, path)


def test_state_dict_keys_match_torchvision(pair):
    tv, fd, _, _ = pair
    tv_keys = {k for k in tv.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(fd.state_dict()) == tv_keys
    assert isinstance(fd, MaskRCNN)


def test_old_mask_head_keys_load():
    """torchvision's checkpoints before its MaskRCNNHeads version 2 (mask_fcn1..4) load."""
    model = maskrcnn_resnet18_fpn(3, **SMALL)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    old = OrderedDict()
    for k, v in state.items():
        if k.startswith("roi_heads.mask_head."):
            i, _, p = k[len("roi_heads.mask_head.") :].split(".")
            k = f"roi_heads.mask_head.mask_fcn{int(i) + 1}.{p}"
        old[k] = v.clone() + 1 if "mask_head" in k else v
    old._metadata = {"roi_heads.mask_head": {"version": 1}}
    model.load_state_dict(old)
    loaded = model.roi_heads.mask_head[2][0].bias
    assert torch.equal(loaded, state["roi_heads.mask_head.2.0.bias"] + 1)


def test_detections_and_masks_match_torchvision(pair):
    tv, fd, images, _ = pair
    with torch.no_grad():
        a = tv(images)
        b = fd(images)
    for da, db, im in zip(a, b, images):
        assert len(da["boxes"]) > 10
        _assert_same_detections(da, db)
        assert db["masks"].shape == (len(db["boxes"]), 1, *im.shape[-2:])
        diff = (da["masks"][_pair_up(da, db)] - db["masks"]).abs().max()
        assert diff < 1e-4, diff


def test_unpasted_masks_paste_to_torchvision(pair):
    """paste_masks=False gives [D, 28, 28] probabilities: pasted by torchvision's function they
    are its output."""
    tv, fd, images, _ = pair
    fd.paste_masks = False
    try:
        with torch.no_grad():
            a, b = tv(images), fd(images)
    finally:
        fd.paste_masks = True
    for da, db, im in zip(a, b, images):
        assert db["masks"].shape == (len(db["boxes"]), 28, 28)
        pasted = tv_roi_heads.paste_masks_in_image(db["masks"][:, None], db["boxes"], im.shape[-2:])
        assert (pasted - da["masks"][_pair_up(da, db)]).abs().max() < 1e-4


def test_training_losses_match_torchvision(pair):
    """Same weights, same seed: the five losses equal torchvision's (the samplers draw from
    torch's generator in torchvision's order). Both from scratch: ordinary BatchNorm."""
    tv_eval, _, images, _ = pair
    tv = tv_det.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **SMALL)
    tv.load_state_dict(tv_eval.state_dict())
    fd = maskrcnn_resnet50_fpn(**SMALL)
    fd.load_state_dict(tv_eval.state_dict())
    targets = _targets(torch.Generator().manual_seed(7), [im.shape[-2:] for im in images])
    out = []
    for model in (tv, fd):
        model.train()
        try:
            torch.manual_seed(11)
            out.append(model(images, [dict(t) for t in targets]))
        finally:
            model.eval()
    a, b = out
    assert (
        set(a)
        == set(b)
        == {
            "loss_objectness",
            "loss_rpn_box_reg",
            "loss_classifier",
            "loss_box_reg",
            "loss_mask",
        }
    )
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), (k, a[k], b[k])


def test_mask_loss_matches_torchvision(rng):
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    targets = _targets(gen, [(60, 80), (50, 70)], n=4)
    props = [t["boxes"] + torch.randn(4, 4, generator=gen) for t in targets]
    matched = [torch.randint(0, 4, (4,), generator=gen) for _ in targets]
    logits = torch.randn(8, 5, 28, 28, generator=gen)
    gt_masks = [t["masks"] for t in targets]
    labels = [t["labels"] for t in targets]
    ours = mask_loss(logits, props, gt_masks, labels, matched)
    theirs = tv_roi_heads.maskrcnn_loss(logits, props, gt_masks, labels, matched)
    assert torch.allclose(ours, theirs, rtol=1e-6)
    cut = mask_targets(gt_masks[0], props[0], matched[0], 28)
    tv_cut = tv_roi_heads.project_masks_on_boxes(gt_masks[0], props[0], matched[0], 28)
    assert torch.allclose(cut, tv_cut, atol=1e-6)


def test_training_step_learns_and_handles_empty_images():
    """Every parameter of the mask branch gets a gradient; an image without instances and a
    batch without positives still give a finite (zero) mask loss."""
    torch.manual_seed(0)
    model = maskrcnn_resnet18_fpn(2, min_size=96, max_size=128).train()
    gen = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 96, 120, generator=gen) for _ in range(2)]
    targets = _targets(gen, [(96, 120)], n=3)
    targets[0]["labels"] = torch.ones(3, dtype=torch.int64)
    targets.append(
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 96, 120, dtype=torch.uint8),
        }
    )
    losses = model(images, targets)
    assert losses["loss_mask"] > 0
    sum(losses.values()).backward()
    for name, p in model.roi_heads.named_parameters():
        if name.startswith(("mask_head", "mask_predictor")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    empty = [targets[1], targets[1]]
    losses = model(images, empty)
    assert losses["loss_mask"] == 0 and torch.isfinite(sum(losses.values()))


def test_eval_outputs_for_no_detections():
    model = maskrcnn_resnet18_fpn(3, min_size=64, max_size=96, box_score_thresh=1.1).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 80)])[0]
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 1, 64, 80)
    model.paste_masks = False
    with torch.no_grad():
        out = model([torch.rand(3, 64, 80)])[0]
    assert out["masks"].shape == (0, 28, 28)


def test_more_detections_than_torchvision_default():
    model = maskrcnn_resnet18_fpn(
        2, min_size=128, max_size=160, box_score_thresh=0.0, box_detections_per_img=600
    ).eval()
    model.paste_masks = False
    with torch.no_grad():
        out = model([torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(0))])[0]
    assert len(out["boxes"]) > 100 and out["masks"].shape[0] == len(out["boxes"])


def test_invalid_mask_targets_raise():
    model = maskrcnn_resnet18_fpn(2, min_size=64, max_size=96).train()
    image = torch.rand(3, 64, 80)
    target = {"boxes": torch.tensor([[2.0, 3, 20, 30]]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match=r"masks"):
        model([image], [target])
    target["masks"] = torch.zeros(1, 60, 80, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\].*\[1, 64, 80\]"):
        model([image], [target])
