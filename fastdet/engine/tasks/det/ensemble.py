"""Test-time augmentation (TTA) and ensembles of detectors, fused into one set of detections.

Each member (model, config) predicts on the original image and on each TTA view; every view's
boxes are mapped back to the original image's pixels, and all lists (members x views) are fused:

- views: "hflip" (left-right flip; a box maps back by x -> W - x, x1 and x2 swapped), "vflip"
  (top-bottom, y -> H - y), "scale" (two views: the model's own resize run at SCALES = 0.8 and
  1.2 times its min_size and max_size, so the image enters the network at 0.8x and 1.2x the
  size it was trained at; the model scales its boxes back itself). One view per word, no
  combinations; the original image is always the first view.
- fuse "wbf": fastdet.ops.weighted_boxes_fusion of the lists (each list one "model" of equal
  weight), boxes divided by (W, H, W, H) before and multiplied back after; conf_type "avg", so a
  box found by k of the n lists scores mean(score) * k / n. "nms": all lists concatenated,
  fastdet.ops.batched_nms per label at iou_thr. "soft_nms": per label, fastdet.ops.soft_nms
  with method "linear" at iou_thr and score_threshold max(skip_box_thr, 0.001) (the Soft-NMS
  paper's), the decayed scores kept.
  For all three, boxes scoring < skip_box_thr are dropped first; the fused detections are sorted
  by decreasing score and cut to the largest detections_per_img of the members' configs.

Boxes only: Mask R-CNN checkpoints are refused (their masks are not fused). Members must agree
on num_classes (their labels must mean the same)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ....ops import batched_nms, soft_nms, weighted_boxes_fusion
from .data import prepare_image
from .task import has_masks, predict_detections

TTA_WORDS = ("hflip", "vflip", "scale")
SCALES = (0.8, 1.2)
FUSE_METHODS = ("wbf", "nms", "soft_nms")


def parse_tta(text) -> tuple[str, ...]:
    """'hflip,scale' (or a list of words) -> ("hflip", "scale"); "" or None -> (). Unknown or
    repeated words are a ValueError."""
    if text is None:
        return ()
    words = [w.strip() for w in text.split(",")] if isinstance(text, str) else list(text)
    words = [w for w in words if w]
    for w in words:
        if w not in TTA_WORDS:
            raise ValueError(f"tta: unknown augmentation {w!r}; expected some of {TTA_WORDS}")
    if len(set(words)) != len(words):
        raise ValueError(f"tta: a word repeated in {words}")
    return tuple(words)


def tta_views(tta) -> list[tuple[str, float]]:
    """The views of a TTA word list: [("none", 1.0), then ("hflip", 1.0), ("vflip", 1.0),
    ("scale", 0.8), ("scale", 1.2) for the words given, in the order given]."""
    views = [("none", 1.0)]
    for w in parse_tta(tta):
        views += [("scale", s) for s in SCALES] if w == "scale" else [(w, 1.0)]
    return views


def check_members(members) -> None:
    """ValueError unless members is a non-empty list of detection (model, config) pairs of box
    detectors (not Mask R-CNN) with one num_classes."""
    if not members:
        raise ValueError("members: at least one (model, config) pair, got none")
    for i, (_, config) in enumerate(members):
        model = getattr(config, "model", None)
        if getattr(config, "task", None) != "det" or model is None:
            raise ValueError(f"members[{i}]: a detection checkpoint's config, got {config!r}")
        if has_masks(model):
            raise ValueError(
                f"members[{i}]: {model} is Mask R-CNN; test-time augmentation and ensembles "
                "fuse boxes only, so they take Faster R-CNN checkpoints"
            )
    classes = sorted({c.num_classes for _, c in members})
    if len(classes) > 1:
        raise ValueError(f"members: checkpoints with different num_classes {classes} cannot fuse")


def flip_image(x: torch.Tensor, view: str) -> torch.Tensor:
    """The [C, H, W] image of a flip view ("hflip" flips W, "vflip" flips H)."""
    if view == "hflip":
        return x.flip(-1)
    if view == "vflip":
        return x.flip(-2)
    return x


def map_back(boxes: torch.Tensor, view: str, size: tuple[int, int]) -> torch.Tensor:
    """Boxes [N, 4] (x1, y1, x2, y2) predicted on a view of an image of size (H, W) -> boxes on
    the original image. A flip is its own inverse: hflip x -> W - x with x1 and x2 swapped (so
    x1 <= x2 stays true), vflip likewise on y; other views return the boxes unchanged."""
    h, w = size
    if view == "hflip":
        return torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    if view == "vflip":
        return torch.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], 1)
    return boxes


@contextlib.contextmanager
def _scaled(model, factor: float):
    """The model's resize run at factor x its min_size and max_size (restored after)."""
    t = getattr(model, "transform", None)
    if factor == 1.0:
        yield
        return
    if t is None or not hasattr(t, "min_size"):
        raise ValueError("tta 'scale' needs a detector with a resizing transform (.transform)")
    old = (t.min_size, t.max_size)
    t.min_size = tuple(max(1, round(s * factor)) for s in old[0])
    t.max_size = max(1, round(old[1] * factor))
    try:
        yield
    finally:
        t.min_size, t.max_size = old


def member_predictions(members, image, tta=(), device="cpu") -> list[list[dict]]:
    """Per member, per view of tta_views(tta): its detections {"boxes" float32 [N, 4] in the
    original image's pixels, "scores" [N], "labels" int64 [N]} (CPU). image: a dataset image
    [C, H, W] in file units (each member prepares it with its own config); the first view of
    each member is its plain prediction."""
    check_members(members)
    views = tta_views(tta)
    out = []
    for model, config in members:
        x = prepare_image(image, config)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        preds = []
        for view, factor in views:
            with _scaled(model, factor):
                p = predict_detections(model, [flip_image(x, view)], device)[0]
            preds.append({**p, "boxes": map_back(p["boxes"], view, size)})
        out.append(preds)
    return out


def fuse_detections(
    preds: list[dict],
    size: tuple[int, int],
    fuse: str = "wbf",
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.0,
    max_detections: int | None = None,
) -> dict:
    """One set of detections from several lists {"boxes", "scores", "labels"} on one image of
    size (H, W), by `fuse` (see the module docstring). Returns CPU {"boxes" float32 [K, 4],
    "scores" float32 [K], "labels" int64 [K]} in decreasing score."""
    if fuse not in FUSE_METHODS:
        raise ValueError(f"fuse must be one of {FUSE_METHODS}, got {fuse!r}")
    if not preds:
        raise ValueError("preds: at least one list of detections, got none")
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"iou_thr must be in [0, 1], got {iou_thr!r}")
    if not 0.0 <= skip_box_thr <= 1.0:
        raise ValueError(f"skip_box_thr must be in [0, 1], got {skip_box_thr!r}")
    lists = []
    for p in preds:
        keep = p["scores"] >= skip_box_thr
        lists.append(
            (
                p["boxes"][keep].detach().cpu().double().reshape(-1, 4),
                p["scores"][keep].detach().cpu().double().reshape(-1),
                p["labels"][keep].detach().cpu().long().reshape(-1),
            )
        )
    if fuse == "wbf":
        boxes, scores, labels = _wbf(lists, size, iou_thr, skip_box_thr)
    else:
        boxes = torch.cat([b for b, _, _ in lists])
        scores = torch.cat([s for _, s, _ in lists])
        labels = torch.cat([lab for _, _, lab in lists])
        if fuse == "nms":
            keep = batched_nms(boxes, scores, labels, iou_thr)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        else:
            boxes, scores, labels = _soft_nms(boxes, scores, labels, iou_thr, skip_box_thr)
    order = torch.sort(scores, descending=True, stable=True).indices
    if max_detections is not None:
        order = order[:max_detections]
    return {
        "boxes": boxes[order].float(),
        "scores": scores[order].float(),
        "labels": labels[order].long(),
    }


def _wbf(lists, size, iou_thr, skip_box_thr):

    h, w = size
    scale = np.array([w, h, w, h], dtype=np.float64)
    b, s, lab = weighted_boxes_fusion(
        [bx.numpy() / scale for bx, _, _ in lists],
        [sc.numpy() for _, sc, _ in lists],
        [lb.numpy() for _, _, lb in lists],
        iou_thr=iou_thr,
        skip_box_thr=skip_box_thr,
        conf_type="avg",
    )
    return (
        torch.from_numpy(np.asarray(b).reshape(-1, 4) * scale),
        torch.from_numpy(np.asarray(s)),
        torch.from_numpy(np.asarray(lab)),
    )


def _soft_nms(boxes, scores, labels, iou_thr, skip_box_thr):

    out_b, out_s, out_l = [boxes[:0]], [scores[:0]], [labels[:0]]
    for lab in torch.unique(labels).tolist():
        idx = (labels == lab).nonzero().squeeze(1)
        keep, decayed = soft_nms(
            boxes[idx],
            scores[idx],
            iou_threshold=iou_thr,
            score_threshold=max(skip_box_thr, 0.001),
            method="linear",
        )
        out_b.append(boxes[idx[keep]])
        out_s.append(decayed)
        out_l.append(labels[idx[keep]])
    return torch.cat(out_b), torch.cat(out_s), torch.cat(out_l)


def predict_fused(
    members,
    image,
    tta=(),
    fuse: str = "wbf",
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.0,
    device="cpu",
) -> dict:
    """The fused detections {"boxes", "scores", "labels"} (CPU; boxes in the image's pixels) of
    members [(model, config), ...] over the views of `tta` on one dataset image [C, H, W]."""
    per = member_predictions(members, image, tta, device)
    return fuse_members(per, members, _size(image), fuse, iou_thr, skip_box_thr)


def fuse_members(per, members, size, fuse="wbf", iou_thr=0.55, skip_box_thr=0.0) -> dict:
    """fuse_detections of member_predictions' output (all members' views), cut to the largest
    detections_per_img of the members' configs."""
    flat = [p for views in per for p in views]
    cap = max(c.detections_per_img for _, c in members)
    return fuse_detections(flat, size, fuse, iou_thr, skip_box_thr, cap)


def _size(image) -> tuple[int, int]:
    shape = tuple(torch.as_tensor(image).shape)
    return int(shape[-2]), int(shape[-1])
