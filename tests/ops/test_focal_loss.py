"""sigmoid_focal_loss against torchvision.ops (values and gradients bit for bit) and as the
focal loss of fastdet.models.losses."""

import numpy as np
import pytest
import torch

from fastdet import ops

tv = pytest.importorskip("torchvision")

REDUCTIONS = ["none", "mean", "sum"]


def loss_and_grads(fn, a, b, reduction, **kw):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    loss = fn(a, b, reduction=reduction, **kw)
    loss.sum().backward()
    return loss, a.grad, b.grad


def logits_and_targets(rng, shape, dtype=torch.float32, device="cpu"):
    x = torch.from_numpy(rng.normal(0, 3, shape)).to(device, dtype)
    y = torch.from_numpy((rng.random(shape) < 0.3).astype(np.float64)).to(device, dtype)
    return x, y


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2), (-1, 0), (0.0, 1.5), (1.0, 2), (0.58, 0)])
def test_sigmoid_focal_loss_matches_torchvision_bit_for_bit(alpha, gamma, reduction, rng, device):
    for dtype in (torch.float32, torch.float64) + ((torch.float16,) if device == "cuda" else ()):
        x, y = logits_and_targets(rng, (40, 7), dtype, device)
        got = loss_and_grads(
            lambda a, b, **k: ops.sigmoid_focal_loss(a, b, alpha, gamma, **k), x, y, reduction
        )
        want = loss_and_grads(
            lambda a, b, **k: tv.ops.sigmoid_focal_loss(a, b, alpha, gamma, **k), x, y, reduction
        )
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_sigmoid_focal_loss_defaults_and_numpy(rng):
    x, y = logits_and_targets(rng, (10, 3), torch.float64)
    assert ops.sigmoid_focal_loss(x, y).shape == (10, 3)  # reduction "none" by default
    got = ops.sigmoid_focal_loss(x.numpy(), y.numpy(), reduction="sum")
    assert isinstance(got, np.ndarray)
    assert got == ops.sigmoid_focal_loss(x, y, reduction="sum").item()


def test_sigmoid_focal_loss_bad_arguments_raise():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="Invalid value for reduction"):
        ops.sigmoid_focal_loss(x, x, 0.25, 2, "xyz")
    for alpha in (-0.5, 1.5):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\] or -1"):
            ops.sigmoid_focal_loss(x, x, alpha=alpha)


def test_models_focal_uses_ops(rng):
    from fastdet.models import losses

    x, y = logits_and_targets(rng, (30,), torch.float64)
    assert torch.equal(
        losses.focal(x, y, 0.25, 2.0), ops.sigmoid_focal_loss(x, y, 0.25, 2.0, "mean")
    )
    assert torch.equal(
        losses.focal(x, y, -3.0, 2.0, "sum"), ops.sigmoid_focal_loss(x, y, -1, 2.0, "sum")
    )
