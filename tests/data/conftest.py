"""Small synthetic datasets, written once per test session; tests that damage a dataset take a
private copy (`copy_of`)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from fastdet.data.synthetic import synth_dsb2018, synth_mri, synth_rsna

RSNA_N, RSNA_SIZE = 8, 128
DSB_N, DSB_SIZE = 4, 96
MRI_N, MRI_SHAPE = 4, (24, 48, 40)  # distinct sides, so a swapped axis cannot go unnoticed


@pytest.fixture(scope="session")
def sizes():
    """The sizes the session's datasets were written with (tests/ has no packages to import)."""
    return SimpleNamespace(
        RSNA_N=RSNA_N,
        RSNA_SIZE=RSNA_SIZE,
        DSB_N=DSB_N,
        DSB_SIZE=DSB_SIZE,
        MRI_N=MRI_N,
        MRI_SHAPE=MRI_SHAPE,
    )


@pytest.fixture(scope="session")
def rsna_dir(tmp_path_factory):
    return synth_rsna(tmp_path_factory.mktemp("rsna") / "data", n=RSNA_N, seed=3, size=RSNA_SIZE)


@pytest.fixture(scope="session")
def dsb_dir(tmp_path_factory):
    return synth_dsb2018(tmp_path_factory.mktemp("dsb") / "data", n=DSB_N, seed=3, size=DSB_SIZE)


@pytest.fixture(scope="session")
def mri_dir(tmp_path_factory):
    return synth_mri(tmp_path_factory.mktemp("mri") / "data", n=MRI_N, seed=3, shape=MRI_SHAPE)


@pytest.fixture
def copy_of(tmp_path):
    """copy_of(folder) -> a private copy under this test's tmp_path, safe to modify."""

    def copy(folder):
        return shutil.copytree(folder, tmp_path / "copy")

    return copy
