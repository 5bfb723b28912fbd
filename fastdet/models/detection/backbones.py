"""Backbones of the detectors, with torchvision's module names (so its checkpoints load as they
are): a ResNet body with a feature pyramid (BackboneWithFPN: "body", "fpn") and the VGG16
convolutional extractor ("features", torchvision's indices 0-29, stride 16).

A backbone's forward takes a padded batch [B, 3, H, W] and returns an OrderedDict of feature
maps, highest resolution first, each with `out_channels` channels.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..fpn import FeaturePyramidNetwork  # shared with FPNSeg; detection exports it from here
from ..resnet import ResNet, load_state_dict_file, resnet


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all four stored as buffers
    (weight, bias, running_mean, running_var: torchvision's names, so its checkpoints load);
    a num_batches_tracked entry in a state_dict is dropped. y = x * scale + (bias - mean * scale)
    with scale = weight / sqrt(var + eps), in torchvision's order of operations."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1, 1, 1)
        scale = self.weight.reshape(shape) * (self.running_var.reshape(shape) + self.eps).rsqrt()
        shift = self.bias.reshape(shape) - self.running_mean.reshape(shape) * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replaces every nn.BatchNorm2d in module (in place) by a FrozenBatchNorm2d holding its
    current statistics and affine parameters."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def group_norm(module: nn.Module) -> nn.Module:
    """Replaces every nn.BatchNorm2d in module (in place) by GroupNorm with 32 groups."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(32, child.num_features, eps=child.eps))
        else:
            group_norm(child)
    return module


NORMS = ("auto", "bn", "frozen_bn", "gn")


class BackboneWithFPN(nn.Module):
    """body: a fastdet ResNet (returns C2..C5); fpn: FeaturePyramidNetwork (GroupNorm after
    each convolution with group_norm); out_channels: 256."""

    def __init__(self, body: ResNet, out_channels: int = 256, group_norm: bool = False):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.channels), out_channels, group_norm=group_norm)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict:
        return self.fpn(self.body(x))


_TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


def resnet_fpn_backbone(
    name: str,
    weights_backbone=None,
    trainable_layers: int = 3,
    frozen_bn: bool = True,
    norm: str | None = None,
) -> BackboneWithFPN:
    """ResNet + FPN as torchvision's _resnet_fpn_extractor. weights_backbone: a local torchvision
    classification state_dict of `name` (fc dropped). trainable_layers in [0, 5] counts stages
    from layer4 down (3: layer2-4 train, conv1 and layer1 frozen; 5: all, bn1 included).
    frozen_bn replaces BatchNorm by FrozenBatchNorm2d (torchvision does for pretrained weights).
    norm (NORMS) overrides it: "bn" trains BatchNorm, "frozen_bn" freezes it, "gn" puts
    GroupNorm(32) in the body's place of BatchNorm and after the FPN's convolutions; "auto" or
    None keeps frozen_bn's choice."""
    if norm not in (None, *NORMS):
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm in ("bn", "frozen_bn"):
        frozen_bn = norm == "frozen_bn"
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
    body = resnet(name)
    if weights_backbone is not None:
        load_state_dict_file(body, weights_backbone)
    if norm == "gn":
        group_norm(body)  # the affine weights of a torchvision file are not GroupNorm's: kept
    elif frozen_bn:
        freeze_batch_norm(body)
    train = list(_TRAINABLE_ORDER[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for pname, p in body.named_parameters():
        if not pname.startswith(tuple(train)):
            p.requires_grad_(False)
    return BackboneWithFPN(body, group_norm=norm == "gn")


# torchvision's vgg16 "features": 13 convolutions (channels), "M" = 2x2 max pool
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16Backbone(nn.Module):
    """conv1_1..conv5_3 of VGG16 with ReLUs and the first four max pools (stride 16, 512
    channels): torchvision's vgg16.features[0:30], same indices, so "features.*" of a torchvision
    vgg16 state_dict loads. The first `frozen_convs` convolutions do not train (4: conv1_1 to
    conv2_2, as the original Faster R-CNN)."""

    def __init__(self, frozen_convs: int = 4):
        super().__init__()
        layers, cin = [], 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.out_channels = 512
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        for conv in convs[:frozen_convs]:
            conv.requires_grad_(False)

    def forward(self, x: Tensor) -> OrderedDict:
        return OrderedDict([("0", self.features(x))])
