"""Export of trained models: ONNX (runs in onnxruntime without fastdet) and torch.export (.pt2,
runs with fastdet installed, its custom ops inside).

`export_model(model, path, format, config=...)` writes one graph of a model of any task (of an
engine checkpoint: `fastdet.engine.load_model` gives the model and config, as `fastdet export`
does):

- detection (Faster R-CNN, Mask R-CNN): input `image` float32 [3, H, W] in [0, 1] (the engine's
  prepare_image output; the model resizes and normalizes inside); outputs `boxes` [D, 4]
  (x1, y1, x2, y2, the input image's pixels), `scores` [D], `labels` [D] int64 and, for Mask
  R-CNN, `masks`: in the .pt2 the probabilities pasted into the image, [D, 1, H, W] (torchvision's
  output); in ONNX the unpasted [D, M, M] probabilities in each box (paste_masks has no ONNX
  form). The graph is traced at one image size: H and W are fixed to that of the example image
  (config.min_size square by default; `image_size` to choose).
- every other task (segmentation, classification): input `input` [N, C, H, W] as the engine
  prepares it, output `logits` (segmentation: [N, 1, H, W] logits, sigmoid for probabilities;
  classification: [N, classes]); N dynamic; H and W dynamic in multiples of 2^depth (U-Net) or
  32 (FPN), which the networks take without padding (pad other sizes first), and free for the
  other models where they allow it.

See fastdet.export._onnx for what ONNX's operators do differently.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models.detection.postprocess import point_keep

FORMATS = ("onnx", "pt2")
DET_OUTPUTS = ("boxes", "scores", "labels")


class DetectionGraph(nn.Module):
    """A detector as a graph: image [3, H, W] -> (boxes, scores, labels[, masks]). point: a
    detection checkpoint's operating point (its dict) applied after the model, as `predict det`
    applies it (the model should run with the permissive NMS and cap): NMS per label at
    nms_iou, containment suppression, the first max_boxes, scores >= score_threshold."""

    def __init__(self, model: nn.Module, masks: bool, point: dict | None = None):
        super().__init__()
        self.model, self.masks, self.point = model, masks, point

    def forward(self, image: torch.Tensor):
        out = self.model([image])[0]
        keys = DET_OUTPUTS + (("masks",) if self.masks else ())
        if self.point is not None:
            out = _at_point(out, self.point)
        return tuple(out[k] for k in keys)


def _at_point(out: dict, point: dict) -> dict:
    parts = (point[k] for k in ("nms_iou", "containment", "max_boxes", "score_threshold"))
    keep = point_keep(out["boxes"], out["scores"], out["labels"], *parts)
    return {k: v[keep] for k, v in out.items()}


def _is_detector(model: nn.Module) -> bool:
    return hasattr(model, "roi_heads") and hasattr(model, "rpn")


def _channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__}: no convolution to read the input channels from")
    return first.in_channels


def _size_multiple(model: nn.Module) -> int | None:
    """The multiple of which a segmentation network's H and W are dynamic (U-Net: 2^depth, FPN:
    32): other sizes are padded inside, a branch on the size that one graph cannot hold."""
    from ..models.segmentation.fpn import FPNSeg
    from ..models.segmentation.unet import UNet

    if isinstance(model, UNet):
        return 2**model.depth
    if isinstance(model, FPNSeg):
        return 32
    return None


def _example(model: nn.Module, config, image_size):
    """The example input, its name and the dynamic shapes to ask for."""
    if _is_detector(model):
        side = int(getattr(config, "min_size", 128))
        h, w = image_size or (side, side)
        return torch.rand(3, h, w), "image", None
    net = getattr(model, "generator", model)
    m = _size_multiple(net)
    side = int(getattr(config, "size", 0) or 224)
    h, w = image_size or (side, side)
    if m is not None:  # the example a multiple too
        h, w = max(m, h // m * m), max(m, w // m * m)
    x = torch.randn(2, _channels(net), h, w)
    dims = torch.export.Dim
    if m is None:
        hw = {2: dims.AUTO, 3: dims.AUTO}
    else:
        hw = {2: m * dims("h_blocks"), 3: m * dims("w_blocks")}
    return x, "input", {"x": {0: dims("batch"), **hw}}


class TensorGraph(nn.Module):
    """A tensor-in, tensor-out model (segmentation, classification): x -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(x)


def graph_of(model: nn.Module, fmt: str, point=None) -> tuple[nn.Module, tuple[str, ...]]:
    """(the module to trace, its output names) for a loaded model and a format; point: a
    detector's operating point (dict) to apply inside the graph."""
    if not _is_detector(model):  # U-Net+GAN: the generator segments
        return TensorGraph(getattr(model, "generator", model)), ("logits",)
    masks = hasattr(model, "paste_masks")
    if masks:  # the .pt2 pastes (torchvision's output); ONNX has no pasting: unpasted masks
        model.paste_masks = fmt == "pt2"
    return DetectionGraph(model, masks, point), DET_OUTPUTS + (("masks",) if masks else ())


def export_program(model: nn.Module, config, fmt: str = "pt2", image_size=None, point=None):
    """(torch.export.ExportedProgram, input name, output names) of an eval-mode model; point:
    a detector's operating point (dict), applied inside the graph."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    graph, outputs = graph_of(model.eval(), fmt, point)
    example, name, dynamic = _example(model, config, image_size)
    with torch.no_grad():
        program = torch.export.export(graph, (example,), dynamic_shapes=dynamic, strict=False)
    return program, name, outputs


def export_model(
    model: nn.Module,
    path,
    format: str = "onnx",  # noqa: A002
    image_size=None,
    config=None,
    point=None,
) -> Path:
    """Writes `model` to `path` as ONNX ("onnx", opset 18) or a torch.export ExportedProgram
    ("pt2", torch.export.save); the model is put in eval mode. image_size (H, W): the example
    input's size (detection graphs are fixed to it); without it, the engine config's min_size
    (detection) or size (other tasks), else 128 and 224. point: a detector's operating point
    (dict, as stored in its checkpoint; the model set to the permissive NMS and cap), applied
    inside the graph so a deployed model gives `predict det`'s boxes. Returns the path.
    ValueError for a format or a model that cannot be exported, naming the op."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    program, name, outputs = export_program(model, config, format, image_size, point)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "pt2":
        torch.export.save(program, path)
        return path
    return write_onnx(program, path, name, outputs)


def write_onnx(program, path, input_names, output_names) -> Path:
    """An ExportedProgram with fastdet's ops to an ONNX file of standard operators only;
    input_names: a name or one per input."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            "ONNX export needs onnx and onnxscript: pip install 'fastdet[export]'"
        ) from e
    from . import _onnx

    _onnx.check_translatable(program)
    program = program.run_decompositions(_onnx.decompositions())
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        input_names=[input_names] if isinstance(input_names, str) else list(input_names),
        output_names=list(output_names),
        opset_version=_onnx.OPSET,
        custom_translation_table=_onnx.translation_table(),
        external_data=False,
        verbose=False,
    )
    onnx_program.save(str(path))
    return Path(path)
