"""`--workers auto`: the loader's processes from the cores, shared by torchrun's local
processes; a count stays a count and a bad value is refused when the config is made."""

import pytest

from fastdet.cli import build_parser
from fastdet.engine.sampling import default_workers, workers_of
from fastdet.engine.tasks.seg.task import SegConfig


def test_auto_resolves_from_the_cores_and_the_local_processes(monkeypatch):
    config = SegConfig(model="unet", num_workers="auto")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    alone = workers_of(config)
    assert alone == default_workers(1) and 1 <= alone <= 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert workers_of(config) == 1  # never fewer than one
    assert workers_of(SegConfig(model="unet", num_workers=3)) == 3
    assert SegConfig.from_dict(config.to_dict()).num_workers == "auto"  # saved as said
    with pytest.raises(ValueError, match="num_workers"):
        SegConfig(model="unet", num_workers=-1)


def test_the_flag_takes_auto_or_a_count():
    parse = build_parser().parse_args
    base = ["train", "seg", "--out", "x", "--workers"]
    assert parse([*base, "auto"]).num_workers == "auto"
    assert parse([*base, "2"]).num_workers == 2
