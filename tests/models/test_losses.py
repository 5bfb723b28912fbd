"""Each loss against its direct formula (float64, elementwise loops over numpy values)."""

import math

import numpy as np
import pytest
import torch

from fastdet.models import losses


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(int(np.random.SeedSequence().entropy % 2**31))
    logits = torch.randn(3, 1, 5, 6, generator=g, dtype=torch.float64) * 3
    target = (torch.rand(3, 1, 5, 6, generator=g) > 0.6).double()
    return logits, target


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_bce(data):
    x, t = data
    want = np.mean(
        [
            -(ti * math.log(sig(xi)) + (1 - ti) * math.log(1 - sig(xi)))
            for xi, ti in zip(x.flatten().tolist(), t.flatten().tolist())
        ]
    )
    assert float(losses.bce(x, t)) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1, 0.0), (0.5, 1.0)])
def test_focal(data, alpha, gamma):
    x, t = data
    terms = []
    for xi, ti in zip(x.flatten().tolist(), t.flatten().tolist()):
        p_t = sig(xi) if ti else 1 - sig(xi)
        a_t = 1.0 if alpha < 0 else (alpha if ti else 1 - alpha)
        terms.append(-a_t * (1 - p_t) ** gamma * math.log(p_t))
    assert float(losses.focal(x, t, alpha, gamma)) == pytest.approx(np.mean(terms), rel=1e-10)
    if alpha < 0 and gamma == 0:
        torch.testing.assert_close(losses.focal(x, t, alpha, gamma), losses.bce(x, t))


def test_focal_matches_torchvision(data):
    tvops = pytest.importorskip("torchvision.ops")
    x, t = data
    torch.testing.assert_close(
        losses.focal(x, t, 0.25, 2.0, "sum"), tvops.sigmoid_focal_loss(x, t, 0.25, 2.0, "sum")
    )


def test_dice(data):
    x, t = data
    want = []
    for xb, tb in zip(x, t):
        p = [sig(v) for v in xb.flatten().tolist()]
        g = tb.flatten().tolist()
        want.append(1 - (2 * sum(a * b for a, b in zip(p, g)) + 1) / (sum(p) + sum(g) + 1))
    torch.testing.assert_close(
        losses.dice(x, t, reduction="none"), torch.tensor(want, dtype=torch.float64)
    )
    empty = torch.full((1, 1, 4, 4), -30.0, dtype=torch.float64)  # predicts nothing, nothing there
    assert float(losses.dice(empty, torch.zeros_like(empty))) == pytest.approx(0, abs=1e-9)
    torch.testing.assert_close(
        losses.bce_dice(x, t, 0.5, 2.0), 0.5 * losses.bce(x, t) + 2.0 * losses.dice(x, t)
    )


def test_adversarial_terms():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    assert float(losses.generator_adversarial(fake)) == pytest.approx(
        np.mean([-math.log(sig(v)) for v in (0.5, -3.0)])
    )
    want = np.mean([-math.log(sig(v)) for v in (2.0, -1.0)]) + np.mean(
        [-math.log(1 - sig(v)) for v in (0.5, -3.0)]
    )
    assert float(losses.discriminator_adversarial(real, fake)) == pytest.approx(want)
    seg = torch.tensor(0.3)
    assert float(losses.gan_generator_loss(seg, fake, 0.2)) == pytest.approx(
        0.3 + 0.2 * float(losses.generator_adversarial(fake))
    )


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_smooth_l1(sigma):
    d = torch.tensor([-2.0, -0.05, 0.0, 0.1, 0.2, 1.5], dtype=torch.float64)
    s2 = sigma * sigma
    want = sum(0.5 * s2 * v * v if abs(v) < 1 / s2 else abs(v) - 0.5 / s2 for v in d.tolist())
    assert float(losses.smooth_l1(d, torch.zeros_like(d), sigma)) == pytest.approx(want)


def test_errors(data):
    x, t = data
    with pytest.raises(ValueError, match="must have the same shape"):
        losses.bce(x, t[:1])
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.focal(x, t, reduction="avg")
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        losses.focal(x, t, gamma=-1)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        losses.smooth_l1(x, x, 0)
