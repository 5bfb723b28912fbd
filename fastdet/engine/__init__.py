"""fastdet.engine: one trainer for every task, and inference and evaluation around it.

- `train(config, train_set, val_set, out_dir, resume=False)`: the trainer (engine.trainer) runs
  the task of the config: `SegConfig` (U-Net, FPN, U-Net+GAN; engine.seg), `DetConfig`
  (Faster R-CNN; engine.det) or `ClsConfig` (ResNet, DenseNet classifiers; engine.cls).
  SGD/Adam with step decay and warmup, mixed precision on CUDA, DDP under torchrun, metrics CSV
  and plot, atomic checkpoints, exact resume.
- `load_model(checkpoint, device, task=None)`: (eval-mode model, config) of any task's checkpoint.
- Segmentation: `predict_mask(...)` / `predict_logits(...)` with optional sliding-window tiling
  (engine.inference), `evaluate_segmentation(...)` beside the classical baseline (engine.seg_eval).
- Detection: `predict_detections`, `evaluate_detection` (engine.det_eval).
- Classification: `load_classifier` (model, config, the stored Youden's J threshold),
  `predict_probabilities` / `positive_probability` (what a gate calls), `evaluate_classification`
  (engine.cls_eval).
- Test-time augmentation and ensembles of detectors: `predict_fused` (engine.ensemble).
- Gated detection: `load_gate(cls_checkpoint, device, threshold=None)`, `apply_gate` (engine.gate;
  `evaluate_detection(..., gate=...)`).

`train_segmentation`, `train_detection` and `TrainConfig` are the former names of `train` and
`SegConfig`, kept so existing code runs."""

from .checkpoint import atomic_save, load_checkpoint
from .cls import ClsConfig, load_classifier, positive_probability, predict_probabilities
from .cls_eval import evaluate_classification
from .config import RunConfig
from .det import DetConfig, predict_detections
from .det_eval import evaluate_detection
from .ensemble import predict_fused
from .gate import Gate, apply_gate, load_gate
from .inference import predict_logits, predict_mask, sliding_window
from .seg import SegConfig
from .seg_eval import evaluate_segmentation
from .tasks import TASKS, load_model
from .trainer import NonFiniteLossError, Trainer, resolve_device, train

TrainConfig = SegConfig
train_segmentation = train_detection = train


def load_detector(checkpoint, device="cpu"):
    """load_model of a detection checkpoint (another kind is a ValueError)."""
    return load_model(checkpoint, device, task="det")


__all__ = [
    "RunConfig",
    "SegConfig",
    "DetConfig",
    "ClsConfig",
    "TrainConfig",
    "train",
    "train_segmentation",
    "train_detection",
    "Trainer",
    "TASKS",
    "NonFiniteLossError",
    "load_model",
    "load_detector",
    "resolve_device",
    "atomic_save",
    "load_checkpoint",
    "predict_logits",
    "predict_fused",
    "predict_mask",
    "sliding_window",
    "predict_detections",
    "evaluate_segmentation",
    "evaluate_detection",
    "load_classifier",
    "predict_probabilities",
    "positive_probability",
    "evaluate_classification",
    "Gate",
    "load_gate",
    "apply_gate",
]
