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
    adds or renames a parameter. group_norm=True: each convolution (bias-free) is followed by
    GroupNorm(32) (inner_blocks.i.1, layer_blocks.i.1), as torchvision's FPN with a norm_layer;
    from scratch on small batches it trains where BatchNorm's statistics are noise."""

    def __init__(
        self,
        in_channels_list: list[int],
        out_channels: int,
        *,
        pool: bool = True,
        torchvision_init: bool = True,
        group_norm: bool = False,
    ):
        super().__init__()
        self.pool = pool

        def block(cin, k):
            conv = nn.Conv2d(cin, out_channels, k, padding=k // 2, bias=not group_norm)
            return (
                nn.Sequential(conv, nn.GroupNorm(32, out_channels))
                if group_norm
                else (nn.Sequential(conv))
            )

        self.inner_blocks = nn.ModuleList(block(c, 1) for c in in_channels_list)
        self.layer_blocks = nn.ModuleList(block(out_channels, 3) for _ in in_channels_list)
        if torchvision_init:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight, a=1)
                    if m.bias is not None:
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
