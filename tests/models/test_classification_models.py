"""Classifiers (fastdet.models.classification) against torchvision's with the same random
weights (torchvision is a test peer only): identical state_dict keys, strict loading, identical
eval-mode logits; weight files, grey stems, other class counts and DenseNet's legacy keys."""

import pytest
import torch

from fastdet.models import classification as C

tvm = pytest.importorskip("torchvision.models")

NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "densenet121")


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight and BatchNorm statistic drawn at random (so a misplaced tensor shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            elif isinstance(m, torch.nn.Linear):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    """(name, torchvision model, fastdet model) with torchvision's random weights loaded."""
    name = request.param
    torch.manual_seed(0)
    theirs = randomized(getattr(tvm, name)(weights=None, num_classes=5), 1)
    ours = C.classifier(name, num_classes=5).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return name, theirs, ours


def test_state_dict_keys_and_shapes_are_torchvisions(pair):
    _, theirs, ours = pair
    a, b = theirs.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_same_logits_in_eval_mode(pair, rng):
    _, theirs, ours = pair
    x = torch.from_numpy(rng.standard_normal((2, 3, 40, 48)).astype("float32"))
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_weight_file_grey_stem_and_new_head(tmp_path, rng):
    """A torchvision file: same logits at 1000 classes; with in_channels=1 the summed stem on a
    grey image gives the RGB model's response to that image repeated over 3 channels; another
    class count keeps everything but a fresh head."""
    theirs = randomized(tvm.resnet18(weights=None), 2)
    path = tmp_path / "resnet18.pth"
    torch.save(theirs.state_dict(), path)
    grey = torch.from_numpy(rng.standard_normal((2, 1, 48, 48)).astype("float32"))
    rgb = grey.repeat(1, 3, 1, 1)
    with torch.no_grad():
        expected = theirs(rgb)
        torch.testing.assert_close(C.resnet18(weights=path).eval()(rgb), expected)
        one = C.resnet18(in_channels=1, weights=path).eval()
        assert one.conv1.weight.shape == (64, 1, 7, 7)
        torch.testing.assert_close(one(grey), expected, rtol=1e-4, atol=1e-4)
        two = C.resnet18(in_channels=2, weights=path).eval()  # sum / 2 on each channel
        torch.testing.assert_close(two(grey.repeat(1, 2, 1, 1)), expected, rtol=1e-4, atol=1e-4)
        three = C.resnet18(num_classes=3, weights=path).eval()
        assert three.fc.weight.shape == (3, 512)
        torch.testing.assert_close(three.features(rgb), torch.flatten(_pooled(theirs, rgb), 1))
        # a wrapped file ({"state_dict": ...}) loads too
        torch.save({"state_dict": theirs.state_dict()}, tmp_path / "wrapped.pth")
        wrapped = C.resnet18(weights=tmp_path / "wrapped.pth").eval()
        torch.testing.assert_close(wrapped(rgb), expected)


def _pooled(tv_resnet, x):
    m = tv_resnet
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.avgpool(m.layer4(m.layer3(m.layer2(m.layer1(x)))))


def test_densenet_model_zoo_keys_and_grey_stem(tmp_path, rng):
    """torchvision's model-zoo DenseNet files name the dense layers' modules "norm.1", ...;
    they load (torchvision remaps them too), and a grey stem sums conv0's filters."""
    theirs = randomized(tvm.densenet121(weights=None, num_classes=4), 3)
    legacy = {}
    for k, v in theirs.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # absent from the model zoo's files (written before torch 0.4.1)
        if ".denselayer" in k:
            for old in ("norm1", "norm2", "conv1", "conv2"):
                k = k.replace(f".{old}.", f".{old[:-1]}.{old[-1]}.")
        legacy[k] = v
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save(legacy, tmp_path / "densenet121.pth")
    x = torch.from_numpy(rng.standard_normal((1, 1, 64, 64)).astype("float32"))
    with torch.no_grad():
        ours = C.densenet121(num_classes=4, in_channels=1, weights=tmp_path / "densenet121.pth")
        torch.testing.assert_close(
            ours.eval()(x), theirs(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4
        )


def test_bad_weights_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        C.resnet18(weights=tmp_path / "absent.pth")
    torch.save(tvm.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="not a state_dict for ResNetClassifier.*missing"):
        C.resnet50(weights=tmp_path / "r18.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a state_dict"):
        C.resnet18(weights=tmp_path / "list.pth")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        C.resnet18(num_classes=0)
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1"):
        C.densenet121(in_channels=0)
    with pytest.raises(ValueError, match="name must be one of"):
        C.classifier("vgg16")


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_trains_at_odd_sizes_and_grads_reach_the_stem(name):
    m = C.classifier(name, num_classes=3, in_channels=1)
    out = m(torch.randn(2, 1, 45, 71))
    assert out.shape == (2, 3)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
    stem = m.conv1 if name == "resnet18" else m.features.conv0
    assert stem.weight.grad.abs().sum() > 0
