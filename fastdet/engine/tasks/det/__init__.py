"""The detection task: Faster R-CNN and Mask R-CNN (task), the layouts with boxes and instances
(data), scoring (evaluate), test-time augmentation and ensembles (ensemble), the classifier gate
(gate) and `fastdet train|predict|evaluate det` (commands)."""

from .commands import add_commands
from .task import DetConfig, DetTask

Task = DetTask

__all__ = ["DetConfig", "DetTask", "Task", "add_commands"]
