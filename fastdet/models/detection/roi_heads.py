"""RoI head of Faster R-CNN (Fast R-CNN on proposals), torchvision's structure and rules, on
fastdet's box_iou, BoxCoder, clip_boxes_to_image and batched_nms (remove_small_boxes's rule
as a mask; the pooling, MultiScaleRoIAlign, is in fastdet.ops).

Training: the ground-truth boxes join the proposals; proposals with IoU >= fg_iou_thresh with a
ground truth take its label, those below bg_iou_thresh are background (label 0);
batch_size_per_image are sampled per image with at most positive_fraction positive. Inference:
softmax scores, class-specific boxes clipped to the image, score > score_thresh, boxes under
1e-2 pixels dropped, NMS per class at nms_thresh, the detections_per_img highest kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import (
    BoxCoder,
    batched_nms,
    clip_boxes_to_image,
)
from . import _utils as det_utils
from .mask_head import mask_loss, mask_probabilities


class TwoMLPHead(nn.Module):
    """fc6 and fc7 with ReLU (torchvision's keys); dropout after each (0.5 in the original VGG16
    head, 0 in torchvision's FPN head)."""

    def __init__(self, in_channels: int, representation_size: int, dropout: float = 0.0):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        x = F.dropout(F.relu(self.fc6(x.flatten(1))), self.dropout, self.training)
        return F.dropout(F.relu(self.fc7(x)), self.dropout, self.training)


class FastRCNNPredictor(nn.Module):
    """cls_score [K, num_classes] (class 0 is background) and bbox_pred [K, 4 num_classes]."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class RoIHeads(nn.Module):
    """Losses: classification "ce" or "focal" (softmax), mean over sampled RoIs; box "smooth_l1"
    with sigma (1: the original; 3: torchvision's beta 1/9) or "l1", class-specific, summed over
    positives / number of sampled RoIs. bbox_reg_weights (10, 10, 5, 5) are the original's target
    normalization (stds 0.1, 0.1, 0.2, 0.2)."""

    def __init__(
        self,
        box_roi_pool,
        box_head,
        box_predictor,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        sigma: float = 3.0,
        box_loss: str = "smooth_l1",
        cls_loss: str = "ce",
        focal_gamma: float = 2.0,
        mask_roi_pool=None,
        mask_head=None,
        mask_predictor=None,
    ):
        super().__init__()
        det_utils.set_loss_options(self, sigma, box_loss, cls_loss, focal_gamma)
        if (mask_roi_pool is None) != (mask_predictor is None) or (
            mask_head is not None and mask_roi_pool is None
        ):
            raise ValueError("a mask branch needs mask_roi_pool and mask_predictor (and a head)")
        self.mask_roi_pool, self.mask_head = mask_roi_pool, mask_head
        self.mask_predictor = mask_predictor
        self.box_roi_pool, self.box_head, self.box_predictor = box_roi_pool, box_head, box_predictor
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.box_coder = BoxCoder(bbox_reg_weights or (10.0, 10.0, 5.0, 5.0))
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img = detections_per_img

    def has_mask(self) -> bool:
        return self.mask_predictor is not None

    def select_training_samples(self, proposals: list[Tensor], targets: list[dict]):
        """Per image: sampled proposals [Si, 4], labels [Si] int64 (0 background), the
        matched ground-truth boxes [Si, 4] (zeros for background) and their indices [Si]."""
        out_props, out_labels, out_gt, out_idx = [], [], [], []
        for props, t in zip(proposals, targets):
            gt, gt_labels = t["boxes"].to(props.dtype), t["labels"]
            props = torch.cat([props, gt])
            if gt.numel() == 0:
                labels = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                matched = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                gt = props.new_zeros((1, 4))
            else:
                m = det_utils.match(gt, props, self.fg_iou_thresh, self.bg_iou_thresh, False)
                matched = m.clamp(min=0)
                labels = gt_labels[matched].to(torch.int64)
                # torch.where, not boolean-mask stores: no host sync
                labels = torch.where(m == det_utils.BELOW_LOW, 0, labels)
                labels = torch.where(m == det_utils.BETWEEN, -1, labels)
            pos, neg = det_utils.sample([labels], self.batch_size_per_image, self.positive_fraction)
            keep = torch.cat([pos[0], neg[0]]).sort().values
            out_props.append(props[keep])
            out_labels.append(labels[keep])
            out_gt.append(gt[matched[keep]])
            out_idx.append(matched[keep])
        return out_props, out_labels, out_gt, out_idx

    def forward(self, features: dict, proposals: list[Tensor], image_sizes, targets=None):
        """Training: (empty list, {"loss_classifier", "loss_box_reg"} and, with a mask branch,
        "loss_mask"); evaluation: (list of {"boxes" [Di, 4], "scores" [Di], "labels" [Di] int64}
        and, with a mask branch, "masks" [Di, M, M] probabilities in each box, {}) in the padded
        batch's frame."""
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            if self.has_mask() and not all("masks" in t for t in targets):
                raise ValueError("Mask R-CNN's training targets need 'masks' [Ni, H, W]")
            proposals, labels, matched_gt, matched = self.select_training_samples(
                proposals, targets
            )
        x = self.box_head(self.box_roi_pool(features, proposals, image_sizes))
        # float32 under autocast, as the RPN's outputs (see RegionProposalNetwork.forward)
        class_logits, box_regression = (t.float() for t in self.box_predictor(x))
        if self.training:
            losses = self.compute_loss(class_logits, box_regression, proposals, labels, matched_gt)
            if self.has_mask():
                losses["loss_mask"] = self._mask_loss(
                    features, proposals, labels, matched, targets, image_sizes
                )
            return [], losses
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_sizes
        )
        result = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        if self.has_mask():
            logits = self._mask_logits(features, boxes, image_sizes)
            for r, m in zip(result, mask_probabilities(logits, labels)):
                r["masks"] = m
        return result, {}

    def _mask_logits(self, features, boxes, image_sizes) -> Tensor:
        x = self.mask_roi_pool(features, boxes, image_sizes)
        return self.mask_predictor(self.mask_head(x) if self.mask_head is not None else x).float()

    def _mask_loss(self, features, proposals, labels, matched, targets, image_sizes) -> Tensor:
        """The mask loss on the positive sampled RoIs only (torchvision's rule)."""
        # a host sync per image: the mask head runs on the positives alone (a quarter of the RoIs)
        pos = [torch.where(lab > 0)[0] for lab in labels]
        boxes = [p[i] for p, i in zip(proposals, pos)]
        logits = self._mask_logits(features, boxes, image_sizes)
        return mask_loss(
            logits,
            boxes,
            [t["masks"] for t in targets],
            [t["labels"] for t in targets],
            [m[i] for m, i in zip(matched, pos)],
        )

    def compute_loss(self, class_logits, box_regression, proposals, labels, matched_gt) -> dict:
        labels = torch.cat(labels)
        pos = torch.where(labels > 0)[0]  # a host sync: the positives' class-specific boxes
        targets = self.box_coder.encode_single(
            torch.cat(matched_gt)[pos], torch.cat(proposals)[pos]
        )
        pred = box_regression.reshape(labels.shape[0], box_regression.shape[1] // 4, 4)[
            pos, labels[pos]
        ]
        box = det_utils.box_regression_loss(pred, targets, self.box_loss, self.sigma)
        cls = det_utils.classification_loss(class_logits, labels, self.cls_loss, self.focal_gamma)
        return {"loss_classifier": cls, "loss_box_reg": box / max(labels.numel(), 1)}

    def postprocess_detections(self, class_logits, box_regression, proposals, image_sizes):
        num_classes = class_logits.shape[-1]
        counts = [p.shape[0] for p in proposals]
        pred_boxes = self.box_coder.decode_single(box_regression, torch.cat(proposals))
        pred_boxes = pred_boxes.reshape(sum(counts), num_classes, 4)
        pred_scores = F.softmax(class_logits, -1)
        out_b, out_s, out_l = [], [], []
        for boxes, scores, size in zip(
            pred_boxes.split(counts), pred_scores.split(counts), image_sizes
        ):
            boxes = clip_boxes_to_image(boxes.reshape(-1, 4), size).reshape(boxes.shape)
            labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
            # drop the background column, then flatten: one candidate per (RoI, class)
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores, labels = scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            # the score threshold and remove_small_boxes as one mask: one size read back
            keep = torch.where((scores > self.score_thresh) & det_utils.large_enough(boxes, 1e-2))[
                0
            ]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            # host syncs left per image: the mask's count above and NMS's (data-sized outputs)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out_b.append(boxes[keep])
            out_s.append(scores[keep])
            out_l.append(labels[keep])
        return out_b, out_s, out_l
