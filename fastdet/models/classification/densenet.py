"""DenseNet-121 (Huang et al., 2017) under torchvision's module names ("features.conv0",
"features.denseblock1.denselayer1.norm1", ..., "classifier"), so a torchvision
`densenet121().state_dict()` loads with strict=True and gives the same logits; the legacy key
names of torchvision's model-zoo files ("norm.1") load too. No memory-efficient checkpointing
(torchvision's `memory_efficient=True`): the concatenations are kept for the backward pass."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import _check
from .weights import load_classifier_weights


class _DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * growth) - BN-ReLU-3x3 conv (growth) on the concatenation of
    every earlier output of its block."""

    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        mid = bn_size * growth
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, growth: int, bn_size: int):
        super().__init__()
        for i in range(layers):
            self[f"denselayer{i + 1}"] = _DenseLayer(cin + i * growth, growth, bn_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm, self.relu = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; `features` is torchvision's
    Sequential (its output before the final ReLU and pooling)."""

    def __init__(
        self,
        growth: int = 32,
        blocks=(6, 12, 24, 16),
        init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
        in_channels: int = 3,
    ):
        _check(num_classes, in_channels)
        super().__init__()
        mods = OrderedDict(
            conv0=nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False),
            norm0=nn.BatchNorm2d(init_features),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(3, 2, 1),
        )
        c = init_features
        for i, n in enumerate(blocks):
            mods[f"denseblock{i + 1}"] = _DenseBlock(n, c, growth, bn_size)
            c += n * growth
            if i != len(blocks) - 1:
                mods[f"transition{i + 1}"] = _Transition(c, c // 2)
                c //= 2
        mods["norm5"] = nn.BatchNorm2d(c)
        self.features = nn.Sequential(mods)
        self.classifier = nn.Linear(c, num_classes)
        self.num_classes, self.in_channels = num_classes, in_channels
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1024] (densenet121): the vector the classifier reads."""
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.features(x)), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def densenet121(num_classes: int = 1000, in_channels: int = 3, weights=None) -> DenseNet:
    """DenseNet-121 (growth 32, blocks 6/12/24/16). weights: a local torchvision-format
    densenet121 state_dict file (or the dict; model-zoo key names accepted); another class
    count keeps a fresh head, another channel count sums the stem's RGB filters (see
    load_classifier_weights). Unlike torchvision, `weights` is never downloaded."""
    model = DenseNet(num_classes=num_classes, in_channels=in_channels)
    if weights is not None:
        load_classifier_weights(model, weights, "features.conv0", "classifier")
    return model
