"""Shared fixtures: a fresh random generator per test (seed reported on failure), box makers,
and the `gpu` marker (declared in pyproject.toml), skipped where CUDA is unavailable.

Reproduce a failure with the seed it reports: FASTDET_TEST_SEED=<seed> pytest <test id>.
"""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest
import torch

import fastdet

IMAGE = 1000.0  # side of the square image the random boxes live in, in pixels


# glibc's malloc returns large blocks to the kernel on free and faults them in again on the next
# step: in the training tests a sixth of the CPU time went to the kernel. Workers (and the
# processes tests start) that keep freed memory spent 40% less of it there (2026-12-08).
MALLOC_KEEP = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def pytest_configure(config):
    """Under pytest-xdist each worker gets its share of the cores (torch's and fastdet's
    threads), so N workers do not run N x cores threads on the machine. The controller, which
    starts the workers, sets MALLOC_KEEP for them (glibc reads it at process start)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        for name, value in MALLOC_KEEP.items():
            os.environ.setdefault(name, value)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        fastdet.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # pytest-xdist (-n, --dist loadgroup: the README's command): a module's tests run on one worker,
    # so its module-scoped fixtures (trained runs) are built once; a test marked
    # xdist_group(name) runs with its group instead (a learning test's seeds, side by side)
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    # the long tests first: the workers then end together instead of waiting on a learning run
    # started last (pyproject's --no-loadscope-reorder keeps this order)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    seed = getattr(item, "_rng_seed", None)
    if seed is not None and report.failed:
        report.sections.append(
            (
                "random seed",
                f"{item.nodeid} ran with seed {seed}; rerun with FASTDET_TEST_SEED={seed}",
            )
        )


@pytest.fixture
def rng(request):
    """A numpy Generator seeded fresh per test from os.urandom (or FASTDET_TEST_SEED)."""
    env = os.environ.get("FASTDET_TEST_SEED")
    seed = int(env) if env else int.from_bytes(os.urandom(8), "little")
    request.node._rng_seed = seed
    print(f"{request.node.nodeid}: seed {seed}")
    return np.random.default_rng(seed)


def uniform_boxes(rng, n, dtype=np.float32, image=IMAGE, lo=4.0, hi=125.0):
    """[n, 4] boxes with top-left corners uniform in the image and sides uniform in [lo, hi]."""
    xy = rng.uniform(0, image, (n, 2))
    wh = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(dtype)


def clustered_boxes(rng, n, dtype=np.float32, image=IMAGE, clusters=20):
    """RPN-like [n, 4] boxes: jittered copies of a few objects, so most boxes overlap heavily."""
    centres = rng.uniform(0.1 * image, 0.9 * image, (clusters, 2))
    sizes = rng.uniform(16, 200, (clusters, 2))
    which = rng.integers(0, clusters, n)
    c = centres[which] + rng.normal(0, 0.1, (n, 2)) * sizes[which]
    s = sizes[which] * rng.uniform(0.7, 1.3, (n, 2))
    return np.concatenate([c - s / 2, c + s / 2], 1).astype(dtype)


def unique_scores(rng, n, dtype=np.float32):
    """[n] distinct scores in (0, 1]: a permutation of k / 2^b with 2^b > n, exact in float32
    for any n, in float16 for n < 2048 and in bfloat16 for n < 256, so no two scores tie."""
    step = 2.0 ** max(1, int(np.ceil(np.log2(n + 1))))
    return ((rng.permutation(n) + 1) / step).astype(dtype)


class Maker:
    """Random inputs drawn from the test's `rng`."""

    def __init__(self, rng):
        self.rng = rng

    def boxes(self, n, dtype=np.float32, **kw):
        return uniform_boxes(self.rng, n, dtype, **kw)

    def clustered(self, n, dtype=np.float32, **kw):
        return clustered_boxes(self.rng, n, dtype, **kw)

    def scores(self, n, dtype=np.float32):
        return unique_scores(self.rng, n, dtype)

    def classes(self, n, k=5):
        return self.rng.integers(0, k, n).astype(np.int64)


@pytest.fixture
def make(rng):
    """Box makers bound to this test's rng: make.boxes(n), make.clustered(n), make.scores(n)."""
    return Maker(rng)


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory):
    """mktemp for a module's shared fixtures: the folders go when the module's tests end, unless
    a test failed meanwhile (kept to look at, as pyproject's tmp_path_retention_policy keeps a
    failed test's tmp_path). Trained runs weigh hundreds of MB: kept to the session's end, they
    would hold gigabytes of disk."""
    made = []
    failed = request.session.testsfailed

    def mktemp(name):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tv():
    """torchvision (in the test extras); tests that compare with it skip where it is missing."""
    return pytest.importorskip("torchvision")


@pytest.fixture
def concurrently():
    """run_concurrently, for the tests that check the kernels under several Python threads."""
    return run_concurrently


def run_concurrently(fn, inputs, threads=4, repeats=3):
    """fn(*inputs[i]) for every i from `threads` threads started together (each input `repeats`
    times): the results, to compare with sequential calls (the kernels release the GIL)."""
    got = [None] * len(inputs)
    barrier = threading.Barrier(threads)

    def work(k):
        barrier.wait()
        for i in range(k, len(inputs), threads):
            for _ in range(repeats):
                got[i] = fn(*inputs[i])

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return got
