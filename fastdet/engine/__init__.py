"""fastdet.engine: training loops, checkpoints, inference and evaluation for segmentation.

- `TrainConfig`, `train_segmentation(config, train_set, val_set, out_dir, resume=False)`:
  SGD/Adam with step decay, U-Net+GAN schedules (per batch or per epoch), mixed precision on
  CUDA, DDP under torchrun, metrics CSV and plot, atomic checkpoints, exact resume.
- `load_model(checkpoint)`, `predict_mask(...)` / `predict_logits(...)`: inference with
  optional sliding-window tiling.
- `DetConfig`, `train_detection(config, train_set, val_set, out_dir, resume=False)`: Faster
  R-CNN training (engine.det); `load_detector`, `evaluate_detection` for inference and scores.
- `evaluate_segmentation(...)`: per-image, per-subject and overall scores beside the
  classical baseline.
"""

from .checkpoint import atomic_save, load_checkpoint
from .config import TrainConfig
from .det import DetConfig, evaluate_detection, load_detector, train_detection
from .evaluate import evaluate_segmentation
from .inference import predict_logits, predict_mask, sliding_window
from .loop import NonFiniteLossError
from .models import build_model, load_model, resolve_device
from .seg import train_segmentation

__all__ = [
    "TrainConfig",
    "train_segmentation",
    "NonFiniteLossError",
    "build_model",
    "load_model",
    "resolve_device",
    "atomic_save",
    "load_checkpoint",
    "evaluate_segmentation",
    "predict_logits",
    "predict_mask",
    "sliding_window",
    "DetConfig",
    "train_detection",
    "load_detector",
    "evaluate_detection",
]
