"""FPN for segmentation (Lin et al., 2017; Kirillov et al.'s panoptic head, simplified) on a
fastdet ResNet encoder: C2..C5 through 1x1 laterals, top-down addition, 3x3 smoothing to P2..P5,
each upsampled to the input size and concatenated, then a 3x3 and a 1x1 convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..resnet import resnet
from .unet import pad_to_multiple


class FPNSeg(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int = 1, channels: int = 128):
        super().__init__()
        self.encoder = encoder
        self.lateral = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in encoder.channels])
        self.smooth = nn.ModuleList(
            [nn.Conv2d(channels, channels, 3, padding=1) for _ in encoder.channels]
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(4 * channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 32)  # C5 is at stride 32
        feats = self.encoder(x)
        p = self.lateral[-1](feats[-1])
        pyramid = [self.smooth[-1](p)]
        for lat, smooth, c in zip(self.lateral[-2::-1], self.smooth[-2::-1], feats[-2::-1]):
            p = lat(c) + F.interpolate(p, size=c.shape[-2:], mode="nearest")
            pyramid.append(smooth(p))
        size = x.shape[-2:]
        up = [F.interpolate(q, size=size, mode="bilinear", align_corners=False) for q in pyramid]
        return self.head(self.fuse(torch.cat(up, 1)))[..., :h, :w]


def _fpn(name, in_channels, num_classes, weights, channels):
    return FPNSeg(resnet(name, weights, in_channels), num_classes, channels)


def fpn_resnet18(in_channels=3, num_classes=1, weights=None, channels=128) -> FPNSeg:
    """weights: a local torchvision-format resnet18 state_dict file for the encoder, or None."""
    return _fpn("resnet18", in_channels, num_classes, weights, channels)


def fpn_resnet34(in_channels=3, num_classes=1, weights=None, channels=128) -> FPNSeg:
    return _fpn("resnet34", in_channels, num_classes, weights, channels)


def fpn_resnet50(in_channels=3, num_classes=1, weights=None, channels=128) -> FPNSeg:
    return _fpn("resnet50", in_channels, num_classes, weights, channels)
