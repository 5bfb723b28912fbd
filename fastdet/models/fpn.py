"""The feature pyramid network shared by the detectors (BackboneWithFPN) and segmentation's
FPNSeg, so the top-down pathway is written once."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn


class FeaturePyramidNetwork(nn.Module):
    """FPN (Lin et al., 2017) with torchvision's layout: per input level a 1x1 lateral convolution
    (inner_blocks.i.0) and a 3x3 output convolution (layer_blocks.i.0); top-down pathway by
    nearest upsampling to the lateral's size; plus the "pool" level, a stride-2 subsampling
    of the coarsest output (torchvision's LastLevelMaxPool).

    pool=False leaves the "pool" level out. torchvision_init=True initialises the convolutions as
    torchvision does (kaiming_uniform_ with a=1, zero bias); False keeps nn.Conv2d's default (what
    FPNSeg has always used, so its initial weights for a given seed are unchanged). Neither flag
    adds or renames a parameter."""

    def __init__(
        self,
        in_channels_list: list[int],
        out_channels: int,
        *,
        pool: bool = True,
        torchvision_init: bool = True,
    ):
        super().__init__()
        self.pool = pool
        self.inner_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1)) for c in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1))
            for _ in in_channels_list
        )
        if torchvision_init:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight, a=1)
                    nn.init.constant_(m.bias, 0)

    def forward(self, feats: list[Tensor]) -> OrderedDict:
        """feats: C2..C5 (finest first) -> OrderedDict "0".."3" (P2..P5), then "pool" (with
        pool=True)."""
        last = self.inner_blocks[-1](feats[-1])
        outs = [self.layer_blocks[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.layer_blocks[i](last))
        names = [str(i) for i in range(len(feats))]
        if self.pool:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2, padding=0))
            names.append("pool")
        return OrderedDict(zip(names, outs))
