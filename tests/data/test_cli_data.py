"""`fastdet data synth` writes the real layouts through the command line."""

import subprocess
import sys

import pytest

from fastdet.cli import main
from fastdet.data import DSB2018Dataset, MRISliceDataset, RSNADataset


def synth(*args):
    return subprocess.run(
        [sys.executable, "-m", "fastdet.cli", "data", "synth", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "kind,dataset", [("rsna", RSNADataset), ("dsb2018", DSB2018Dataset), ("mri", MRISliceDataset)]
)
def test_synth_command_writes_a_loadable_dataset(tmp_path, kind, dataset):
    r = synth(kind, tmp_path / kind, "--n", 2, "--seed", 3)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"wrote a synthetic {kind} dataset to" in r.stdout
    ds = dataset(tmp_path / kind)
    assert len(ds) >= 2 and ds[0]["image"].ndim == 3


def test_synth_command_rejects_bad_n(tmp_path):
    r = synth("dsb2018", tmp_path / "x", "--n", 0)
    assert r.returncode == 2 and "--n must be >= 1, got 0" in r.stderr


@pytest.mark.parametrize(
    "kind,dataset,side", [("rsna", RSNADataset, 96), ("dsb2018", DSB2018Dataset, 48)]
)
def test_synth_size_sets_the_image_side(tmp_path, kind, dataset, side):
    assert main(["data", "synth", kind, str(tmp_path / kind), "--n", "2", "--size", str(side)]) == 0
    assert tuple(dataset(tmp_path / kind)[0]["image"].shape[-2:]) == (side, side)


def test_synth_size_sets_the_mri_in_plane_side(tmp_path):
    assert main(["data", "synth", "mri", str(tmp_path / "m"), "--n", "1", "--size", "40"]) == 0
    ds = MRISliceDataset(tmp_path / "m")
    assert tuple(ds[0]["image"].shape[-2:]) == (40, 40)
    assert main(["data", "synth", "mri", str(tmp_path / "x"), "--size", "16"]) == 2
