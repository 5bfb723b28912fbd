"""Segmentation models: U-Net, FPN on ResNet encoders, U-Net with a GAN discriminator."""

from .discriminator import Discriminator, UNetGAN, binarize, unet_gan
from .fpn import FPNSeg, fpn_resnet18, fpn_resnet34, fpn_resnet50
from .unet import UNet, unet

__all__ = [
    "UNet",
    "unet",
    "FPNSeg",
    "fpn_resnet18",
    "fpn_resnet34",
    "fpn_resnet50",
    "Discriminator",
    "UNetGAN",
    "unet_gan",
    "binarize",
]
