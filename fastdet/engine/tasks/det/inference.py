"""One call of a detector: eval-mode detections of prepared images (training's validation,
evaluation, prediction and the operating point's tuning all run the model through it)."""

from __future__ import annotations

import torch

from ...trainer import autocast


@torch.no_grad()
def predict_detections(model, images, device, amp: bool = False, bf16: bool = False) -> list[dict]:
    """Eval-mode detections of prepared images, as CPU tensors {"boxes", "scores", "labels"};
    amp: float16 autocast on CUDA, bf16: bfloat16 autocast anywhere."""
    device = torch.device(device)
    model.eval()
    with autocast(device, amp, bf16):
        out = model([im.to(device) for im in images])
    return [
        {k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in o.items()}
        for o in out
    ]
