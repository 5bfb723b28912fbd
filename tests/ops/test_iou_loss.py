"""generalized_box_iou_loss, distance_box_iou_loss and complete_box_iou_loss against
torchvision.ops: values and gradients bit for bit, reductions, dtypes, empty inputs."""

import numpy as np
import pytest
import torch

from fastdet import ops

tv = pytest.importorskip("torchvision")

IOU_LOSSES = ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]
REDUCTIONS = ["none", "mean", "sum"]


def pairs(rng, n, dtype=torch.float32, inverted=0.2):
    """Paired boxes [n, 4]: overlapping, disjoint, nested, and a fraction inverted."""
    a = rng.uniform(0, 50, (n, 4))
    a[:, 2:] = a[:, :2] + rng.uniform(1, 30, (n, 2))
    b = a + rng.normal(0, 8, (n, 4))
    flip = rng.random(n) < inverted
    b[flip, 2:], b[flip, :2] = b[flip, :2].copy(), b[flip, 2:].copy()
    return torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)


def loss_and_grads(fn, a, b, reduction, **kw):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    loss = fn(a, b, reduction=reduction, **kw)
    loss.sum().backward()
    return loss, a.grad, b.grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("name", IOU_LOSSES)
def test_iou_losses_match_torchvision_bit_for_bit(name, dtype, reduction, rng, device):
    a, b = pairs(rng, 300, dtype)
    a, b = a.to(device), b.to(device)
    got = loss_and_grads(getattr(ops, name), a, b, reduction)
    want = loss_and_grads(getattr(tv.ops, name), a, b, reduction)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", IOU_LOSSES)
def test_iou_losses_eps_and_batched_shapes(name, rng):
    a, b = pairs(rng, 24, torch.float64)
    a, b = a.view(2, 3, 4, 4), b.view(2, 3, 4, 4)
    for eps in (1e-7, 0.5):
        got = getattr(ops, name)(a, b, eps=eps)
        assert got.shape == (2, 3, 4)
        torch.testing.assert_close(got, getattr(tv.ops, name)(a, b, eps=eps), rtol=0, atol=0)


def test_torchvisions_own_loss_cases():
    # test_ops.py's get_boxes and the values it expects
    box1 = torch.tensor([-1.0, -1, 1, 1])
    box2, box3, box4 = (
        torch.tensor([0.0, 0, 1, 1]),
        torch.tensor([0.0, 1, 1, 2]),
        torch.tensor([1.0, 1, 2, 2]),
    )
    giou = ops.generalized_box_iou_loss
    assert giou(box1, box1).item() == 0.0
    assert giou(box1, box2).item() == pytest.approx(0.75)
    assert giou(box2, box3).item() == pytest.approx(1.0)
    assert giou(box2, box4).item() == pytest.approx(1.5)
    b1s, b2s = torch.stack([box2, box2]), torch.stack([box3, box4])
    assert giou(b1s, b2s, reduction="sum").item() == pytest.approx(2.5)
    for fn in (ops.distance_box_iou_loss, ops.complete_box_iou_loss):
        assert fn(box1, box2).item() == pytest.approx(0.8125)
        assert fn(box1, box3).item() == pytest.approx(1.1923, abs=1e-4)
        assert fn(box1, box4).item() == pytest.approx(1.25)
        assert fn(b1s, b2s, reduction="mean").item() == pytest.approx(1.225, abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name", IOU_LOSSES)
def test_empty_boxes_give_zero_mean_with_gradients(name, dtype, device):
    a = torch.zeros(0, 4, dtype=dtype, device=device, requires_grad=True)
    b = torch.zeros(0, 4, dtype=dtype, device=device, requires_grad=True)
    loss = getattr(ops, name)(a, b, reduction="mean")
    loss.backward()
    assert loss.item() == 0.0 and loss.dtype == torch.float32  # half in: float32 (torchvision)
    assert a.grad is not None and b.grad is not None
    assert getattr(ops, name)(a, b).numel() == 0


@pytest.mark.parametrize("name", IOU_LOSSES)
def test_integer_boxes_compute_in_float32(name):
    a = torch.tensor([[0, 0, 4, 2], [1, 1, 5, 5]])
    got = getattr(ops, name)(a, a.flip(0))
    assert got.dtype == torch.float32
    assert torch.equal(got, getattr(tv.ops, name)(a, a.flip(0)))


@pytest.mark.parametrize("name", IOU_LOSSES)
def test_numpy_boxes(name, rng):
    a, b = pairs(rng, 20, torch.float64)
    got = getattr(ops, name)(a.numpy(), b.numpy(), reduction="none")
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_array_equal(got, getattr(ops, name)(a, b).numpy())


# CIoU holds alpha constant in its gradient (torchvision's definition), so finite differences
# disagree with it by design; its gradients are checked against torchvision's above.
@pytest.mark.parametrize("name", ["generalized_box_iou_loss", "distance_box_iou_loss"])
def test_gradcheck_float64(name, rng):
    a, b = pairs(rng, 12, torch.float64, inverted=0.0)
    a.requires_grad_()
    torch.autograd.gradcheck(lambda x: getattr(ops, name)(x, b, reduction="sum"), (a,))


@pytest.mark.parametrize("name", IOU_LOSSES)
def test_bad_arguments_raise(name):
    fn = getattr(ops, name)
    with pytest.raises(ValueError, match="Invalid value for reduction: 'xyz'"):
        fn(torch.zeros(2, 4), torch.zeros(2, 4), reduction="xyz")
    with pytest.raises(ops.ShapeError, match=r"boxes2 must have shape \[\.\.\., 4\], got \(2, 5\)"):
        fn(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(TypeError, match="boxes2 is a numpy array but boxes1 is a torch array"):
        fn(torch.zeros(2, 4), np.zeros((2, 4)))


def test_iou_losses_under_torch_compile(rng):
    a, b = pairs(rng, 16)
    a.requires_grad_()
    f = torch.compile(
        lambda x, y: ops.complete_box_iou_loss(x, y, "mean"), fullgraph=True, backend="aot_eager"
    )
    got = f(a, b)
    torch.testing.assert_close(got, ops.complete_box_iou_loss(a, b, "mean"))


# --- found by tests/ops/test_fuzz.py ----------------------------------------------------------


@pytest.mark.parametrize("name", IOU_LOSSES)
def test_bad_eps_raises_naming_eps(name, bad_eps):
    eps, error = bad_eps
    with pytest.raises(error, match="eps"):  # was float()'s bare TypeError for None
        getattr(ops, name)(torch.zeros(2, 4), torch.ones(2, 4), eps=eps)


@pytest.mark.parametrize("name", IOU_LOSSES)
def test_shapes_that_do_not_broadcast_raise_naming_both(name):
    # was torch's "The size of tensor a (2) must match ..." RuntimeError
    with pytest.raises(ops.ShapeError, match=r"boxes1 \(2, 4\) and boxes2 \(3, 4\) do not"):
        getattr(ops, name)(torch.zeros(2, 4), torch.zeros(3, 4))
    got = getattr(ops, name)(torch.zeros(2, 1, 4), torch.ones(3, 4))  # these broadcast
    assert got.shape == (2, 3)


@pytest.mark.parametrize("name", IOU_LOSSES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_coordinates_raise_on_the_cpu(name, bad):
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    c = b.clone()
    c[1, 2] = bad  # torchvision: a NaN loss
    with pytest.raises(ValueError, match="boxes2 contains NaN or inf"):
        getattr(ops, name)(b, c)
    with pytest.raises(ValueError, match="boxes1 contains NaN or inf"):
        getattr(ops, name)(c.numpy(), b.numpy(), reduction="sum")


@pytest.mark.parametrize("name", IOU_LOSSES)
def test_mixed_dtypes_promote(name, rng):
    a, b = pairs(rng, 8, torch.float64)
    want = getattr(tv.ops, name)(a, b.float().double())
    got = getattr(ops, name)(a, b.float())  # torchvision: "Index put requires ... dtypes match"
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
