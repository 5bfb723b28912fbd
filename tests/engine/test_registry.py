"""The task registry: a new task is its package plus one line in engine.tasks.PACKAGES, and the
trainer, checkpoints and command line follow from them (a toy task shows it)."""

from __future__ import annotations

import pytest

from fastdet.cli import build_parser, main
from fastdet.engine import load_model, tasks
from fastdet.engine.tasks import det

from . import toy


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(tasks, "PACKAGES", [*tasks.PACKAGES, toy])  # the one registry line


def test_the_builtin_tasks_are_registered():
    assert [p.Task.name for p in tasks.PACKAGES] == ["seg", "det", "cls"]
    assert tasks.tasks() == tasks.TASKS
    assert tasks.task_class(det.DetConfig()) is det.DetTask


def test_a_registered_package_is_a_task_of_the_command_and_the_loader(registered, tmp_path, capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "toy", "--help"])
    assert "train the toy mean-intensity model" in capsys.readouterr().out
    run = tmp_path / "run"
    args = ["train", "toy", "--data", str(tmp_path), "--layout", "noise", "--model", "mean"]
    assert main([*args, "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2:" in out and (run / "best.pt").is_file()
    model, config = load_model(run / "best.pt", task="toy")
    assert isinstance(config, toy.ToyConfig) and config.extra["layout"] == "noise"
    assert not model.training
    with pytest.raises(ValueError, match="a toy regression checkpoint .*not detection"):
        load_model(run / "best.pt", task="det")


def test_an_unregistered_package_is_not(tmp_path):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "toy", "--out", str(tmp_path)])
