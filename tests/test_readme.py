"""The README's Python examples run and say what they claim."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})


def test_readme_claimed_outputs():
    import torch

    from fastdet import ops

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert ops.batched_nms(boxes, scores, torch.tensor([0, 1, 1]), 0.5).tolist() == [0, 1, 2]
    assert ops.nms(boxes.numpy(), scores.numpy(), 0.5).tolist() == [0, 2]
    assert ops.box_iou(boxes.view(1, 3, 4), boxes[:2], fmt="xyxy").shape == (1, 3, 2)
    assert ops.box_iou(boxes.int(), boxes.int()).dtype == torch.float32
    masks = ops.masks_to_boxes(torch.zeros(2, 64, 64, dtype=torch.bool))
    assert masks.shape == (2, 4) and masks.dtype == torch.float32


def test_readme_rotated_claims():
    import torch

    from fastdet import ops

    rboxes = torch.tensor([[50, 50, 40, 20, 0], [50, 50, 20, 40, 90], [60, 50, 40, 20, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    iou = ops.box_iou_rotated(rboxes, rboxes)
    assert iou[0, 1] == 1 and round(float(iou[0, 2]), 2) == 0.45
    assert ops.nms_rotated(rboxes, scores, 0.5).tolist() == [0, 2]
    assert ops.batched_nms_rotated(rboxes, scores, torch.tensor([0, 1, 1]), 0.5).tolist() == [
        0,
        1,
        2,
    ]
    corners = torch.tensor([[30, 40, 70, 40, 70, 60, 30, 60.0]])
    assert ops.rotated_to_cxcywhr(corners, "xyxyxyxy").tolist() == [[50, 50, 40, 20, 0]]
    assert ops.box_iou_rotated(corners, corners, fmt="xyxyxyxy").tolist() == [[1.0]]


def test_readme_weighted_boxes_fusion_claims():
    import numpy as np

    from fastdet import ops

    boxes = [[[0.10, 0.10, 0.50, 0.50], [0.60, 0.60, 0.90, 0.90]], [[0.12, 0.10, 0.52, 0.50]]]
    b, s, lab = ops.weighted_boxes_fusion(boxes, [[0.9, 0.6], [0.8]], [[0, 1], [0]], iou_thr=0.55)
    np.testing.assert_allclose(b, [[0.1094, 0.1, 0.5094, 0.5], [0.6, 0.6, 0.9, 0.9]], atol=1e-4)
    np.testing.assert_allclose(s, [0.85, 0.3], atol=1e-6)
    assert lab.tolist() == [0, 1] and lab.dtype == np.int64
