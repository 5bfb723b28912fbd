"""Model construction from a TrainConfig, and models back from checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from ..models import losses
from ..models.segmentation import fpn_resnet18, fpn_resnet34, fpn_resnet50, unet, unet_gan
from .checkpoint import load_checkpoint, model_state
from .config import TrainConfig

_FPN = {"fpn_resnet18": fpn_resnet18, "fpn_resnet34": fpn_resnet34, "fpn_resnet50": fpn_resnet50}
LOSS_FUNCTIONS = {
    "bce": losses.bce,
    "focal": losses.focal,
    "dice": losses.dice,
    "bce_dice": losses.bce_dice,
}


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" is CUDA when available, else CPU; a CUDA device that is absent is an error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA device")
    return device


def build_model(config: TrainConfig) -> nn.Module:
    """The network named by config.model with one output channel (foreground logits)."""
    c = config.in_channels or 1
    if config.model == "unet":
        return unet(c, 1, config.depth, config.width)
    if config.model == "unet_gan":
        return unet_gan(c, config.depth, config.width, config.d_width)
    return _FPN[config.model](c, 1, weights=config.encoder_weights)


def generator_of(model: nn.Module) -> nn.Module:
    """The segmenting network: U-Net+GAN's generator, or the model itself."""
    return getattr(model, "generator", model)


def load_generator_weights(model: nn.Module, path) -> None:
    """Starts U-Net+GAN's generator (or a plain model) from a U-Net checkpoint: an engine
    checkpoint of a unet or unet_gan run, or a bare U-Net state_dict."""
    state = model_state(load_checkpoint(path))
    if any(k.startswith("generator.") for k in state):
        state = {k[len("generator.") :]: v for k, v in state.items() if k.startswith("generator.")}
    target = generator_of(model)
    try:
        target.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{path}: does not fit the {type(target).__name__} of this config "
            f"(depth, width and in_channels must match): {e}"
        ) from e


def load_model(path, device="cpu") -> tuple[nn.Module, TrainConfig]:
    """(model in eval mode on device, its TrainConfig) from an engine checkpoint."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise ValueError(f"{path}: not a fastdet training checkpoint (no 'config')")
    cfg = dict(ckpt["config"], encoder_weights=None)  # the weights are in the checkpoint
    config = TrainConfig.from_dict(cfg)
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), config
