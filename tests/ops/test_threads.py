"""Every public op called from 8 Python threads at once (the kernels release the GIL) gives
bit-for-bit the results of sequential calls, on fresh random inputs, torch and numpy."""

from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from fastdet import ops

THREADS = 8


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return False


def _check(concurrently, fn, inputs):
    """fn over inputs from THREADS threads equals fn over them in turn; a thread's exception is
    kept as its result, so it shows in the failure instead of vanishing with the thread."""

    want = [fn(*args) for args in inputs]
    got = concurrently(lambda *a: _guard(fn, *a), inputs, threads=THREADS)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if not _same(g, w)]
    assert not bad, f"{len(bad)} of {len(inputs)} differ; first: {got[bad[0]]!r:.300}"


def _as(kind, *xs):
    return tuple(torch.from_numpy(x) if kind == "torch" else x for x in xs)


KINDS = ["torch", "numpy"]


def _sizes(rng, k=24, lo=0, hi=400):
    return [int(n) for n in rng.integers(lo, hi, k)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", ["box_iou", "generalized_box_iou"])
def test_pairwise(make, rng, concurrently, kind, op):
    inputs = [
        _as(kind, make.clustered(n, np.float64), make.boxes(m))
        for n, m in zip(_sizes(rng), _sizes(rng))
    ]
    _check(concurrently, getattr(ops, op), inputs)


@pytest.mark.parametrize("kind", KINDS)
def test_box_area_clip_remove_small(make, rng, concurrently, kind):
    inputs = [_as(kind, make.boxes(n, lo=-20, hi=80)) for n in _sizes(rng, hi=5000)]
    _check(concurrently, ops.box_area, inputs)
    _check(concurrently, lambda b: ops.clip_boxes_to_image(b, (700, 900)), inputs)
    _check(concurrently, lambda b: ops.remove_small_boxes(b, 10.0), inputs)


@pytest.mark.parametrize("kind", KINDS)
def test_nms_family(make, rng, concurrently, kind):
    sizes = _sizes(rng, hi=3000)
    inputs = [_as(kind, make.clustered(n), make.scores(n), make.classes(n)) for n in sizes]
    _check(concurrently, lambda b, s, c: ops.nms(b, s, 0.5), inputs)
    _check(concurrently, lambda b, s, c: ops.batched_nms(b, s, c, 0.5), inputs)
    small = inputs[: len(inputs) // 2]
    _check(concurrently, lambda b, s, c: ops.soft_nms(b, s, method="gaussian"), small)
    _check(concurrently, lambda b, s, c: ops.soft_nms(b, s, 0.3, method="linear"), small)


@pytest.mark.parametrize("kind", KINDS)
def test_roi_align(rng, concurrently, kind):
    inputs = []
    for _ in range(16):
        n, c, h, w = 2, int(rng.integers(1, 24)), int(rng.integers(4, 40)), int(rng.integers(4, 40))
        k = int(rng.integers(0, 60))
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        xy = rng.uniform(-4, 4 * max(h, w), (k, 2))
        rois = np.concatenate(
            [rng.integers(0, n, (k, 1)), xy, xy + rng.uniform(0, 3 * max(h, w), (k, 2))], 1
        ).astype(np.float32)
        inputs.append(_as(kind, x, rois))
    _check(concurrently, lambda x, r: ops.roi_align(x, r, 7, 0.25, -1, True), inputs)
    _check(concurrently, lambda x, r: ops.roi_align(x, r, (3, 5), 0.5, 2, False), inputs)


def test_roi_align_backward(rng, concurrently):
    inputs = []
    for _ in range(12):
        x = torch.from_numpy(rng.standard_normal((2, 8, 20, 24)))
        xy = rng.uniform(-4, 80, (30, 2))
        rois = np.concatenate(
            [rng.integers(0, 2, (30, 1)), xy, xy + rng.uniform(0, 60, (30, 2))], 1
        )
        inputs.append((x, torch.from_numpy(rois)))

    def grad(x, r):
        x = x.clone().requires_grad_(True)
        ops.roi_align(x, r, 5, 0.25, 2, True).sum().backward()
        return x.grad

    _check(concurrently, grad, inputs)


@pytest.mark.parametrize("kind", KINDS)
def test_box_coder(make, rng, concurrently, kind):
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
    inputs = []
    for n in _sizes(rng, hi=4000):
        gt, p = make.boxes(n), make.boxes(n)
        codes = rng.normal(0, 1, (n, 8)).astype(np.float32)
        inputs.append(_as(kind, gt, p, codes))
    _check(concurrently, lambda g, p, c: coder.encode_single(g, p), inputs)
    _check(concurrently, lambda g, p, c: coder.decode_single(c, p), inputs)


class _Images:
    def __init__(self, tensors):
        self.tensors = tensors


@pytest.fixture
def fast_switching():
    """Python threads switch every microsecond, so races between bytecodes show up."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_anchor_generator_shared_across_threads(rng, concurrently, fast_switching):
    """One generator (one cache, smaller than the number of distinct shapes, so threads evict
    each other's entries between a lookup and its move_to_end) serving every thread."""
    gen = ops.AnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2, cache_size=1)
    fresh = ops.AnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2, cache_size=0)
    shapes = [tuple(int(v) for v in rng.integers(16, 64, 2)) for _ in range(3)]
    inputs = []
    for i in range(64):
        h, w = shapes[i % 3]
        dtype = (torch.float32, torch.float64)[i % 2]
        feats = [torch.zeros(1, 1, h // s, w // s, dtype=dtype) for s in (4, 8)]
        inputs.append((_Images(torch.zeros(1, 3, h, w)), feats))
    want = [fresh(*args)[0] for args in inputs]
    first = lambda *a: gen(*a)[0]  # noqa: E731
    got = concurrently(lambda *a: _guard(first, *a), inputs, threads=THREADS, repeats=40)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if not _same(g, w)]
    assert not bad, f"{len(bad)} of {len(inputs)} differ; first: {got[bad[0]]!r:.300}"


def test_cell_anchors(rng, concurrently):
    inputs = [
        (tuple(rng.uniform(8, 512, 3).round()), tuple(rng.uniform(0.25, 4, 3))) for _ in range(24)
    ]
    _check(concurrently, ops.cell_anchors, inputs)


def _guard(fn, *args):
    """fn(*args), or the exception it raised: a thread's error becomes its result, so it shows
    in the assertion instead of vanishing with the thread."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - shown by the caller's assertion
        return e


class _EvictingCache(OrderedDict):
    """A cache whose entries another thread evicts right after each lookup (the interleaving
    that a race between get and move_to_end, or two evictions, needs), made deterministic."""

    def get(self, key, default=None):
        hit = super().get(key, default)
        self.clear()
        return hit

    def __len__(self):
        n = super().__len__()
        self.clear()  # the other thread empties the cache between len() and popitem()
        return n


def test_anchor_cache_survives_concurrent_eviction():
    gen = ops.AnchorGenerator(((32,),), ((1.0,),), cache_size=0)
    images, feats = _Images(torch.zeros(1, 3, 64, 64)), [torch.zeros(1, 1, 8, 8)]
    want = gen(images, feats)[0]
    gen._cache = _EvictingCache()
    gen._cache_size = 0
    key = ((8, 8),), ((8, 8),), torch.float32, "cpu"
    OrderedDict.__setitem__(gen._cache, key, (want, want._version))
    assert torch.equal(gen(images, feats)[0], want)  # hit, evicted before move_to_end
    assert torch.equal(gen(images, feats)[0], want)  # miss, emptied before popitem
