"""The detection task: Faster R-CNN and Mask R-CNN (task), the layouts with boxes and instances
(data), scoring (evaluate), test-time augmentation and ensembles (ensemble), the classifier gate
(gate), the predictor (predictor), prediction over archives and its formats (predict; `merge`
writes a run's final files) and `fastdet train|predict|evaluate|tune det` (commands)."""

from .commands import add_commands
from .predict import merge
from .task import DetConfig, DetTask

Task = DetTask

__all__ = ["DetConfig", "DetTask", "Task", "add_commands", "merge"]
