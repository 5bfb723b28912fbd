"""FPN for segmentation (Lin et al., 2017; Kirillov et al.'s panoptic head, simplified) on a
fastdet ResNet encoder: C2..C5 through 1x1 laterals, top-down addition, 3x3 smoothing to P2..P5,
each upsampled to the input size and concatenated, then a 3x3 and a 1x1 convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fpn import FeaturePyramidNetwork
from ..resnet import resnet
from .unet import pad_to_multiple


class FPNSeg(nn.Module):
    """encoder: returns C2..C5 (finest first) and lists their widths in `.channels`. forward:
    [B, C, H, W] -> logits [B, num_classes, H, W], any H, W (padded to a multiple of 32 inside).

    The pyramid is the shared FeaturePyramidNetwork (`fpn`, P2..P5 without the pool level). State
    dicts from before it was shared (`lateral.i.*`, `smooth.i.*`) load as they are: the keys are
    renamed to `fpn.inner_blocks.i.0.*` and `fpn.layer_blocks.i.0.*` while loading."""

    def __init__(self, encoder: nn.Module, num_classes: int = 1, channels: int = 128):
        super().__init__()
        self.encoder = encoder
        self.fpn = FeaturePyramidNetwork(
            list(encoder.channels), channels, pool=False, torchvision_init=False
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(4 * channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(channels, num_classes, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Children load after this call from the same dict, so renaming here is enough.
        for old, new in (("lateral.", "fpn.inner_blocks."), ("smooth.", "fpn.layer_blocks.")):
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                index, name = key[len(prefix + old) :].split(".", 1)
                state_dict[f"{prefix}{new}{index}.0.{name}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 32)  # C5 is at stride 32
        pyramid = list(self.fpn(self.encoder(x)).values())[::-1]  # P5..P2: the fuse's order
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
