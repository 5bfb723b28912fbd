"""fastdet.metrics: segmentation and detection scores, mask post-processing and a classical
segmenter. Numpy arrays in (torch tensors accepted), numpy or Python floats out.

- segmentation: iou, dice, sensitivity, specificity, precision (per image, per slice or per
  volume; mean ± std or pooled; MONAI's empty-mask conventions), summarize, confusion_matrix.
- detection: dsb_score (2018 Data Science Bowl, instance label images), rsna_score (RSNA
  Pneumonia Detection Challenge, boxes), coco_map (pycocotools' COCOeval bbox AP), and their
  one greedy matcher (greedy_match, match_detections).
- postprocess: keep_largest_component, fill_holes, remove_small_objects, split_instances,
  clean_mask (scipy.ndimage, scikit-image).
- classical: classical_segment, the traditional baseline (smoothing, Otsu, morphology,
  watershed).
- classification: accuracy, balanced_accuracy, class_scores (per-class sensitivity,
  specificity, precision), roc_auc (binary and one-vs-rest, scikit-learn's values), roc_curve,
  youden_threshold.
- tables: per-subject IoU/Dice rows per method, CSV.
- figures: contour overlays (ground truth green, prediction red, both yellow), detections
  drawn over the image (draw_boxes), precision-recall and ROC curves and confusion matrices,
  as PNG (Pillow, matplotlib).

Runtime dependencies beyond numpy: scipy (imported here) and scikit-image (imported inside
split_instances and classical_segment only). pycocotools is needed only by the tests.
"""

from .classical import classical_segment
from .classification import (
    accuracy,
    balanced_accuracy,
    class_scores,
    class_scores_from_matrix,
    roc_auc,
    roc_curve,
    youden_threshold,
)
from .detection import (
    COCO_IOU_THRESHOLDS,
    DSB_THRESHOLDS,
    FROC_RATES,
    RSNA_THRESHOLDS,
    bootstrap_intervals,
    coco_map,
    dsb_image_score,
    dsb_score,
    froc,
    greedy_match,
    label_iou,
    match_detections,
    rsna_image_score,
    rsna_score,
)
from .figures import (
    draw_boxes,
    overlay,
    pr_curve,
    save_confusion_matrix,
    save_instance_overlay,
    save_overlay,
    save_pr_curves,
    save_roc_curves,
)
from .postprocess import (
    clean_mask,
    fill_holes,
    keep_largest_component,
    label_components,
    remove_small_objects,
    split_instances,
)
from .segmentation import (
    METRICS,
    confusion_counts,
    confusion_matrix,
    dice,
    iou,
    metric_from_counts,
    precision,
    sensitivity,
    specificity,
    summarize,
)
from .tables import (
    confusion_rows,
    format_mean_std,
    method_summary,
    read_csv,
    subject_table,
    subject_table_from_rows,
    wide_table,
    write_csv,
)

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "class_scores",
    "class_scores_from_matrix",
    "confusion_rows",
    "roc_auc",
    "roc_curve",
    "save_confusion_matrix",
    "save_roc_curves",
    "youden_threshold",
    "COCO_IOU_THRESHOLDS",
    "DSB_THRESHOLDS",
    "METRICS",
    "RSNA_THRESHOLDS",
    "FROC_RATES",
    "bootstrap_intervals",
    "classical_segment",
    "froc",
    "clean_mask",
    "coco_map",
    "confusion_counts",
    "confusion_matrix",
    "dice",
    "dsb_image_score",
    "draw_boxes",
    "dsb_score",
    "fill_holes",
    "format_mean_std",
    "iou",
    "keep_largest_component",
    "greedy_match",
    "label_iou",
    "match_detections",
    "label_components",
    "method_summary",
    "metric_from_counts",
    "overlay",
    "pr_curve",
    "precision",
    "read_csv",
    "save_instance_overlay",
    "save_overlay",
    "save_pr_curves",
    "remove_small_objects",
    "rsna_image_score",
    "rsna_score",
    "sensitivity",
    "specificity",
    "split_instances",
    "subject_table",
    "subject_table_from_rows",
    "summarize",
    "wide_table",
    "write_csv",
]
