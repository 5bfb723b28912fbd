"""Models on fastdet's ops: detection (Faster R-CNN), segmentation (U-Net, FPN, U-Net+GAN),
classification (ResNet, DenseNet), losses."""

from . import classification, detection, losses, segmentation
from .resnet import ResNet, load_state_dict_file, resnet

__all__ = [
    "classification",
    "detection",
    "losses",
    "segmentation",
    "ResNet",
    "resnet",
    "load_state_dict_file",
]
