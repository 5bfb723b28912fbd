"""Faster R-CNN (fastdet.models.detection) against torchvision's detection models (a test peer
only), and its sampling, batching and empty-input rules. Small images and min_size keep it fast."""

from __future__ import annotations

import copy

import pytest
import torch

tv_det = pytest.importorskip("torchvision.models.detection")
from torchvision.models.detection import _utils as tv_utils  # noqa: E402
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign as TVMultiScaleRoIAlign  # noqa: E402

from fastdet.models.detection import (  # noqa: E402
    FrozenBatchNorm2d,
    MultiScaleRoIAlign,
    fasterrcnn_resnet18_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet101_fpn,
    fasterrcnn_vgg16,
)
from fastdet.models.detection import _utils as det_utils  # noqa: E402
from fastdet.models.resnet import resnet  # noqa: E402
from fastdet.ops import BoxCoder  # noqa: E402

SMALL = dict(min_size=200, max_size=300)


def _randomize(state: dict, gen: torch.Generator) -> dict:
    """Seeded random values for every float entry (parameters and frozen-BN buffers alike),
    scaled so that activations neither vanish nor explode through ResNet-50."""
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=gen) + 0.5
        elif k.endswith("running_mean") or (v.ndim == 1 and not k.endswith("weight")):
            out[k] = torch.randn(v.shape, generator=gen) * 0.1
        elif v.ndim == 1:  # BatchNorm's weight
            out[k] = torch.rand(v.shape, generator=gen) * 0.5 + 0.5
        else:
            std = (1.0 / v[0].numel()) ** 0.5 * (20.0 if "cls_score" in k else 1.0)  # spread scores
            out[k] = torch.randn(v.shape, generator=gen) * std
    return out


def _boxes(gen, n, size=200.0):
    xy = torch.rand(n, 2, generator=gen) * size * 0.7
    wh = torch.rand(n, 2, generator=gen) * size * 0.3 + 4
    return torch.cat([xy, xy + wh], 1)


def random_pair(tv_builder, fd_builder, seed: int, path):
    """(torchvision's model, fastdet's, two images, the weights' file): the two builders' models
    (SMALL, eval) with the same random weights, saved to path, from a generator of the seed."""
    gen = torch.Generator().manual_seed(seed)
    kw = dict(SMALL, box_score_thresh=0.001)
    tv = tv_builder(weights=None, weights_backbone=None, **kw)
    state = _randomize(tv.state_dict(), gen)
    tv.load_state_dict(state)
    torch.save(state, path)
    fd = fd_builder(weights=path, **kw)
    images = [torch.rand(3, 200, 260, generator=gen), torch.rand(3, 180, 220, generator=gen)]
    return tv.eval(), fd.eval(), images, path


@pytest.fixture(scope="module")
def pair(module_tmp):
    """torchvision's and fastdet's fasterrcnn_resnet50_fpn with the same random weights (eval)."""
    path = module_tmp("weights") / "frcnn.pth"
    return random_pair(tv_det.fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn, 1234, path)


def _assert_same_detections(a: dict, b: dict, tol=1e-3):
    """Same count; every detection of a has one in b with the same label, box and score
    (matched, so that near-ties of score may come in either order)."""
    assert a["boxes"].shape == b["boxes"].shape
    assert torch.allclose(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)  # sorted scores agree
    dist = (a["boxes"][:, None] - b["boxes"][None]).abs().amax(-1)
    dist[a["labels"][:, None] != b["labels"][None]] = float("inf")
    assert dist.min(1).values.max() < tol * max(1.0, a["boxes"].abs().max().item())


def test_resnet50_fpn_state_dict_keys_match_torchvision(pair):
    tv, fd, _, path = pair
    tv_keys = {k for k in tv.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(fd.state_dict()) == tv_keys
    assert all(
        isinstance(m, FrozenBatchNorm2d)
        for n, m in fd.backbone.body.named_modules()
        if n.endswith(("bn1", "bn2", "bn3", "downsample.1"))
    )
    # the COCO checkpoint's layout (frozen BN: no num_batches_tracked) loads too
    state = {k: v for k, v in torch.load(path).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path.with_name("frozen.pth"))
    fasterrcnn_resnet50_fpn(weights=path.with_name("frozen.pth"), **SMALL)


def test_resnet50_fpn_detections_match_torchvision(pair):
    tv, fd, images, _ = pair
    with torch.no_grad():
        a, b = tv(images), fd(images)
    for da, db in zip(a, b):
        assert len(da["boxes"]) > 10
        _assert_same_detections(da, db)
        assert db["boxes"][:, 2].max() <= 260 and db["labels"].dtype == torch.int64


def test_transform_anchors_and_proposals_match_torchvision(pair):
    tv, fd, images, _ = pair
    gen = torch.Generator().manual_seed(5)
    targets = [{"boxes": _boxes(gen, 3), "labels": torch.tensor([1, 2, 3])} for _ in images]
    fd.transform.train(), tv.transform.train()
    try:
        il_a, t_a = tv.transform(images, targets)
        il_b, t_b = fd.transform(images, targets)
    finally:
        fd.transform.eval(), tv.transform.eval()
    assert il_a.image_sizes == il_b.image_sizes
    assert torch.allclose(il_a.tensors, il_b.tensors, atol=1e-6)
    for x, y in zip(t_a, t_b):
        assert torch.equal(x["boxes"], y["boxes"])
    with torch.no_grad():
        feats = tv.backbone(il_a.tensors)
        assert all(
            torch.allclose(f, g, rtol=1e-4, atol=1e-4)
            for f, g in zip(feats.values(), fd.backbone(il_a.tensors).values())
        )
        anchors_a = tv.rpn.anchor_generator(il_a, list(feats.values()))
        anchors_b = fd.rpn.anchor_generator(il_a, list(feats.values()))
        assert all(torch.equal(x, y) for x, y in zip(anchors_a, anchors_b))
        props_a, _ = tv.rpn(il_a, feats)
        props_b, _ = fd.rpn(il_a, feats)
    for x, y in zip(props_a, props_b):
        assert x.shape == y.shape and len(x) > 100
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("score_thresh", [0.0, 0.4])
def test_filter_proposals_matches_torchvision(score_thresh):
    gen = torch.Generator().manual_seed(7)
    per_level, sizes = [600, 150, 40], [(180, 220), (200, 160)]
    total = sum(per_level)
    xy = torch.rand(2, total, 2, generator=gen) * 230 - 10
    proposals = torch.cat([xy, xy + torch.rand(2, total, 2, generator=gen) * 80], -1)
    proposals[0, :5, 2:] = proposals[0, :5, :2]  # empty boxes, removed as small
    objectness = torch.randn(2 * total, generator=gen)
    args = (
        0.7,
        0.3,
        256,
        0.5,
        {"training": 100, "testing": 120},
        {"training": 60, "testing": 50},
        0.6,
    )
    tv = TVRPN(None, None, *args, score_thresh=score_thresh).eval()
    ours = fasterrcnn_resnet18_fpn(3).rpn.eval()
    ours._pre_nms_top_n, ours._post_nms_top_n, ours.nms_thresh = args[4], args[5], args[6]
    ours.score_thresh = score_thresh
    for mode in (False, True):
        tv.train(mode), ours.train(mode)
        a_boxes, a_scores = tv.filter_proposals(proposals, objectness, sizes, per_level)
        b_boxes, b_scores = ours.filter_proposals(proposals, objectness, sizes, per_level)
        for ab, bb, as_, bs in zip(a_boxes, b_boxes, a_scores, b_scores):
            assert torch.equal(ab, bb) and torch.equal(as_, bs)


def test_multiscale_roi_align_and_box_coder_match_torchvision():
    gen = torch.Generator().manual_seed(3)
    feats = {str(i): torch.randn(2, 4, 64 // 2**i, 80 // 2**i, generator=gen) for i in range(4)}
    feats["pool"] = torch.randn(2, 4, 4, 5, generator=gen)
    sizes = [(250, 320), (256, 300)]
    boxes = [_boxes(gen, 30, 250.0) * torch.tensor([1.0, 1, 1.5, 1.5]) for _ in sizes]
    args = (["0", "1", "2", "3"], 7, 2)
    a = TVMultiScaleRoIAlign(*args)(feats, boxes, sizes)
    b = MultiScaleRoIAlign(*args)(feats, boxes, sizes)
    assert torch.allclose(a, b, atol=1e-5)
    codes = torch.randn(60, 8, generator=gen)
    tv_coder, coder = tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert torch.allclose(tv_coder.decode(codes, boxes), coder.decode(codes, boxes), atol=1e-4)
    gt = [_boxes(gen, 30, 250.0) for _ in sizes]
    for x, y in zip(tv_coder.encode(gt, boxes), coder.encode(gt, boxes)):
        assert torch.allclose(x, y, atol=1e-5)


def test_rpn_sampling_rules():
    torch.manual_seed(0)
    rpn = fasterrcnn_resnet18_fpn(3).rpn
    gt = torch.tensor([[100.0, 100, 200, 200], [300, 300, 310, 340]])
    # many anchors on the first box (IoU > 0.7), a few near it (ignored), a far background,
    # and none matching the thin second box well: its best anchor (IoU < 0.7) must be positive
    jitter = torch.linspace(0, 8, 300)[:, None] * torch.tensor([1.0, 1, 1, 1])
    near = gt[:1] + torch.tensor([[30.0, 0, 30, 0]])
    far = torch.rand(500, 2) * 50 + 500
    anchors = torch.cat(
        [
            gt[:1] + jitter,
            near.repeat(20, 1),
            torch.cat([far, far + 30], 1),
            torch.tensor([[300.0, 300, 320, 330], [295, 295, 330, 345]]),
        ]
    )
    iou = det_utils.box_iou(gt, anchors)
    assert iou[1].max() < 0.7
    labels, matched = rpn.assign_targets([anchors], [{"boxes": gt}])
    lab = labels[0]
    best2 = iou[1].argmax()
    assert lab[best2] == 1 and matched[0][best2] == 1
    assert (lab[300:320] == -1).all()
    pos, neg = det_utils.sample(labels, 256, 0.5)
    assert len(pos[0]) == 128 and len(pos[0]) + len(neg[0]) == 256
    assert (lab[pos[0]] == 1).all() and (iou.max(0).values[neg[0]] < 0.3).all()
    # an image without boxes: every anchor negative
    labels, _ = rpn.assign_targets([anchors], [{"boxes": torch.zeros(0, 4)}])
    assert (labels[0] == 0).all()


def test_roi_sampling_rules():
    torch.manual_seed(0)
    heads = fasterrcnn_resnet18_fpn(4).roi_heads
    gen = torch.Generator().manual_seed(1)
    gt = _boxes(gen, 4)
    labels_gt = torch.tensor([1, 2, 3, 1])
    props = torch.cat([gt.repeat(30, 1) + torch.randn(120, 4, generator=gen), _boxes(gen, 800)])
    p, lab, mgt, idx = heads.select_training_samples(
        [props, props[:50]],
        [{"boxes": gt, "labels": labels_gt}, {"boxes": gt[:0], "labels": labels_gt[:0]}],
    )
    assert len(p[0]) == 128 and (lab[0] > 0).sum() == 32
    iou = det_utils.box_iou(gt, p[0]).max(0)
    assert (iou.values[lab[0] > 0] >= 0.5).all() and (iou.values[lab[0] == 0] < 0.5).all()
    assert torch.equal(lab[0][lab[0] > 0], labels_gt[iou.indices[lab[0] > 0]])
    assert torch.equal(mgt[0][lab[0] > 0], gt[iou.indices[lab[0] > 0]])
    assert torch.equal(idx[0][lab[0] > 0], iou.indices[lab[0] > 0])
    assert len(p[1]) == 50 and (lab[1] == 0).all()


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return fasterrcnn_resnet18_fpn(
        3,
        min_size=128,
        max_size=192,
        box_score_thresh=0.0,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
    ).eval()


def test_batched_inference_equals_per_image(small_model):
    gen = torch.Generator().manual_seed(2)
    # both resize to 128 x ~168, padded to the same 128 x 192: identical features per image
    images = [torch.rand(3, 128, 168, generator=gen), torch.rand(3, 120, 160, generator=gen)]
    with torch.no_grad():
        batched = small_model(images)
        single = [small_model([im])[0] for im in images]
    for a, b in zip(batched, single):
        assert len(a["boxes"]) > 0
        _assert_same_detections(a, b)


@pytest.mark.parametrize("setting", [{"box_score_thresh": 1.0}, {"rpn_score_thresh": 1.1}])
def test_empty_outputs_have_the_right_shapes(setting):
    torch.manual_seed(0)
    model = fasterrcnn_resnet18_fpn(3, min_size=96, max_size=128, **setting).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 90, 120), torch.zeros(3, 64, 64)])
    for det in out:
        assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,)
        assert det["labels"].shape == (0,) and det["labels"].dtype == torch.int64


def _fast_training(min_size: int, max_size: int, proposals: int) -> dict:
    """Builder options of a fast training step: small images, `proposals` RPN proposals per
    image before NMS and 100 after."""
    return dict(
        min_size=min_size,
        max_size=max_size,
        rpn_pre_nms_top_n_train=proposals,
        rpn_post_nms_top_n_train=100,
    )


@pytest.mark.parametrize("losses", [{}, {"cls_loss": "focal", "box_loss": "l1"}])
def test_training_losses_and_gradients(tmp_path, losses):
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet("resnet18").state_dict(), path)
    model = fasterrcnn_resnet18_fpn(
        3, weights_backbone=path, **_fast_training(128, 160, 300), **losses
    ).train()
    gen = torch.Generator().manual_seed(4)
    images = [torch.rand(3, 128, 150, generator=gen), torch.rand(3, 100, 128, generator=gen)]
    targets = [
        {"boxes": _boxes(gen, 3, 120.0), "labels": torch.tensor([1, 2, 1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    out = model(images, targets)
    assert set(out) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in out.values()) and out["loss_box_reg"] > 0
    sum(out.values()).backward()
    body = model.backbone.body
    assert body.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert body.layer4[1].conv2.weight.grad.abs().sum() > 0
    assert not body.conv1.weight.requires_grad and body.conv1.weight.grad is None
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    # an all-background batch trains too (every sample negative)
    out = model(images[1:], targets[1:])
    assert all(torch.isfinite(v) for v in out.values()) and out["loss_rpn_box_reg"] == 0


def test_invalid_targets_raise():
    model = fasterrcnn_resnet18_fpn(3, min_size=64, max_size=96).train()
    bad = [{"boxes": torch.tensor([[10.0, 10, 5, 20]]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError, match="positive width"):
        model([torch.rand(3, 64, 64)], bad)
    with pytest.raises(ValueError, match="one target"):
        model([torch.rand(3, 64, 64)])


def test_vgg16_preset(tmp_path):
    torchvision_models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    vgg = torchvision_models.vgg16(weights=None)
    path = tmp_path / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    model = fasterrcnn_vgg16(3, weights=path, **_fast_training(96, 128, 500))
    sd = model.state_dict()
    assert torch.equal(sd["backbone.features.28.weight"], vgg.features[28].weight)
    assert torch.equal(sd["roi_heads.box_head.fc6.weight"], vgg.classifier[0].weight)
    assert torch.equal(sd["roi_heads.box_head.fc7.bias"], vgg.classifier[3].bias)
    convs = [m for m in model.backbone.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    assert [c.weight.requires_grad for c in convs] == [False] * 4 + [True] * 9
    x = torch.rand(1, 3, 96, 128)
    assert model.backbone(x)["0"].shape == (1, 512, 6, 8)  # stride 16
    assert model.rpn._pre_nms_top_n == {"training": 500, "testing": 6000}
    assert model.rpn._post_nms_top_n["testing"] == 300
    assert model.roi_heads.batch_size_per_image == 128 and model.roi_heads.sigma == 1.0
    assert model.rpn.sigma == 3.0 and model.transform.image_mean is None
    gen = torch.Generator().manual_seed(0)
    out = model.train()(
        [torch.rand(3, 96, 128, generator=gen)],
        [{"boxes": _boxes(gen, 2, 90.0), "labels": torch.tensor([1, 2])}],
    )
    sum(out.values()).backward()
    assert all(torch.isfinite(v) for v in out.values())
    assert convs[0].weight.grad is None and convs[4].weight.grad is not None
    with torch.no_grad():
        det = model.eval()([torch.rand(3, 80, 100, generator=gen)])[0]
    assert det["boxes"].shape[1] == 4 and det["labels"].dtype == torch.int64


def test_resnet101_fpn_loads_a_torchvision_resnet101_and_runs(tmp_path):
    """fasterrcnn_resnet101_fpn: a torchvision resnet101 state_dict (random weights) loads into
    its backbone (every tensor, fc dropped), the body's C5 equals torchvision's layer4 output,
    and training and eval forwards run."""
    torchvision_models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    tv = torchvision_models.resnet101(weights=None).eval()
    for m in tv.modules():  # non-trivial BatchNorm statistics, so a mismatch shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet101.pth"
    torch.save(tv.state_dict(), path)
    model = fasterrcnn_resnet101_fpn(2, weights_backbone=path, min_size=64, max_size=96)
    body = model.backbone.body
    assert len(body.layer3) == 23 and body.channels[-1] == 2048
    state = body.state_dict()
    tv_state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert {k for k in state if not k.endswith("num_batches_tracked")} == {
        k for k in tv_state if not k.endswith("num_batches_tracked")
    }
    for k, v in state.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, tv_state[k]), k
    # in float64: frozen BatchNorm's (x * scale + shift) rounds unlike BatchNorm2d's, and 101
    # layers of random weights amplify float32 rounding to ~1e-3
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    tv64, body64 = copy.deepcopy(tv).double(), copy.deepcopy(body).double()
    with torch.no_grad():
        y = tv64.maxpool(tv64.relu(tv64.bn1(tv64.conv1(x))))
        want = tv64.layer4(tv64.layer3(tv64.layer2(tv64.layer1(y))))
        got = body64(x)[-1]  # C2..C5
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # pretrained backbone: frozen BatchNorm, conv1 and layer1 frozen (torchvision's rule)
    assert isinstance(body.bn1, FrozenBatchNorm2d) and not body.layer1[0].conv1.weight.requires_grad
    gen = torch.Generator().manual_seed(1)
    targets = [{"boxes": _boxes(gen, 2, 60.0), "labels": torch.tensor([1, 1])}]
    losses = model.train()([torch.rand(3, 64, 64, generator=gen)], targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert body.layer3[22].conv3.weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = model.eval()([torch.rand(3, 70, 80, generator=gen)])
    assert out[0]["boxes"].shape[1:] == (4,) and out[0]["labels"].dtype == torch.int64
    from fastdet.engine.tasks.det.task import DET_MODELS, DetConfig, build_model

    assert {"resnet101_fpn", "fasterrcnn_resnet101_fpn"} <= set(DET_MODELS)
    for name in ("resnet101_fpn", "fasterrcnn_resnet101_fpn"):  # the det task's short/long names
        cfg = DetConfig(model=name, weights_backbone=str(path), min_size=64, max_size=96)
        b = build_model(cfg).backbone.body
        assert len(b.layer3) == 23 and torch.equal(
            b.layer3[5].conv2.weight, tv.layer3[5].conv2.weight
        )
