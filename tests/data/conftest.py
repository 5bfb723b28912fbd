"""Small synthetic datasets, written once per test session; tests that damage a dataset take a
private copy (`copy_of`)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from fastdet.data.synthetic import synth_dsb2018, synth_mri, synth_rsna

# The MRI volumes' sides are distinct, so a swapped axis cannot go unnoticed.
SIZES = SimpleNamespace(
    RSNA_N=8, RSNA_SIZE=128, DSB_N=4, DSB_SIZE=96, MRI_N=4, MRI_SHAPE=(24, 48, 40)
)


@pytest.fixture(scope="session")
def sizes():
    """The sizes the session's datasets were written with (tests/ has no packages to import)."""
    return SIZES


@pytest.fixture(scope="session")
def rsna_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna") / "data"
    return synth_rsna(root, n=SIZES.RSNA_N, seed=3, size=SIZES.RSNA_SIZE)


@pytest.fixture(scope="session")
def dsb_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsb") / "data"
    return synth_dsb2018(root, n=SIZES.DSB_N, seed=3, size=SIZES.DSB_SIZE)


@pytest.fixture(scope="session")
def mri_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mri") / "data"
    return synth_mri(root, n=SIZES.MRI_N, seed=3, shape=SIZES.MRI_SHAPE)


@pytest.fixture
def copy_of(tmp_path):
    """copy_of(folder) -> a private copy under this test's tmp_path, safe to modify."""

    def copy(folder):
        return shutil.copytree(folder, tmp_path / "copy")

    return copy
