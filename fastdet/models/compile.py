"""torch.compile for fastdet's models, in place (state_dict keys unchanged, checkpoints as they
were).

Inference: every fastdet op is a torch custom op with a fake implementation, so a detector in
eval mode traces whole, one graph: the data-dependent sizes (NMS's kept boxes,
remove_small_boxes, the score threshold) become unbacked sizes instead of graph breaks. That
needs two dynamo settings, applied only around the compiled model's calls (the process-wide
settings are left as they are): capture_dynamic_output_shape_ops and capture_scalar_outputs.

Training: the step's sampled RoIs have data-dependent counts that reach the backward pass as
size expressions (e.g. Min(128, u3) positives), which inductor's backward code generation
cannot bind (torch 2.14; pytorch/pytorch#167012 is the same limitation). So in training mode
a detector runs its data-dependent middle (anchors, proposal filtering, matching, sampling:
fastdet's kernels, a few percent of the step) eagerly and its static parts compiled: the
backbone with its FPN, the RPN head and the box (and mask) heads, each one graph."""

from __future__ import annotations

import torch

DYNAMO_SETTINGS = {"capture_dynamic_output_shape_ops": True, "capture_scalar_outputs": True}
# the modules of a detector compiled one by one for training (attribute paths; absent ones skipped)
STATIC_PARTS = (
    "backbone",
    "rpn.head",
    "roi_heads.box_head",
    "roi_heads.box_predictor",
    "roi_heads.mask_head",
    "roi_heads.mask_predictor",
)


class _Whole:
    """The compiled model's call: under DYNAMO_SETTINGS (dynamo traces, and retraces, inside the
    call, so the settings hold exactly while it may); in training mode, the eager call, whose
    static parts run compiled (see STATIC_PARTS), when the model has them."""

    def __init__(self, model, compiled, regional: bool):
        self.model, self.compiled, self.regional = model, compiled, regional

    def __call__(self, *args, **kwargs):
        if self.regional and self.model.training:
            return self.model._call_impl(*args, **kwargs)
        with torch._dynamo.config.patch(**DYNAMO_SETTINGS):
            return self.compiled(*args, **kwargs)


class _Part:
    """A static part's call: compiled on its own, traced inline while the whole model is
    being compiled (one graph, no nested compilation)."""

    def __init__(self, module, compiled):
        self.module, self.compiled = module, compiled

    def __call__(self, *args, **kwargs):
        if torch.compiler.is_compiling():
            return self.module._call_impl(*args, **kwargs)
        return self.compiled(*args, **kwargs)


def compile_model(model: torch.nn.Module, fullgraph: bool = True, **options) -> torch.nn.Module:
    """Compiles `model` in place with torch.compile (as nn.Module.compile: the module keeps its
    parameters, state_dict keys and methods; calling it runs compiled code) and returns it.
    A detector (a module with a `roi_heads`) trains with its static parts compiled (see the
    module's docstring). options: torch.compile's (mode, backend, dynamic, options). The first
    call of each mode traces and compiles (tens of seconds to minutes on a CPU)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"compile_model needs a torch.nn.Module, got {type(model).__name__}")
    if _part(model, "roi_heads.mask_head") is not None:
        # inductor's channels_last choice for the mask head's convolutions over an unbacked
        # RoI count fails its own stride assertion at run time (torch 2.14): keep the layout
        options["options"] = {"layout_optimization": False, **options.get("options", {})}
    parts = [_part(model, p) for p in STATIC_PARTS] if hasattr(model, "roi_heads") else []
    for part in filter(None, parts):
        part._compiled_call_impl = _Part(
            part, torch.compile(part._call_impl, fullgraph=fullgraph, **options)
        )
    compiled = torch.compile(model._call_impl, fullgraph=fullgraph, **options)
    model._compiled_call_impl = _Whole(model, compiled, regional=any(parts))
    return model


def _part(model, path: str):
    for name in path.split("."):
        model = getattr(model, name, None)
    return model


def is_compiled(model: torch.nn.Module) -> bool:
    return getattr(model, "_compiled_call_impl", None) is not None
