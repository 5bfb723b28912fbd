"""The engine on a GPU: mixed-precision training, exact resume and tiled prediction on CUDA
(skipped without a GPU; run by benchmarks/gpu_check.sh on the lent GPU machine)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from fastdet.engine import load_model, predict_mask, train_segmentation
from fastdet.engine.checkpoint import load_checkpoint

from .conftest import DiscDataset, det_tiny, seg_tiny

pytestmark = pytest.mark.gpu


cuda_config = partial(seg_tiny, width=8, device="cuda", amp=True, seed=5, deterministic=True)


def test_amp_training_on_cuda_learns_and_checkpoints(tmp_path):
    train, val = DiscDataset(8, 32, seed=0), DiscDataset(2, 32, seed=1)
    hist = train_segmentation(
        cuda_config(epochs=6, optimizer="adam", lr=3e-3, loss="bce_dice"), train, val, tmp_path
    )
    assert all(math.isfinite(r["train_loss"]) for r in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["scaler"] and all(v.device.type == "cpu" for v in ckpt["model"].values())
    model, config = load_model(tmp_path / "best.pt", "cuda")
    assert next(model.parameters()).is_cuda
    mask = predict_mask(
        model, val[0]["image"], config=config, tile=32, overlap=8, device=torch.device("cuda")
    )
    assert mask.shape == (32, 32)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_on_cuda_matches_an_uninterrupted_run(tmp_path, optimizer):
    train, val = DiscDataset(8, 32, seed=0), DiscDataset(2, 32, seed=1)
    straight = tmp_path / "straight"
    train_segmentation(cuda_config(optimizer=optimizer), train, val, straight)
    split = tmp_path / "split"
    train_segmentation(cuda_config(optimizer=optimizer, epochs=1), train, val, split)
    train_segmentation(cuda_config(optimizer=optimizer), train, val, split, resume=True)
    a = load_checkpoint(straight / "last.pt")["model"]
    b = load_checkpoint(split / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- detection


def _rsna(tmp_path, n: int = 6):
    from fastdet.data import RSNADataset
    from fastdet.data.synthetic import synth_rsna

    return RSNADataset(synth_rsna(tmp_path / "rsna", n=n, seed=0, size=64))


det_cuda_config = partial(det_tiny, epochs=3, lr=0.01, device="cuda", amp=True)


def test_det_amp_training_on_cuda(tmp_path):
    from fastdet.engine import train_detection

    data = _rsna(tmp_path)
    hist = train_detection(det_cuda_config(hflip=0.5, warmup_steps=2), data, data, tmp_path / "run")
    assert len(hist) == 3
    assert all(
        math.isfinite(r[k])
        for r in hist
        for k in ("loss", "loss_objectness", "loss_classifier", "loss_box_reg")
    )
    assert min(r["loss"] for r in hist[1:]) < hist[0]["loss"]  # learning, roughly
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(tmp_path / "run" / name)
        assert all(v.device.type == "cpu" for v in ckpt["model"].values())
        assert ckpt["scaler"] and ckpt["scaler"]["scale"] > 0  # AMP's loss scale, saved
        assert ckpt["config"]["amp"] is True
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 9  # 3 epochs x 3 steps


def _twins(a: dict, b: dict, tol: float = 1e-3) -> torch.Tensor:
    """bool [len(a)]: a's detections that have a twin in b: same label, IoU >= 0.99 and a score
    within tol, absolutely and relatively (the scores of a barely trained model are small)."""
    from fastdet.ops import box_iou

    if len(a["scores"]) == 0 or len(b["scores"]) == 0:
        return torch.zeros(len(a["scores"]), dtype=torch.bool)
    diff = (a["scores"][:, None] - b["scores"][None]).abs()
    close = (diff <= tol) & (diff <= tol * a["scores"][:, None] + 1e-6)
    same = (a["labels"][:, None] == b["labels"][None]) & (box_iou(a["boxes"], b["boxes"]) >= 0.99)
    return (same & close).any(1)


def test_det_cuda_prediction_matches_cpu(tmp_path, monkeypatch):
    """A checkpoint loaded on CUDA predicts what it predicts on the CPU (float32, TF32 off).
    Detections near the cut-offs (score threshold, top-100, NMS IoU ties) may differ with
    rounding, so each side's detections are matched to twins on the other: all of the top 10
    and nearly all of the rest must have one."""
    from fastdet.engine import load_detector, predict_detections, train_detection
    from fastdet.engine.tasks.det.data import prepare_image

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    data = _rsna(tmp_path, n=4)
    train_detection(det_cuda_config(epochs=1, amp=False), data, None, tmp_path / "run")
    gpu, config = load_detector(tmp_path / "run" / "last.pt", "cuda")
    cpu, _ = load_detector(tmp_path / "run" / "last.pt", "cpu")
    assert next(gpu.parameters()).is_cuda and not next(cpu.parameters()).is_cuda
    for m in (gpu, cpu):  # keep low scores too, so the comparison has detections to compare
        m.roi_heads.score_thresh = 0.0
    compared = 0
    for i in range(len(data)):
        x = prepare_image(data[i]["image"], config)
        a = predict_detections(gpu, [x], torch.device("cuda"))[0]
        b = predict_detections(cpu, [x], torch.device("cpu"))[0]
        assert a["boxes"].device.type == "cpu" and a["boxes"].dtype == torch.float32
        assert abs(len(a["scores"]) - len(b["scores"])) <= max(2, len(b["scores"]) // 20)
        for p, q in ((a, b), (b, a)):
            twins = _twins(p, q)
            assert bool(twins[:10].all()), (i, p["scores"][:10], q["scores"][:10])
            assert float(twins.float().mean()) >= 0.9 if len(twins) else True
        compared += len(b["scores"])
    assert compared > 0
