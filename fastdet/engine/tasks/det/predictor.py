"""The detection predictor: a checkpoint loaded once (with its operating point, the gate,
test-time augmentation and ensemble members) that predicts batches of images exactly as
`fastdet predict det` does; the command runs it over archives (det.archive).

    from fastdet.engine.tasks.det.predictor import Detector

    detector = Detector("run/best.pt")          # the stored operating point applies
    preds = detector.predict([image_a, image_b])  # [C, H, W] or [H, W] arrays, file units
    preds[0]["boxes"], preds[0]["scores"], preds[0]["labels"]

Images of one batch go through the model together; the model pads a batch to its largest
image, so images of different sizes in one batch may differ in the last digits from one by one
(GroupNorm statistics include the padding): archives of one image size are unaffected."""

from __future__ import annotations

from ...loading import load_task_checkpoint, load_task_model
from ...trainer import resolve_device
from .data import prepare_image
from .ensemble import check_members, parse_tta, predict_fused
from .gate import above, apply_gate, gate_keeps, load_gate
from .point import OperatingPoint, apply_point, permissive, stored_point
from .task import DetTask, has_masks, predict_detections

UNSET = object()  # --containment not given (None means "off")


def read_detector(path, device="cpu", **speed) -> tuple:
    """(eval-mode model, config, its stored operating point or None: none for Mask R-CNN) of
    a detection checkpoint, the file read once; the model as configured."""
    model, config, ckpt = load_task_checkpoint(DetTask, path, device, **speed)
    return model, config, None if has_masks(config.model) else stored_point(ckpt)


def load_detector_at_point(path, device="cpu", **speed) -> tuple:
    """read_detector; with a point, the model runs with the permissive NMS and cap the
    point's own follow."""
    model, config, point = read_detector(path, device, **speed)
    if point is not None:
        permissive(model)
    return model, config, point


class Detector:
    """A detection checkpoint ready to predict. score_threshold, nms_iou, containment,
    max_boxes: override the stored operating point's parts (raw: the model as configured);
    gate: a classification checkpoint whose P(positive) below its threshold (or
    gate_threshold) drops an image's boxes; tta, ensemble, fuse, fuse_iou, fuse_skip: as the
    command's flags; bf16, channels_last: the models' speed options."""

    def __init__(
        self,
        checkpoint,
        device="auto",
        *,
        score_threshold=None,
        nms_iou=None,
        containment=UNSET,
        max_boxes=None,
        raw=False,
        gate=None,
        gate_threshold=None,
        tta=None,
        ensemble=(),
        fuse="wbf",
        fuse_iou=0.55,
        fuse_skip=0.0,
        bf16=False,
        channels_last=False,
    ):
        self.device = resolve_device(device)
        self.speed = speed = {"bf16": bf16, "channels_last": channels_last}
        self.sources = {"checkpoint": checkpoint, "gate": gate}
        self.ensemble = list(ensemble)
        model, config, stored = read_detector(checkpoint, self.device, **speed)
        self.model, self.config = model, config
        parts = dict(score_threshold=score_threshold, nms_iou=nms_iou, max_boxes=max_boxes)
        if containment is not UNSET:
            parts["containment"] = containment
        self.point = _resolve_point(model, config, stored, parts, raw)
        self.threshold = 0.5 if score_threshold is None else score_threshold
        self.tta = parse_tta(tta)
        self.members = None
        if self.tta or ensemble:
            self.members = [(model, config)]
            self.members += [load_task_model(DetTask, p, self.device, **speed) for p in ensemble]
            check_members(self.members)
        self.fusion = (fuse, fuse_iou, fuse_skip)
        self.gate = _load_gate(gate, gate_threshold, self.device, speed)

    def predict(self, images: list) -> list[dict]:
        """{"boxes" [D, 4] (the image's pixels), "scores", "labels"[, "masks"]} per image
        (CPU tensors) after the operating point (or the score threshold) and the gate; with a
        gate also "gate": (P(positive), kept, boxes before the gate)."""
        if self.members is not None:
            fuse, iou, skip = self.fusion
            preds = [
                predict_fused(self.members, im, self.tta, fuse, iou, skip, self.device)
                for im in images
            ]
        else:
            prepared = [prepare_image(im, self.config) for im in images]
            preds = predict_detections(self.model, prepared, self.device)
        return [self._finish(p, im) for p, im in zip(preds, images)]

    def _finish(self, pred: dict, image) -> dict:
        pred = apply_point(pred, self.point) if self.point else above(pred, self.threshold)
        if self.gate is None:
            return pred
        p = self.gate.probability(image, self.device)
        before = len(pred["boxes"])
        pred = apply_gate(pred, p, self.gate.threshold)
        return {**pred, "gate": (p, gate_keeps(p, self.gate.threshold), before)}


def _resolve_point(model, config, stored, parts: dict, raw: bool):
    """The operating point to apply: the stored one with the given parts replaced, or one made
    from them (the model's NMS and cap otherwise); None with raw, or without a stored point and
    parts beyond the score threshold (the model as configured). A point sets the model's NMS
    and cap to the permissive ones."""
    parts = {k: v for k, v in parts.items() if v is not None or k == "containment"}
    if has_masks(config.model):
        given = [k for k in ("nms_iou", "containment", "max_boxes") if k in parts]
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise ValueError(
                f"{flags}: the operating point is Faster R-CNN's; Mask R-CNN's instances use "
                "its instance_score and mask_threshold"
            )
        return None
    if raw:
        if len(parts) > ("score_threshold" in parts):
            raise ValueError(
                "--raw runs the model as configured: drop --nms-iou, --containment and --max-boxes"
            )
        return None
    if stored is None and set(parts) <= {"score_threshold"}:
        return None
    heads = model.roi_heads
    base = stored or OperatingPoint(nms_iou=heads.nms_thresh, max_boxes=heads.detections_per_img)
    point = base.replace(**parts)
    permissive(model)
    return point


def _load_gate(path, threshold, device, speed):
    if path is None:
        if threshold is not None:
            raise ValueError("--gate-threshold needs --gate CLS_CKPT")
        return None
    return load_gate(path, device, threshold, **speed)


def detector_from_args(args) -> Detector:
    """The Detector of `predict det` / `evaluate det`'s flags."""
    containment = UNSET if args.containment is None else parse_containment(args.containment)
    return Detector(
        args.checkpoint,
        args.device,
        score_threshold=args.score_threshold,
        nms_iou=args.nms_iou,
        containment=containment,
        max_boxes=args.max_boxes,
        raw=args.raw,
        gate=args.gate,
        gate_threshold=args.gate_threshold,
        tta=args.tta,
        ensemble=args.ensemble or (),
        fuse=args.fuse,
        fuse_iou=args.fuse_iou,
        fuse_skip=args.fuse_skip,
        bf16=args.bf16,
        channels_last=args.channels_last,
    )


def parse_containment(text: str):
    """--containment's value: a fraction, or None for off."""
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"--containment must be a fraction in [0, 1] or off, got {text!r}"
        ) from None
