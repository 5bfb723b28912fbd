"""Segmentation models: shapes at odd sizes, the ResNet encoder against torchvision's with the same
weights, weight files, and the straight-through binarization of U-Net+GAN."""

import pytest
import torch

from fastdet.models import resnet
from fastdet.models.segmentation import (
    Discriminator,
    binarize,
    fpn_resnet18,
    fpn_resnet50,
    unet,
    unet_gan,
)


@pytest.mark.parametrize("h,w", [(64, 64), (37, 50), (1, 1), (17, 129)])
def test_unet_any_size(h, w):
    m = unet(in_channels=2, num_classes=3, depth=3, width=4).eval()
    assert m(torch.randn(2, 2, h, w)).shape == (2, 3, h, w)


def test_unet_grads_reach_the_first_layer():
    m = unet(1, 1, depth=2, width=4)
    m(torch.randn(1, 1, 20, 20)).sum().backward()
    assert m.down[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("h,w", [(64, 96), (45, 71)])
def test_fpn_any_size(h, w):
    m = fpn_resnet18(in_channels=1, num_classes=2, channels=16).eval()
    assert m(torch.randn(1, 1, h, w)).shape == (1, 2, h, w)


def old_fpn_keys(state_dict):
    """The state_dict in FPNSeg's layout from before the shared FPN: lateral.i.*, smooth.i.*."""
    out = {}
    for key, value in state_dict.items():
        for new, old in (("fpn.inner_blocks.", "lateral."), ("fpn.layer_blocks.", "smooth.")):
            if key.startswith(new):
                index, rest = key[len(new) :].split(".", 1)
                key = f"{old}{index}.{rest.removeprefix('0.')}"
        out[key] = value
    return out


def test_fpn_loads_checkpoints_with_the_old_keys():
    torch.manual_seed(0)
    ours = fpn_resnet18(in_channels=1, num_classes=2, channels=16)
    with torch.no_grad():  # every weight and BN statistic random, so a misplaced one shows
        for v in ours.state_dict().values():
            if v.is_floating_point():  # kernels small, vectors (BN, biases) near 1: finite output
                v.copy_(torch.randn_like(v) * 0.05 if v.dim() > 1 else torch.rand_like(v) + 0.5)
    new = ours.state_dict()
    old = old_fpn_keys(new)
    assert "lateral.3.weight" in old and "smooth.0.bias" in old and len(old) == len(new)
    assert not any(k.startswith(("lateral.", "smooth.")) for k in new)

    loaded = fpn_resnet18(in_channels=1, num_classes=2, channels=16)
    loaded.load_state_dict(old)  # strict
    assert list(loaded.state_dict()) == list(new)  # saved again under the new keys
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in new.items())
    x = torch.randn(2, 1, 45, 71)
    with torch.no_grad():
        y = ours.eval()(x)
        assert y.isfinite().all() and y.std() > 0
        assert torch.equal(loaded.eval()(x), y)

    again = fpn_resnet18(in_channels=1, num_classes=2, channels=16)
    again.load_state_dict(loaded.state_dict())  # the new keys round-trip
    wrapped = torch.nn.Sequential(fpn_resnet18(in_channels=1, num_classes=2, channels=16))
    wrapped.load_state_dict({f"0.{k}": v for k, v in old.items()})  # also as a submodule
    with torch.no_grad():
        assert torch.equal(again.eval()(x), y)
        assert torch.equal(wrapped.eval()(x), y)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_matches_torchvision_with_the_same_weights(name, tmp_path):
    tvm = pytest.importorskip("torchvision.models")
    theirs = getattr(tvm, name)(weights=None).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(theirs.state_dict(), path)
    ours = resnet(name, weights=path).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        c2, c3, c4, c5 = ours(x)
        t = theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x))))
        for mine, layer in zip(
            (c2, c3, c4, c5), (theirs.layer1, theirs.layer2, theirs.layer3, theirs.layer4)
        ):
            t = layer(t)
            torch.testing.assert_close(mine, t)
    assert ours.channels == [c.shape[1] for c in (c2, c3, c4, c5)]


def test_grey_encoder_from_rgb_weights(tmp_path):
    tvm = pytest.importorskip("torchvision.models")
    path = tmp_path / "r18.pth"
    torch.save(tvm.resnet18(weights=None).state_dict(), path)
    rgb, grey = resnet("resnet18", path).eval(), resnet("resnet18", path, in_channels=1).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            grey(x)[-1], rgb(x.expand(1, 3, 32, 32))[-1], rtol=1e-4, atol=1e-4
        )


def test_weight_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        fpn_resnet50(weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "other.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a state_dict for this model"):
        resnet("resnet18", bad)
    with pytest.raises(ValueError, match="unknown encoder 'resnet7'"):
        resnet("resnet7")


def test_binarize_is_hard_forward_identity_backward():
    p = torch.tensor([0.2, 0.5, 0.7, 0.99], requires_grad=True)
    b = binarize(p)
    assert b.tolist() == [0.0, 0.0, 1.0, 1.0]
    (b * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert p.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_gan_discriminator_sees_binary_masks_and_passes_gradient():
    m = unet_gan(in_channels=1, depth=2, width=4, d_width=4)
    x = torch.randn(2, 1, 32, 32)
    logits = m(x)
    seen = {}
    hook = m.discriminator.features.register_forward_pre_hook(
        lambda mod, args: seen.setdefault("in", args[0])
    )
    d = m.judge(x, logits)
    hook.remove()
    assert d.shape == (2,)
    assert set(seen["in"][:, 1].unique().tolist()) <= {0.0, 1.0}  # the mask channel is hard
    d.sum().backward()
    assert m.generator.head.weight.grad.abs().sum() > 0  # straight-through: G still learns from D
    with pytest.raises(ValueError, match=r"expected \[B, C, H, W\] and \[B, 1, H, W\]"):
        Discriminator(1)(x, torch.zeros(2, 2, 32, 32))


def test_unet_argument_errors():
    with pytest.raises(ValueError, match="must be >= 1"):
        unet(depth=0)
