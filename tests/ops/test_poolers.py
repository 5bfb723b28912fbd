"""MultiScaleRoIAlign (fastdet.ops.poolers) against torchvision.ops.MultiScaleRoIAlign, its repr
and its place in torch.fx traces."""

import numpy as np
import pytest
import torch

from fastdet import ops

tv = pytest.importorskip("torchvision")


def fpn_features(rng, batch=2, channels=4, h=64, w=80, levels=4, dtype=torch.float32):
    feats = {
        str(i): torch.from_numpy(rng.standard_normal((batch, channels, h >> i, w >> i))).to(dtype)
        for i in range(levels)
    }
    feats["pool"] = torch.from_numpy(rng.standard_normal((batch, channels, 2, 3))).to(dtype)
    return feats


def image_boxes(rng, n, size, dtype=torch.float32):
    """[n, 4] boxes of many scales (a few pixels to the whole image) inside `size` (h, w)."""
    h, w = size
    side = np.exp(rng.uniform(np.log(4), np.log(min(h, w)), (n, 2)))
    xy = rng.uniform(0, 1, (n, 2)) * (np.array([w, h]) - side)
    return torch.from_numpy(np.concatenate([xy, xy + side], 1)).to(dtype)


@pytest.mark.parametrize("names", [["0", "1", "2", "3"], ["1", "3"], ["0"]])
@pytest.mark.parametrize("output_size,sampling_ratio", [(7, 2), ((3, 5), -1)])
def test_matches_torchvision(names, output_size, sampling_ratio, rng, device):
    feats = {k: v.to(device) for k, v in fpn_features(rng).items()}
    sizes = [(250, 320), (256, 300)]
    boxes = [image_boxes(rng, 40, s).to(device) for s in sizes]
    got = ops.MultiScaleRoIAlign(names, output_size, sampling_ratio)(feats, boxes, sizes)
    want = tv.ops.MultiScaleRoIAlign(names, output_size, sampling_ratio)(feats, boxes, sizes)
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_scales_follow_each_call(rng):
    # torchvision keeps the first call's scales; fastdet infers them per call
    feats = fpn_features(rng, batch=1)
    boxes = [image_boxes(rng, 10, (250, 320))]
    pool = ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    pool(feats, boxes, [(125, 160)])
    fresh = ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    assert torch.equal(pool(feats, boxes, [(250, 320)]), fresh(feats, boxes, [(250, 320)]))
    want = tv.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(feats, boxes, [(250, 320)])
    torch.testing.assert_close(fresh(feats, boxes, [(250, 320)]), want, rtol=1e-5, atol=1e-5)


def test_no_boxes_and_errors(rng):
    feats = fpn_features(rng)
    pool = ops.MultiScaleRoIAlign(["0", "1"], 7, 2)
    out = pool(feats, [torch.zeros(0, 4), torch.zeros(0, 4)], [(64, 80), (64, 80)])
    assert out.shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match="featmap_names"):
        ops.MultiScaleRoIAlign(["p9"], 7, 2)(feats, [torch.zeros(1, 4)], [(64, 80)])
    with pytest.raises(ValueError, match="image_sizes"):
        pool(feats, [torch.zeros(1, 4)], [])


def test_repr_is_torchvisions():
    got = repr(ops.poolers.MultiScaleRoIAlign(["0"], (7, 7), 2))
    assert got == repr(tv.ops.poolers.MultiScaleRoIAlign(["0"], (7, 7), 2))
    assert got == "MultiScaleRoIAlign(featmap_names=['0'], output_size=(7, 7), sampling_ratio=2)"


def test_models_use_the_ops_pooler():
    from fastdet.models import detection

    assert detection.MultiScaleRoIAlign is ops.MultiScaleRoIAlign


class _Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = ops.MultiScaleRoIAlign(["0", "1"], 3, 2)
        self.fc = torch.nn.Linear(4 * 9, 2)

    def forward(self, feats, boxes, sizes):
        return self.fc(self.pool(feats, boxes, sizes).flatten(1))


def test_torch_fx_traces_through_a_model_using_it(rng):
    from torchvision.models.feature_extraction import get_graph_node_names

    head = _Head()
    traced = torch.fx.symbolic_trace(head)
    feats = fpn_features(rng)
    boxes = [image_boxes(rng, 5, (64, 80)), image_boxes(rng, 3, (64, 80))]
    sizes = [(64, 80), (64, 80)]
    assert torch.equal(traced(feats, boxes, sizes), head(feats, boxes, sizes))
    train, evaluation = get_graph_node_names(head)
    assert train == evaluation and "fc" in train


# --- found by tests/ops/test_fuzz.py ----------------------------------------------------------


@pytest.mark.parametrize(
    "kw,error",
    [
        ({"sampling_ratio": float("-inf")}, TypeError),
        ({"sampling_ratio": 2**31}, ValueError),
        ({"sampling_ratio": None}, TypeError),
        ({"output_size": None}, TypeError),
        ({"output_size": (7,)}, ValueError),
        ({"output_size": 0}, ValueError),
    ],  # fmt: skip
)
def test_bad_arguments_raise_naming_them_even_without_boxes(kw, error, rng):
    # were accepted when a batch had no boxes (and output_size=None: "'NoneType' object is not
    # iterable")
    name = next(iter(kw))
    args = {"output_size": 7, "sampling_ratio": 2, **kw}
    with pytest.raises(error, match=name):
        pool = ops.MultiScaleRoIAlign(["0", "1"], **args)
        pool(fpn_features(rng), [torch.zeros(0, 4)], [(64, 80)])


def test_boxes_of_the_wrong_shape_raise_naming_them(rng):
    pool = ops.MultiScaleRoIAlign(["0", "1"], 7, 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] must have shape \[Ni, 4\], got \(2, 5\)"):
        pool(fpn_features(rng), [torch.zeros(1, 4), torch.zeros(2, 5)], [(64, 80)] * 2)
    with pytest.raises(ValueError, match=r"boxes\[0\] must have shape \[Ni, 4\], got \(4,\)"):
        pool(fpn_features(rng), [torch.zeros(4)], [(64, 80)])
