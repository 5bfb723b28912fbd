"""The classification task: ResNet and DenseNet classifiers (task), the layouts with image
labels (data), scoring (evaluate), the lung crop before the classifier (lungs), prediction over
archives (predict; `merge` writes a run's final files) and `fastdet train|predict|evaluate cls`
(commands)."""

from .commands import add_commands
from .predict import merge
from .task import ClsConfig, ClsTask

Task = ClsTask

__all__ = ["ClsConfig", "ClsTask", "Task", "add_commands", "merge"]
