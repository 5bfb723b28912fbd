"""Host syncs per detector call (fastdet.bench.syncs): the counter sees what syncs and nothing
else, and the detectors stay at today's counts (batch of two 128 x 128 images). Before the
whole-model speed work (b60c685) the same counter read: Faster R-CNN training step 43,
inference 20; Mask R-CNN 55 and 28. Every sync left has its reason in a comment at its site."""

from __future__ import annotations

import pytest
import torch

from fastdet.bench.syncs import count_host_syncs
from fastdet.models.detection import fasterrcnn_resnet18_fpn, maskrcnn_resnet18_fpn

SIZE = 128
# (training step, inference call) for a batch of two images
LIMITS = {"faster": (15, 9), "mask": (18, 10)}


def test_counter_sees_syncs_and_only_them():
    x = torch.arange(6.0)
    mask = x > 2

    def reads():
        float(x.sum())  # _local_scalar_dense
        torch.where(mask)  # nonzero
        x[mask]  # boolean-mask index
        x[mask] = 0.0  # boolean-mask store
        x.tolist()
        x.numpy()
        torch.nonzero(mask)

    def no_reads():
        y = torch.where(mask, x, 0.0)  # three-argument where: no size read
        y = y[torch.tensor([0, 2])] * 2 + x.sum()
        torch.sort(y)

    got = count_host_syncs(reads)
    assert got["total"] == 7, got
    assert got["by_op"]["aten.nonzero.default"] == 2
    assert count_host_syncs(no_reads)["total"] == 0


def _batch(masks: bool):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(2)]
    targets = []
    for _ in images:
        t = {
            "boxes": torch.tensor([[10.0, 12, 40, 44], [60, 62, 90, 100]]),
            "labels": torch.ones(2, dtype=torch.int64),
        }
        if masks:
            m = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
            m[0, 14:40, 12:38] = 1
            m[1, 64:98, 62:88] = 1
            t["masks"] = m
        targets.append(t)
    return images, targets


@pytest.mark.parametrize("kind", ["faster", "mask"])
def test_detector_host_syncs_stay_at_todays_counts(kind):
    torch.manual_seed(0)
    build = maskrcnn_resnet18_fpn if kind == "mask" else fasterrcnn_resnet18_fpn
    model = build(num_classes=2, min_size=SIZE, max_size=SIZE)
    images, targets = _batch(kind == "mask")

    def step():
        sum(model(images, targets).values()).backward()

    def infer():
        with torch.no_grad():
            model(images)

    model.train()
    train = count_host_syncs(step)
    model.eval()
    test = count_host_syncs(infer)
    assert train["total"] <= LIMITS[kind][0] and test["total"] <= LIMITS[kind][1], (train, test)
    # boolean-mask stores and remove_small_boxes's own sync are gone for good
    for ops in (train["by_op"], test["by_op"]):
        assert not any("boolean mask" in k or "remove_small_boxes" in k for k in ops), ops
    # NMS: one per image in the RPN, and one more per image in inference
    assert train["by_op"].get("fastdet.batched_nms.default") == 2
    assert test["by_op"].get("fastdet.batched_nms.default") == 4
