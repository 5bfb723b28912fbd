"""The segmentation task: U-Net, FPN on ResNet and U-Net+GAN (task), the layouts with masks
(data), sliding-window prediction (predict), scoring beside the classical baseline (evaluate)
and `fastdet train|predict|evaluate seg` (commands)."""

from .commands import add_commands
from .task import SegConfig, SegTask

Task = SegTask

__all__ = ["SegConfig", "SegTask", "Task", "add_commands"]
