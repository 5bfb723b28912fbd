"""suppress_contained against its slow reference: random, nested, equal, touching and empty
boxes; CPU and CUDA; torch, numpy; torch.compile."""

import numpy as np
import pytest
import torch

from fastdet import ops
from fastdet.bench import cases_for
from fastdet.ops import _reference as reference

DTYPES = [np.float32, np.float64]


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def nested(rng, n, dtype):
    """n boxes, most nested in or overlapping a few large ones, in 3 classes."""
    big = rng.uniform(0, 400, (4, 2))
    big = np.concatenate([big, big + rng.uniform(50, 200, (4, 2))], 1)
    parent = big[rng.integers(0, 4, n)]
    lo = parent[:, :2] + rng.uniform(-20, 60, (n, 2))
    hi = lo + rng.uniform(1, 120, (n, 2))
    boxes = np.concatenate([lo, hi], 1).astype(dtype)
    return boxes, rng.random(n).astype(dtype), rng.integers(0, 3, n)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 63, 64, 65, 700])
def test_matches_the_reference_on_nested_boxes(device, n, dtype, fraction):
    rng = np.random.default_rng(n)
    b, s, c = nested(rng, n, dtype)
    want = reference.suppress_contained(b, s, c, fraction)
    got = ops.suppress_contained(t(b).to(device), t(s).to(device), t(c).to(device), fraction)
    assert got.dtype == torch.int64 and got.device.type == device
    assert np.array_equal(got.cpu().numpy(), want)
    assert np.array_equal(ops.suppress_contained(b, s, c, fraction), want)  # numpy in and out


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_boxes_and_tied_scores_match_the_reference(device, dtype, make):
    b, s = make.boxes(500, dtype), np.round(make.scores(500, dtype), 1)  # many ties
    c = np.arange(500) % 2
    want = reference.suppress_contained(b, s, c, 0.6)
    got = ops.suppress_contained(t(b).to(device), t(s).to(device), t(c).to(device), 0.6)
    assert np.array_equal(got.cpu().numpy(), want)


def test_constructed_cases():
    big, inner, half = [0, 0, 100, 100], [10, 10, 30, 30], [50, 0, 150, 100]
    s = torch.tensor([0.9, 0.8, 0.7])
    b = torch.tensor([big, inner, half], dtype=torch.float32)
    # inner lies wholly inside big; half has 50% of its area inside
    assert ops.suppress_contained(b, s, None, 0.5).tolist() == [0, 2]  # 50% is not "more than"
    assert ops.suppress_contained(b, s, None, 0.49).tolist() == [0]
    assert ops.suppress_contained(b, s, None, 1.0).tolist() == [0, 1, 2]
    # a nested box that scores higher is kept, and the larger box is judged by its own area
    assert ops.suppress_contained(b, torch.tensor([0.1, 0.9, 0.5]), None, 0.5).tolist() == [1, 2, 0]
    # other classes never suppress each other
    assert ops.suppress_contained(b, s, torch.tensor([0, 1, 0]), 0.3).tolist() == [0, 1]


def test_equal_touching_degenerate_and_empty_boxes():
    equal = torch.tensor([[0, 0, 10, 10]] * 3, dtype=torch.float64)
    assert ops.suppress_contained(equal, torch.tensor([0.5, 0.5, 0.5]), None, 0.9).tolist() == [0]
    touching = torch.tensor([[0, 0, 10, 10], [10, 0, 20, 10]], dtype=torch.float32)
    assert ops.suppress_contained(touching, torch.tensor([0.9, 0.8]), None, 0.0).tolist() == [0, 1]
    # a zero-area box inside a big one is kept, and covers nothing
    flat = torch.tensor([[0, 0, 100, 100], [5, 5, 5, 50], [4, 4, 6, 6]], dtype=torch.float32)
    assert ops.suppress_contained(flat, torch.tensor([0.9, 0.8, 0.7]), None, 0.5).tolist() == [0, 1]
    assert ops.suppress_contained(flat[1:], torch.tensor([0.9, 0.8]), None, 0.0).tolist() == [0, 1]
    empty = ops.suppress_contained(torch.zeros(0, 4), torch.zeros(0), None, 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    assert ops.suppress_contained(np.zeros((0, 4)), np.zeros(0), None, 0.5).shape == (0,)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_bad_fraction_and_idxs_raise(fraction):
    b, s = torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0])
    with pytest.raises(ValueError, match="fraction"):
        ops.suppress_contained(b, s, None, fraction)
    with pytest.raises(TypeError, match="idxs"):
        ops.suppress_contained(b, s, torch.tensor([0.5]), 0.5)
    with pytest.raises(ValueError, match="finite|NaN"):
        ops.suppress_contained(b, torch.tensor([float("nan")]), None, 0.5)


def test_compiles_into_one_graph(make):
    b, s = t(make.boxes(200)), t(make.scores(200))
    c = torch.arange(200) % 3

    def f(b, s, c):
        return ops.suppress_contained(b * 1.0, s, c, 0.5)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    assert torch.equal(compiled(b, s, c), ops.suppress_contained(b, s, c, 0.5))


def test_bench_cases_are_in_the_suite_and_agree_with_their_peer():
    full = cases_for("cpu", full=True, only="suppress_contained")
    assert [c.name for c in full] == ["suppress_contained_300_3cls", "suppress_contained_2000_3cls"]
    assert [c.name for c in cases_for("cpu", only="suppress_contained")] == [full[0].name]
    for case in full:
        sets, impls = case.make("cpu")
        assert torch.equal(impls["fastdet"](sets[0]), impls["torch (matrix)"](sets[0]))
