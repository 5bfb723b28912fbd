"""A short check of the ops whose test modules import torchvision at module level, for an
environment without a torchvision that loads (wheel_check.sh beside a CPU torch whose matching
torchvision on PyPI is a CUDA build): roi_pool against the reference, gradcheck of roi_align and
roi_pool, torch.library.opcheck and torch.compile (aot_eager, fullgraph) of roi_align,
MultiScaleRoIAlign, sigmoid focal loss against its formula, GIoU loss against a hand value."""

import numpy as np
import torch

import fastdet
from fastdet import ops
from fastdet.ops import _reference as ref

print("fastdet", fastdet.__file__, "torch", torch.__version__)
g = torch.Generator().manual_seed(0)
x = torch.rand(2, 3, 16, 20, generator=g, dtype=torch.float64)
rois = torch.tensor(
    [[0, 1.5, 2.0, 10.0, 12.5], [1, 0.0, 0.0, 19.0, 15.0], [0, 5.0, 3.0, 6.0, 4.0]],
    dtype=torch.float64,
)
out = ops.roi_pool(x, rois, (3, 4), 0.5)
want = ref.roi_pool(x.numpy(), rois.numpy(), (3, 4), 0.5)
np.testing.assert_allclose(out.numpy(), np.asarray(want), rtol=0, atol=0)
print("roi_pool == reference")
xr = x.clone().requires_grad_()
assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, rois, (3, 3), 0.5, 2, True), (xr,))
assert torch.autograd.gradcheck(lambda t: ops.roi_pool(t, rois, (3, 3), 0.5), (xr,))
print("gradcheck roi_align, roi_pool ok")
names = [n for n in dir(torch.ops.fastdet) if "roi" in n]
print("torch.ops.fastdet roi ops:", names)
for name, args in (("roi_align", (x, rois, 0.5, 3, 3, 2, True)),):
    try:
        torch.library.opcheck(getattr(torch.ops.fastdet, name), args)
        print("opcheck", name, "ok")
    except Exception as e:  # noqa: BLE001 - report which check failed, then fail
        raise SystemExit(f"opcheck {name}: {type(e).__name__}: {str(e)[:300]}") from e
f = torch.compile(
    lambda t, r: ops.roi_align(t, r, (3, 3), 0.5, 2, True), backend="aot_eager", fullgraph=True
)
torch.testing.assert_close(f(x, rois), ops.roi_align(x, rois, (3, 3), 0.5, 2, True))
print("torch.compile(aot_eager, fullgraph) roi_align ok")
feats = {"0": torch.rand(1, 4, 32, 32, generator=g), "1": torch.rand(1, 4, 16, 16, generator=g)}
boxes = [torch.tensor([[1.0, 1.0, 20.0, 30.0], [0.0, 0.0, 120.0, 100.0]])]
pool = ops.MultiScaleRoIAlign(["0", "1"], 7, 2)
assert tuple(pool(feats, boxes, [(128, 128)]).shape) == (2, 4, 7, 7)
print("MultiScaleRoIAlign ok")
logits = torch.randn(50, generator=g, requires_grad=True)
t = (torch.rand(50, generator=g) > 0.5).float()
loss = ops.sigmoid_focal_loss(logits, t, reduction="mean")
loss.backward()
p = torch.sigmoid(logits.detach())
ce = torch.nn.functional.binary_cross_entropy_with_logits(logits.detach(), t, reduction="none")
pt = p * t + (1 - p) * (1 - t)
want = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - pt) ** 2).mean()
torch.testing.assert_close(loss.detach(), want)
print("sigmoid_focal_loss == formula, backward ok")
a = torch.tensor([[0.0, 0, 10, 10]])
b = torch.tensor([[5.0, 5, 15, 15]])
got = float(ops.generalized_box_iou_loss(a, b))
assert abs(got - (1 - (25 / 175 - (225 - 175) / 225))) < 1e-6, got
print("generalized_box_iou_loss == hand value")
