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
