"""roi_align and RoIAlign (He et al., Mask R-CNN): torchvision's semantics and arguments.

The CPU backward is race-free and deterministic (threads own channels). On the GPU there are
three backwards. "shared" (the default) sums each RoI over its footprint in shared memory and
adds each touched pixel once with an atomicAdd: 0.71x / 0.73x the time of "atomic" (one
atomicAdd per bilinear tap, as torchvision) at 1,000 / 5,000 FPN RoIs on an H200
(benchmarks/results); both are run-to-run variable in the last bits. Choose with
CUDA_BACKWARD. The deterministic one (fixed-point sums, bit-identical run to run) is used under
torch.use_deterministic_algorithms(True) (where torchvision's raises) or with
DETERMINISTIC_CUDA_BACKWARD = True, whatever CUDA_BACKWARD says; it costs about 2x the atomic
one, past the 1.5x we accept for a default.

input [N, C, H, W]; boxes either [K, 5] (batch index, x1, y1, x2, y2) or a list of N [Ki, 4];
output [K, C, PH, PW]. `aligned=True` shifts by half a pixel (the correct alignment);
sampling_ratio <= 0 samples ceil(roi size / output size) points per bin, > 0 that many (at most
MAX_SAMPLING_RATIO = 1024 per axis; more raises ValueError). spatial_scale must be finite and
> 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from . import _arrays as arrays

# True: always the deterministic CUDA backward; False: only under use_deterministic_algorithms.
DETERMINISTIC_CUDA_BACKWARD = False
# The non-deterministic CUDA backward: "shared" (per-RoI shared-memory sums, one atomicAdd per
# touched pixel) or "atomic" (one atomicAdd per tap).
CUDA_BACKWARD = "shared"
_CUDA_BACKWARDS = ("atomic", "shared")


def _output(op: str, x, rois, ph, pw):
    """op's [K, C, PH, PW] output buffer, after the checks of its batch indices and size."""
    N, C, _, _ = x.shape
    shape = (rois.shape[0], C, ph, pw)
    _check_rois(rois, N)
    arrays.check_output_size(op, shape, x)
    return arrays.empty(x, shape)


def _kernel_args(t, nchw, rois, ph, pw, scale) -> tuple:
    """The leading arguments of the roi_align kernels and of roi_pool's forward: t (features or
    their gradient), the features' [N, C, H, W], the rois and the bins."""
    k = rois.shape[0]
    return (arrays.dtype_code(t), arrays.ptr(t), *nchw, arrays.ptr(rois), k, ph, pw, scale)


def _forward(x, rois, scale, ph, pw, sr, aligned):
    out = _output("roi_align", x, rois, ph, pw)
    K = rois.shape[0]
    if K and arrays.numel(x):
        args = _kernel_args(x, x.shape, rois, ph, pw, scale)
        arrays.launch(x, "roi_align_forward", *args, sr, aligned, arrays.ptr(out))
    elif K:
        out[...] = 0
    return out


def _backward(g, rois, scale, ph, pw, nchw, sr, aligned):
    N, C, H, W = nchw
    K = rois.shape[0]
    gin = arrays.empty(g, (N, C, H, W))
    if not (K and N * C * H * W):
        gin[...] = 0
        return gin
    extra = ()
    if arrays.is_cuda(g):
        if CUDA_BACKWARD not in _CUDA_BACKWARDS:
            raise ValueError(
                f"fastdet.ops.roi_align.CUDA_BACKWARD must be one of "
                f"{_CUDA_BACKWARDS}, got {CUDA_BACKWARD!r}"
            )
        det = DETERMINISTIC_CUDA_BACKWARD or torch.are_deterministic_algorithms_enabled()
        nbytes = arrays.cuda_module().roi_align_backward_workspace_bytes(N, C, H, W, det)
        ws = arrays.empty(g, (max(nbytes, 1),), np.uint8)
        extra = (det, CUDA_BACKWARD == "shared", arrays.ptr(ws), nbytes)
    args = _kernel_args(g, nchw, rois, ph, pw, scale)
    arrays.launch(g, "roi_align_backward", *args, sr, aligned, arrays.ptr(gin), *extra)
    return gin


def _check_rois(rois, N):
    """Batch indices must name an image: checked on the CPU (on the GPU it would need a sync)."""
    if arrays.is_cuda(rois) or rois.shape[0] == 0:
        return
    arrays.check_finite(rois, "boxes")
    idx = (rois.numpy() if isinstance(rois, Tensor) else rois)[:, 0]  # numpy: less overhead
    if idx.shape[0] <= 32:  # a few RoIs: Python floats beat numpy's reductions (~1 vs ~5 us)
        vals = idx.tolist()
        lo, hi = min(vals), max(vals)
        whole = all(v.is_integer() for v in vals)
    else:
        lo, hi = idx.min(), idx.max()
        whole = (np.floor(idx) == idx).all()
    if lo < 0 or hi >= N or not whole:
        raise ValueError(
            f"boxes[:, 0] must hold integer batch indices in [0, {N}), "
            f"got values in [{float(lo)}, {float(hi)}]"
        )


def _in_compute_dtype(t, rois):
    """t (features or gradient) and rois in t's compute dtype (float16/bfloat16: float32)."""
    dt = arrays.compute_dtype(t)
    return arrays.prepare(t, dt), arrays.prepare(rois, dt)


@torch.library.custom_op("fastdet::roi_align", mutates_args=())
def _roi_align_op(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    # Any float dtype: float16/bfloat16 are computed in float32 and rounded once, as the
    # public roi_align does.
    x, r = _in_compute_dtype(input, rois)
    out = _forward(x, r, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    return out.to(input.dtype)


@_roi_align_op.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@torch.library.custom_op("fastdet::roi_align_backward", mutates_args=())
def _roi_align_backward_op(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    g, r = _in_compute_dtype(grad, rois)
    nchw = (batch_size, channels, height, width)
    gin = _backward(g, r, spatial_scale, pooled_height, pooled_width, nchw, sampling_ratio, aligned)
    return gin.to(grad.dtype)


@_roi_align_backward_op.register_fake
def _(
    grad,
    rois,
    spatial_scale,
    pooled_height,
    pooled_width,
    batch_size,
    channels,
    height,
    width,
    sampling_ratio,
    aligned,
):
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    x, rois, scale, ph, pw, sr, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (scale, ph, pw, *x.shape, sr, aligned)


def _grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    scale, ph, pw, N, C, H, W, sr, aligned = ctx.args
    gin = _roi_align_backward_op(grad, rois, scale, ph, pw, N, C, H, W, sr, aligned)
    return gin, None, None, None, None, None, None


torch.library.register_autograd("fastdet::roi_align", _grad, setup_context=_setup_context)


def _to_rois(boxes, dtype, like):
    """[K, 5] rois of `dtype` from a [K, 5] array or a list of per-image [Ki, 4] arrays."""
    if isinstance(boxes, (list, tuple)):
        plain = type(like) is Tensor
        for i, b in enumerate(boxes):
            if not (plain and type(b) is Tensor and b.device == like.device):
                arrays.same_kind(input=like, **{f"boxes[{i}]": b})  # the error, or another kind
            arrays.check_float(b, f"boxes[{i}]")
            if b.ndim != 2 or b.shape[1] != 4:
                arrays.check_shape(b, f"boxes[{i}]", 4, 2, "[Ki, 4]", arrays.RoIBoxesError)
        if isinstance(like, Tensor):
            # each image's boxes with its index padded in front: one op per image (a third of
            # full_like + cat's time on a tiny call)
            parts = [
                torch.constant_pad_nd(b.to(dtype), (1, 0), float(i)) for i, b in enumerate(boxes)
            ]
            if len(parts) == 1:
                return parts[0]
            return torch.cat(parts, 0) if parts else like.new_zeros((0, 5), dtype=dtype)
        mod = np if isinstance(like, np.ndarray) else arrays._cupy()
        parts = [
            mod.concatenate([mod.full((len(b), 1), i, dtype=dtype), b.astype(dtype)], 1)
            for i, b in enumerate(boxes)
        ]
        return mod.concatenate(parts, 0) if parts else mod.zeros((0, 5), dtype=dtype)
    if not (type(boxes) is Tensor and type(like) is Tensor and boxes.device == like.device):
        arrays.same_kind(input=like, boxes=boxes)  # the error, or another kind
    arrays.check_float(boxes, "boxes")
    arrays.check_shape(
        boxes,
        "boxes",
        5,
        2,
        "[K, 5] (batch index, x1, y1, x2, y2) or a list of [Ki, 4]",
        arrays.RoIBoxesError,
    )
    return arrays.prepare(boxes, dtype)


def _pair(output_size):
    if type(output_size) is int and 1 <= output_size <= 2**31 - 1:  # the common case, at once
        return output_size, output_size
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(
                f"output_size must be an int or (height, width), got {tuple(output_size)}"
            )
        sizes = output_size
    else:
        sizes = (output_size, output_size)
    # At most INT_MAX: the CUDA kernels index bins with int.
    ph, pw = (arrays.check_int(v, "output_size", maximum=2**31 - 1) for v in sizes)
    if ph < 1 or pw < 1:
        raise ValueError(f"output_size must be positive, got {(ph, pw)}")
    return ph, pw


def _checked_inputs(input, boxes, output_size):
    """roi_align's and roi_pool's checked arguments: features and rois of the compute dtype, and
    the output's height and width."""
    arrays.kind(input, "input")
    arrays.check_float(input, "input")
    if input.ndim != 4:
        raise arrays.ShapeError(f"input must have shape [N, C, H, W], got {tuple(input.shape)}")
    ph, pw = _pair(output_size)
    dt = arrays.compute_dtype(input)
    x = arrays.prepare(input, dt)
    rois = _to_rois(boxes, dt, input)
    return x, rois, ph, pw


# Explicit sampling_ratio costs (PH + PW) * sampling_ratio taps per RoI on the CPU and
# PH * PW * sampling_ratio^2 samples on the GPU: 2^31 would run for minutes on a few RoIs.
MAX_SAMPLING_RATIO = 1024


def _spatial_scale(value) -> float:
    # A scale <= 0 mirrors or collapses every RoI, which no feature map means (torchvision's
    # CPU kernel fails on some such RoIs: "cannot create std::vector larger than max_size()").
    scale = arrays.check_real(value, "spatial_scale", finite=True)
    if not scale > 0:
        raise ValueError(f"spatial_scale must be > 0, got {scale}")
    return scale


def _sampling_ratio(value) -> int:
    sr = arrays.check_int(value, "sampling_ratio", maximum=MAX_SAMPLING_RATIO)
    return sr if sr > 0 else -1  # every value <= 0 means adaptive; -1 fits the int64 schema


@torch.fx.wrap  # a leaf of torch.fx traces (as torchvision's): its checks read real values
def roi_align(
    input,
    boxes,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
):
    """RoIAlign: [N, C, H, W] features and boxes -> [K, C, PH, PW] (torchvision.ops.roi_align)."""
    x, rois, ph, pw = _checked_inputs(input, boxes, output_size)
    args = (
        _spatial_scale(spatial_scale),
        ph,
        pw,
        _sampling_ratio(sampling_ratio),
        arrays.check_bool(aligned, "aligned"),
    )
    if isinstance(x, Tensor) and not arrays.eager(x, rois):
        out = _roi_align_op(x, rois, *args)
    else:  # numpy, cupy, or the eager fast path: the op's own function, without the dispatcher
        out = _forward(x, rois, *args)
    return arrays.cast(out, input)


class RoIAlign(nn.Module):
    """Module form of roi_align, as torchvision.ops.RoIAlign."""

    def __init__(
        self, output_size, spatial_scale: float, sampling_ratio: int, aligned: bool = False
    ):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input, rois):
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
