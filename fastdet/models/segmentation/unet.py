"""U-Net (Ronneberger et al., 2015) as customized in the original work: 3x3 convolutions with
batch norm and ReLU, padded so encoder and decoder features concatenate without cropping,
max-pool downsampling and transposed-convolution upsampling. Any input size: the input is padded
to a multiple of 2^depth and the output cropped back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """(3x3 convolution, batch norm, ReLU) twice; padding 1 keeps the size."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pads H and W (bottom/right) up to a multiple; returns the input's (H, W) to crop
    back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


class UNet(nn.Module):
    """in_channels -> num_classes logits at the input's size. depth: poolings (4 in the paper);
    width: channels of the first level, doubled at each level."""

    def __init__(self, in_channels: int = 1, num_classes: int = 1, depth: int = 4, width: int = 64):
        super().__init__()
        if depth < 1 or width < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"depth, width, in_channels and num_classes must be >= 1, got "
                f"{depth}, {width}, {in_channels}, {num_classes}"
            )
        chans = [width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList(
            [conv_block(in_channels, chans[0])]
            + [conv_block(chans[i], chans[i + 1]) for i in range(depth)]
        )
        self.up = nn.ModuleList(
            [
                nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                for i in reversed(range(depth))
            ]
        )
        self.merge = nn.ModuleList(
            [conv_block(2 * chans[i], chans[i]) for i in reversed(range(depth))]
        )
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 2**self.depth)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)[..., :h, :w]


def unet(in_channels: int = 1, num_classes: int = 1, depth: int = 4, width: int = 64) -> UNet:
    return UNet(in_channels, num_classes, depth, width)
