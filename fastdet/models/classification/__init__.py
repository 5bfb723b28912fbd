"""Image classifiers with torchvision's state_dict keys: resnet18/34/50/101 and densenet121.
Each takes num_classes, in_channels (1 = grey: loaded RGB stem filters are summed) and
weights (a local torchvision-format file or state_dict; never downloaded); forward gives
logits [B, num_classes]. MODELS maps each name to its builder; `classifier(name, ...)` builds
one by name."""

from .densenet import DenseNet, densenet121
from .resnet import ResNetClassifier, resnet18, resnet34, resnet50, resnet101
from .weights import load_classifier_weights, read_state_dict

MODELS = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "densenet121": densenet121,
}


def classifier(name: str, num_classes: int = 1000, in_channels: int = 3, weights=None):
    """The classifier called `name` (one of MODELS)."""
    if name not in MODELS:
        raise ValueError(f"name must be one of {tuple(MODELS)}, got {name!r}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, weights=weights)


__all__ = [
    "MODELS",
    "classifier",
    "DenseNet",
    "ResNetClassifier",
    "densenet121",
    "load_classifier_weights",
    "read_state_dict",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
]
