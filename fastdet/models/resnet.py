"""ResNet encoders (He et al., 2016) written in fastdet, with torchvision's module names, so a
torchvision-format state_dict file loads as it is. Nothing is downloaded: weights come from a
local file the user names. forward returns the stage outputs C2..C5 (strides 4, 8, 16, 32)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def _conv3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = _conv3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3(width, width), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + skip)


class Bottleneck(nn.Module):
    expansion = 4  # stride on the 3x3 convolution, as torchvision (ResNet v1.5)

    def __init__(self, cin, width, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + skip)


class ResNet(nn.Module):
    """Stem (7x7/2 convolution, max pool) and four stages; `channels` lists C2..C5's widths."""

    def __init__(self, block, layers, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._cin = 64
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], 2)
        self.channels = [w * block.expansion for w in (64, 128, 256, 512)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, block, width, blocks, stride):
        down = None
        if stride != 1 or self._cin != width * block.expansion:
            down = nn.Sequential(
                nn.Conv2d(self._cin, width * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(width * block.expansion),
            )
        mods = [block(self._cin, width, stride, down)]
        self._cin = width * block.expansion
        mods += [block(self._cin, width) for _ in range(blocks - 1)]
        return nn.Sequential(*mods)

    def forward(self, x) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4, self.layer4(c4)]


def load_state_dict_file(model: nn.Module, path, ignore_prefixes=("fc.",)) -> nn.Module:
    """Loads a local torchvision-format state_dict (a .pth of tensors) into model. Keys under
    ignore_prefixes (the classifier) are dropped; any other missing or unexpected key is an
    error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist (fastdet never downloads weights)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore_prefixes))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a state_dict for this model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    return model


_SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def resnet(name: str, weights=None, in_channels: int = 3) -> ResNet:
    """resnet18 / resnet34 / resnet50 / resnet101 encoder; weights: a local torchvision-format
    state_dict file. With in_channels != 3 and weights, each input channel gets the RGB filters'
    sum / in_channels, so a grey image fed to every channel gives the pretrained response to that
    image in RGB."""
    if name not in _SPECS:
        raise ValueError(f"unknown encoder {name!r}; expected one of {sorted(_SPECS)}")
    model = ResNet(*_SPECS[name], in_channels=3 if weights else in_channels)
    if weights:
        load_state_dict_file(model, weights)
        if in_channels != 3:
            w = model.conv1.weight.detach().sum(1, keepdim=True) / in_channels
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            model.conv1.weight.data.copy_(w.repeat(1, in_channels, 1, 1))
    return model
