"""ResNet classifiers (He et al., 2016): fastdet's ResNet encoder (models.resnet) with global
average pooling and a linear head, under torchvision's module names, so a torchvision
`resnetXX().state_dict()` loads with strict=True and gives the same logits."""

from __future__ import annotations

import torch
from torch import nn

from ..resnet import BasicBlock, Bottleneck, ResNet
from .weights import load_classifier_weights

SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNetClassifier(ResNet):
    """[B, in_channels, H, W] -> logits [B, num_classes] (any H, W >= 32). `features(x)` gives
    the pooled [B, 512 * expansion] vector before the head."""

    def __init__(self, block, layers, num_classes: int = 1000, in_channels: int = 3):
        _check(num_classes, in_channels)
        super().__init__(block, layers, in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.num_classes, self.in_channels = num_classes, in_channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(super().forward(x)[-1]), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _check(num_classes, in_channels) -> None:
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def _resnet(name, num_classes, in_channels, weights) -> ResNetClassifier:
    model = ResNetClassifier(*SPECS[name], num_classes=num_classes, in_channels=in_channels)
    if weights is not None:
        load_classifier_weights(model, weights, "conv1", "fc")
    return model


def resnet18(num_classes: int = 1000, in_channels: int = 3, weights=None) -> ResNetClassifier:
    """ResNet-18. weights: a local torchvision-format resnet18 state_dict file (or the dict);
    another class count keeps a fresh head, another channel count sums the stem's RGB filters
    (see load_classifier_weights). Unlike torchvision, `weights` is never downloaded."""
    return _resnet("resnet18", num_classes, in_channels, weights)


def resnet34(num_classes: int = 1000, in_channels: int = 3, weights=None) -> ResNetClassifier:
    """ResNet-34; arguments as resnet18."""
    return _resnet("resnet34", num_classes, in_channels, weights)


def resnet50(num_classes: int = 1000, in_channels: int = 3, weights=None) -> ResNetClassifier:
    """ResNet-50 (v1.5: stride on the 3x3 convolutions, as torchvision); arguments as resnet18."""
    return _resnet("resnet50", num_classes, in_channels, weights)


def resnet101(num_classes: int = 1000, in_channels: int = 3, weights=None) -> ResNetClassifier:
    """ResNet-101 (v1.5); arguments as resnet18."""
    return _resnet("resnet101", num_classes, in_channels, weights)
