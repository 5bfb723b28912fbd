"""load_model's speed options and the predict/evaluate flags behind them. bf16: the model's
forward runs under bfloat16 autocast (its convolutions see bfloat16), its outputs come back
float32 and near the float32 model's. channels_last: 4-D weights in NHWC, the same outputs within
float32 rounding. Every model a command loads (checkpoint, gate) gets the flags.

Checkpoints are written in the engine's format from seeded, untrained models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastdet.cli import main
from fastdet.engine import load_model, loading
from fastdet.engine.tasks.cls.task import CHECKPOINT_FORMAT as CLS_FORMAT
from fastdet.engine.tasks.cls.task import ClsConfig
from fastdet.engine.tasks.cls.task import build_model as build_cls
from fastdet.engine.tasks.det.task import CHECKPOINT_FORMAT as DET_FORMAT
from fastdet.engine.tasks.det.task import DetConfig
from fastdet.engine.tasks.det.task import build_model as build_det
from fastdet.engine.tasks.seg.task import CHECKPOINT_FORMAT as SEG_FORMAT
from fastdet.engine.tasks.seg.task import SegConfig
from fastdet.engine.tasks.seg.task import build_model as build_seg

CONFIGS = {
    "seg": (SEG_FORMAT, build_seg, lambda: SegConfig(model="unet", depth=2, width=4, size=32)),
    "det": (
        DET_FORMAT,
        build_det,
        lambda: DetConfig(model="fasterrcnn_resnet18_fpn", num_classes=2, min_size=64, max_size=64),
    ),
    "cls": (
        CLS_FORMAT,
        build_cls,
        lambda: ClsConfig(model="resnet18", classes=["a", "b"], in_channels=1, size=32),
    ),
}


def _checkpoint(path, task):
    fmt, build, make_config = CONFIGS[task]
    torch.manual_seed(0)
    config = make_config()
    model = build(config, pretrained=False)
    torch.save({"format": fmt, "config": config.to_dict(), "model": model.state_dict()}, path)
    return path


def _first_conv_dtypes(model):
    """The output dtypes of the model's first convolution, one per forward call."""
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen


def _inputs(task, g):
    if task == "det":
        return ([torch.rand(3, 64, 64, generator=g)],)
    return (torch.rand(2, 1, 32, 32, generator=g),)


@pytest.mark.parametrize("task", ["seg", "det", "cls"])
def test_bf16_forward_runs_in_bfloat16_and_returns_float32(task, tmp_path):
    ckpt = _checkpoint(tmp_path / f"{task}.pt", task)
    plain, _ = load_model(ckpt, task=task)
    fast, _ = load_model(ckpt, task=task, bf16=True)
    assert type(fast) is type(plain) and not fast.training
    assert all(
        torch.equal(a, b) for a, b in zip(plain.state_dict().values(), fast.state_dict().values())
    )
    seen, seen_plain = _first_conv_dtypes(fast), _first_conv_dtypes(plain)
    x = _inputs(task, torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = plain(*x), fast(*x)
    assert seen == [torch.bfloat16] and seen_plain == [torch.float32]
    if task == "det":  # boxes and scores float32, labels int64, as the float32 model's
        assert {k: v.dtype for k, v in got[0].items()} == {k: v.dtype for k, v in want[0].items()}
        assert got[0]["scores"].dtype == torch.float32
    else:  # logits within bfloat16's rounding of the float32 ones
        assert got.dtype == torch.float32
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, atol=0.05 * scale + 1e-3, rtol=0.05)


def _png(path, g):
    Image.fromarray((g.random((48, 48)) * 255).astype(np.uint8)).save(path)
    return path


def test_the_flags_reach_every_model_a_command_loads(tmp_path, monkeypatch, capsys):
    """predict det with --gate: the detector and the gate's classifier; predict seg and predict
    cls: theirs; each with exactly the options given."""
    seen = []
    real = loading.with_options

    def spy(model, device, bf16=False, channels_last=False):
        seen.append((type(model).__name__, bf16, channels_last))
        return real(model, device, bf16, channels_last)

    monkeypatch.setattr(loading, "with_options", spy)
    det, seg = _checkpoint(tmp_path / "det.pt", "det"), _checkpoint(tmp_path / "seg.pt", "seg")
    cls = _checkpoint(tmp_path / "cls.pt", "cls")
    image = _png(tmp_path / "x.png", np.random.default_rng(0))
    gate = ["--gate", str(cls), "--gate-threshold", "0.0", "--device", "cpu"]
    args = ["predict", "det", "--checkpoint", str(det), str(image)]
    for flags, want in (([], (False, False)), (["--bf16", "--channels-last"], (True, True))):
        seen.clear()  # another --out for other flags: a run folder refuses a second setting
        assert main([*args, "--out", str(tmp_path / f"d{want[0]}"), *gate, *flags]) == 0
        assert sorted(seen) == [("FasterRCNN", *want), ("ResNetClassifier", *want)]
    assert (tmp_path / "dTrue" / "boxes.csv").is_file()
    seen.clear()
    out = ["--out", str(tmp_path / "s"), "--device", "cpu", "--channels-last"]
    assert main(["predict", "seg", "--checkpoint", str(seg), str(image), *out]) == 0
    assert seen == [("UNet", False, True)] and (tmp_path / "s" / "x_mask.png").is_file()
    seen.clear()
    out = ["--out", str(tmp_path / "c"), "--device", "cpu", "--bf16"]
    assert main(["predict", "cls", "--checkpoint", str(cls), str(image), *out]) == 0
    assert seen == [("ResNetClassifier", True, False)]


@pytest.mark.parametrize("task", ["seg", "det", "cls"])
def test_channels_last_gives_the_same_outputs(task, tmp_path):
    ckpt = _checkpoint(tmp_path / f"{task}.pt", task)
    plain, _ = load_model(ckpt, task=task)
    fast, _ = load_model(ckpt, task=task, channels_last=True)
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    x = _inputs(task, torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = plain(*x), fast(*x)
    if task == "det":
        assert len(got[0]["boxes"]) == len(want[0]["boxes"]) > 0
        for k in ("boxes", "scores"):
            torch.testing.assert_close(got[0][k], want[0][k], atol=1e-3, rtol=1e-4)
        assert torch.equal(got[0]["labels"], want[0]["labels"])
    else:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_evaluate_seg_with_bf16_scores_near_float32(tmp_path, capsys):
    """evaluate seg --bf16 gives a trained U-Net's float32 figures within bfloat16's rounding."""
    from fastdet.data.synthetic import synth

    data = synth("dsb2018", tmp_path / "data", n=4)
    train = ["train", "seg", "--data", str(data), "--layout", "dsb2018", "--model", "unet"]
    train += ["--depth", "2", "--width", "8", "--size", "64", "--epochs", "20", "--lr", "0.01"]
    train += ["--optimizer", "adam", "--out", str(tmp_path), "--device", "cpu", "--no-progress"]
    assert main(train) == 0
    args = ["evaluate", "seg", "--checkpoint", str(tmp_path / "last.pt"), "--data", str(data)]
    args += ["--layout", "dsb2018", "--device", "cpu", "--no-classical"]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert main([*args, "--json", str(tmp_path / "b.json"), "--bf16"]) == 0
    a = json.loads((tmp_path / "a.json").read_text())["overall"]["model"]
    b = json.loads((tmp_path / "b.json").read_text())["overall"]["model"]
    assert a["dice"]["pooled"] > 0.3  # a model that finds nuclei: the comparison means something
    for key in ("dice", "iou"):
        assert abs(a[key]["pooled"] - b[key]["pooled"]) < 0.02, (key, a[key], b[key])
