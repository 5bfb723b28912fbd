"""fastdet.engine: one trainer for every task, and inference and evaluation around it.

The trainer and what every task shares sit here (trainer, checkpoint, config, loading, inputs,
commands); each task is a package of engine.tasks, whose registry maps names to them.

- `train(config, train_set, val_set, out_dir, resume=False)`: the trainer (engine.trainer) runs
  the task of the config: `SegConfig` (U-Net, FPN, U-Net+GAN; engine.tasks.seg), `DetConfig`
  (Faster R-CNN, Mask R-CNN; engine.tasks.det) or `ClsConfig` (ResNet, DenseNet classifiers;
  engine.tasks.cls). `fit(task, ...)` trains a Task instance.
  SGD/Adam with step decay and warmup, mixed precision on CUDA, DDP under torchrun, metrics CSV
  and plot, atomic checkpoints, exact resume.
- `load_model(checkpoint, device, task=None)`: (eval-mode model, config) of any task's checkpoint.
- Segmentation: `predict_mask(...)` / `predict_logits(...)` with optional sliding-window tiling
  (engine.tasks.seg.predict), `evaluate_segmentation(...)` beside the classical baseline.
- Detection: `predict_detections`, `evaluate_detection` (engine.tasks.det).
- Classification: `load_classifier` (model, config, the stored Youden's J threshold),
  `predict_probabilities` / `positive_probability` (what a gate calls), `evaluate_classification`
  (engine.tasks.cls).
- Test-time augmentation and ensembles of detectors: `predict_fused` (engine.tasks.det.ensemble).
- Gated detection: `load_gate(cls_checkpoint, device, threshold=None)`, `apply_gate` (gate;
  `evaluate_detection(..., gate=...)`).

`train_segmentation`, `train_detection` and `TrainConfig` are the former names of `train` and
`SegConfig`, kept so existing code runs."""

from .checkpoint import atomic_save, load_checkpoint
from .config import RunConfig
from .tasks import TASKS, load_model, task_for, train
from .tasks.cls.evaluate import evaluate_classification
from .tasks.cls.task import ClsConfig, load_classifier, positive_probability, predict_probabilities
from .tasks.det.ensemble import predict_fused
from .tasks.det.evaluate import evaluate_detection
from .tasks.det.gate import Gate, apply_gate, load_gate
from .tasks.det.task import DetConfig, predict_detections
from .tasks.seg.evaluate import evaluate_segmentation
from .tasks.seg.predict import predict_logits, predict_mask, sliding_window
from .tasks.seg.task import SegConfig
from .trainer import NonFiniteLossError, Trainer, fit, resolve_device

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
    "fit",
    "train_segmentation",
    "train_detection",
    "Trainer",
    "TASKS",
    "task_for",
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
