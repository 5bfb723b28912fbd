"""The adversarial part of U-Net+GAN: a convolutional discriminator that judges (image, mask)
pairs, and the binarization it sees predicted masks through.

The original work found that a discriminator shown soft (sigmoid) masks wins trivially, since
ground-truth masks are exactly 0/1; so predicted masks are binarized at 0.5. The forward pass uses
the hard mask, the backward pass the identity (a straight-through estimator), so the generator
still receives the adversarial gradient."""

from __future__ import annotations

import torch
from torch import nn

from .unet import UNet


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prob, threshold):
        return (prob > threshold).to(prob.dtype)  # exactly 0 or 1 (hard + p - p would round)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def binarize(prob: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard 0/1 mask forward, gradient of the identity backward."""
    return _StraightThrough.apply(prob, threshold)


class Discriminator(nn.Module):
    """(image [B, C, H, W], mask [B, 1, H, W]) -> one logit per image ("real" > 0). Strided 4x4
    convolutions with LeakyReLU (and batch norm after the first), then a global average."""

    def __init__(self, image_channels: int = 1, width: int = 32, layers: int = 4):
        super().__init__()
        mods, cin = [], image_channels + 1
        for i in range(layers):
            cout = width * 2**i
            mods += [nn.Conv2d(cin, cout, 4, 2, 1, bias=i == 0)]
            mods += [nn.BatchNorm2d(cout)] if i else []
            mods += [nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*mods)
        self.head = nn.Conv2d(cin, 1, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.shape[-2:] != mask.shape[-2:] or mask.shape[1] != 1:
            raise ValueError(
                f"image {tuple(image.shape)} and mask {tuple(mask.shape)}: expected "
                f"[B, C, H, W] and [B, 1, H, W]"
            )
        return self.head(self.features(torch.cat([image, mask.to(image.dtype)], 1))).mean((1, 2, 3))


class UNetGAN(nn.Module):
    """The U-Net as generator with a Discriminator; forward is the generator's (logits)."""

    def __init__(self, in_channels: int = 1, depth: int = 4, width: int = 64, d_width: int = 32):
        super().__init__()
        self.generator = UNet(in_channels, 1, depth, width)
        self.discriminator = Discriminator(in_channels, d_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def judge(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """D's logit on the binarized prediction (straight-through, so G gets gradients)."""
        return self.discriminator(image, binarize(torch.sigmoid(logits)))


def unet_gan(in_channels: int = 1, depth: int = 4, width: int = 64, d_width: int = 32) -> UNetGAN:
    return UNetGAN(in_channels, depth, width, d_width)
