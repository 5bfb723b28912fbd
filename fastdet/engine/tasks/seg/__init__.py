"""The segmentation task: U-Net, FPN on ResNet and U-Net+GAN (task), the layouts with masks
(data), sliding-window prediction and prediction over archives (predict; `merge` writes a
run's final files), scoring beside the classical baseline (evaluate)
and `fastdet train|predict|evaluate seg` (commands)."""

from .commands import add_commands
from .predict import merge
from .task import SegConfig, SegTask

Task = SegTask

__all__ = ["SegConfig", "SegTask", "Task", "add_commands", "merge"]
