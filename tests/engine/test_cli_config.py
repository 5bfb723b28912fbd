"""The training flags come from the task configs: every user-facing field has a flag, flags
reach the config, resumed runs refuse changed settings, and configs and checkpoints written
before the configs were unified still load."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from fastdet.cli import build_parser, main
from fastdet.engine import TASKS, SegConfig, Trainer, load_model, task_for
from fastdet.engine.checkpoint import atomic_save, load_checkpoint

# Settings that are not the user's to set on the command line (and why).
EXEMPT = {"extra"}  # free-form notes the command line fills (data folder, layout, ...)


def _train_parser(task: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    kinds = next(a for a in train._actions if isinstance(a, argparse._SubParsersAction))
    return kinds.choices[task]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_config_field_has_a_flag(task):
    dests = {a.dest for a in _train_parser(task)._actions}
    fields = {f.name for f in dataclasses.fields(TASKS[task].config_class)}
    assert fields - EXEMPT - dests == set()
    assert EXEMPT & dests == set()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_choices_and_defaults_are_the_configs(task):
    cls = TASKS[task].config_class
    actions = {a.dest: a for a in _train_parser(task)._actions}
    for f in dataclasses.fields(cls):
        if f.name in EXEMPT:
            continue
        a = actions[f.name]
        assert a.default is None, f.name  # unset flags leave the config's default
        if f.metadata.get("choices"):
            assert tuple(a.choices) == tuple(f.metadata["choices"]), f.name


def test_flags_reach_both_configs(tmp_path):
    parser = build_parser()
    args = parser.parse_args(
        ["train", "det", "--out", str(tmp_path), "--num-classes", "3", "--momentum", "0.8"]
        + ["--weight-decay", "1e-4", "--step-size", "5", "--gamma", "0.2"]
        + ["--val-fraction", "0.3", "--workers", "1", "--deterministic", "--no-amp"]
        + ["--anchor-sizes", "8", "16", "32", "64", "128", "--hist-eq"]
    )
    given = {k: v for k, v in vars(args).items() if v is not None}
    assert given["num_classes"] == 3 and given["momentum"] == 0.8 and given["step_size"] == 5
    assert given["val_fraction"] == 0.3 and given["num_workers"] == 1
    assert given["deterministic"] is True and given["amp"] is False and given["hist_eq"] is True
    assert given["anchor_sizes"] == [8.0, 16.0, 32.0, 64.0, 128.0]
    args = parser.parse_args(
        ["train", "seg", "--out", str(tmp_path), "--no-hflip", "--vflip", "0.25"]
        + ["--init-checkpoint", "u.pt", "--encoder-weights", "r.pth", "--warmup-steps", "3"]
    )
    assert (args.hflip, args.vflip, args.warmup_steps) == (0.0, 0.25, 3)
    assert (args.weights, args.weights_backbone) == ("u.pt", "r.pth")


def test_help_has_a_line_per_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("info", "bench", "data", "train", "predict", "evaluate", "demo"):
        line = next(x for x in text.splitlines() if x.strip().startswith(command + " "))
        assert len(line.split(None, 1)[1]) > 5, line


def test_old_segmentation_config_keys_load(tmp_path, discs):
    """A run saved before the configs were unified (encoder_weights, init_checkpoint, flips as
    booleans) loads for prediction and resumes."""
    base = dict(model="unet", depth=2, width=4, batch_size=4, size=32, progress=False)
    config = SegConfig(**base, epochs=1, device="cpu", vflip=0.0)
    trainer = Trainer(task_for(config), *discs, tmp_path / "run")
    trainer.fit()
    trainer.close()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    old = dict(ckpt["config"])
    old["encoder_weights"], old["init_checkpoint"] = old.pop("weights_backbone"), old.pop("weights")
    old["hflip"], old["vflip"] = True, False
    for name in ("warmup_steps",):  # settings the first engine did not have
        old.pop(name)
    atomic_save({**ckpt, "config": old}, tmp_path / "run" / "last.pt")
    model, loaded = load_model(tmp_path / "run" / "last.pt")
    assert (loaded.hflip, loaded.vflip, loaded.weights) == (0.5, 0.0, None)
    assert isinstance(model, torch.nn.Module) and not model.training
    hist = Trainer(
        task_for(SegConfig(**base, epochs=2, device="cpu", vflip=0.0)),
        *discs,
        tmp_path / "run",
        True,
    )
    assert len(hist.fit()) == 2
    hist.close()


def test_resume_refuses_changed_settings_on_the_command_line(tmp_path, capsys):
    from fastdet.data.synthetic import synth_dsb2018

    data = synth_dsb2018(tmp_path / "data", n=4, seed=0, size=32)
    out = tmp_path / "run"
    flags = ["--data", str(data), "--layout", "dsb2018", "--model", "unet", "--depth", "1"]
    flags += ["--width", "2", "--size", "16", "--batch-size", "2", "--device", "cpu"]
    assert main(["train", "seg", "--out", str(out), *flags, "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert (
        main(["train", "seg", "--out", str(out), "--resume", "--epochs", "2", "--lr", "0.5"]) == 2
    )
    err = capsys.readouterr().err
    assert "lr: 0.01 -> 0.5" in err and err.count("\n") <= 2


def test_checkpoint_of_the_wrong_task_is_named(tmp_path, discs, capsys):
    config = SegConfig(model="unet", depth=1, width=2, size=16, epochs=1, device="cpu")
    trainer = Trainer(task_for(config), *discs, tmp_path / "seg")
    trainer.fit()
    trainer.close()
    with pytest.raises(ValueError, match="a segmentation checkpoint .*not detection"):
        load_model(tmp_path / "seg" / "last.pt", task="det")
    code = main(
        ["evaluate", "det", "--checkpoint", str(tmp_path / "seg" / "last.pt")]
        + ["--data", str(tmp_path), "--layout", "rsna"]
    )
    assert code == 2 and "segmentation checkpoint" in capsys.readouterr().err
