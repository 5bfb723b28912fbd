"""Models on fastdet's ops: segmentation (U-Net, FPN, U-Net+GAN) and losses."""
from . import losses, segmentation
from .resnet import ResNet, load_state_dict_file, resnet

__all__ = ["losses", "segmentation", "ResNet", "resnet", "load_state_dict_file"]
