"""Segmentation models: U-Net, FPN on ResNet encoders, U-Net with a GAN discriminator.
MODELS maps each name to its builder; `segmentation_model(name, ...)` builds one by name."""

import inspect

from .discriminator import Discriminator, UNetGAN, binarize, unet_gan
from .fpn import FPNSeg, fpn_resnet18, fpn_resnet34, fpn_resnet50
from .unet import UNet, unet

MODELS = {
    "unet": unet,
    "fpn_resnet18": fpn_resnet18,
    "fpn_resnet34": fpn_resnet34,
    "fpn_resnet50": fpn_resnet50,
    "unet_gan": unet_gan,
}


def segmentation_model(name: str, in_channels: int = 1, **settings):
    """The network called `name` (one of MODELS) with one output channel (foreground logits).
    settings: what a builder may take (depth, width: U-Net's; d_width: U-Net+GAN's
    discriminator; weights: the FPN encoder's ResNet state_dict); each builder gets those of its
    own parameters, so one call serves every name."""
    if name not in MODELS:
        raise ValueError(f"name must be one of {tuple(MODELS)}, got {name!r}")
    build = MODELS[name]
    takes = inspect.signature(build).parameters
    given = {k: v for k, v in settings.items() if k in takes}
    if "num_classes" in takes:
        given["num_classes"] = 1
    return build(in_channels=in_channels, **given)


__all__ = [
    "MODELS",
    "segmentation_model",
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
