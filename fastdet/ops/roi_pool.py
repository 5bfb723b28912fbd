"""roi_pool and RoIPool (Girshick, Fast R-CNN): torchvision's semantics and arguments.

Each RoI's corners are scaled by spatial_scale and rounded (half away from zero); a malformed
RoI becomes 1x1; bin (ph, pw) takes the maximum over rows [floor(ph * bin_h), ceil((ph + 1) *
bin_h)) and the matching columns, offset by the RoI's start and clipped to the map (torchvision's
rounding exactly). An empty bin gives 0 and no gradient; ties send the gradient to the first
maximum in row-major order.

input [N, C, H, W]; boxes either [K, 5] (batch index, x1, y1, x2, y2) or a list of N [Ki, 4];
output [K, C, PH, PW]. The CPU backward is deterministic (threads own channels); the CUDA one adds
with float atomics, as torchvision's, and so raises under torch.use_deterministic_algorithms(True)
(warns with warn_only=True).

Differences from torchvision.ops: batch indices outside [0, N) raise on the CPU and give zeros
on the GPU (torchvision reads out of bounds). spatial_scale must be finite and > 0, as roi_align's
(torchvision takes NaN, and None fails in float()).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from . import _arrays as arrays
from .roi_align import _checked_inputs, _in_compute_dtype, _kernel_args, _output, _spatial_scale


def _forward(x, rois, scale, ph, pw, with_argmax=True):
    """out and argmax (None without with_argmax: calls that will run no backward)."""
    out = _output("roi_pool", x, rois, ph, pw)
    K, C = out.shape[:2]
    argmax = arrays.empty(x, (K, C, ph, pw), np.int32) if with_argmax else None
    if K and C:
        args = _kernel_args(x, x.shape, rois, ph, pw, scale)
        argmax_ptr = 0 if argmax is None else arrays.ptr(argmax)
        arrays.launch(x, "roi_pool_forward", *args, arrays.ptr(out), argmax_ptr)
    return out, argmax


def _backward(g, rois, argmax, N, C, H, W):
    K, _, ph, pw = g.shape
    if arrays.is_cuda(g) and torch.are_deterministic_algorithms_enabled():
        msg = "fastdet roi_pool's CUDA backward adds with float atomics (not deterministic)"
        if not torch.is_deterministic_algorithms_warn_only_enabled():
            raise RuntimeError(msg + "; the CPU backward is deterministic")
        warnings.warn(msg, stacklevel=3)
    gin = arrays.empty(g, (N, C, H, W))
    inputs = (arrays.dtype_code(g), arrays.ptr(g), arrays.ptr(argmax), arrays.ptr(rois))
    arrays.launch(g, "roi_pool_backward", *inputs, K, N, C, H, W, ph, pw, arrays.ptr(gin))
    return gin


@torch.library.custom_op("fastdet::roi_pool", mutates_args=())
def _roi_pool_op(
    input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int
) -> tuple[Tensor, Tensor]:
    # Any float dtype: float16/bfloat16 are computed in float32, as the public roi_pool does.
    x, r = _in_compute_dtype(input, rois)
    out, argmax = _forward(x, r, spatial_scale, pooled_height, pooled_width)
    return out.to(input.dtype), argmax


@_roi_pool_op.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width):
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int32)


@torch.library.custom_op("fastdet::roi_pool_backward", mutates_args=())
def _roi_pool_backward_op(
    grad: Tensor,
    rois: Tensor,
    argmax: Tensor,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
) -> Tensor:
    g, r = _in_compute_dtype(grad, rois)
    gin = _backward(g, r, argmax.to(torch.int32).contiguous(), batch_size, channels, height, width)
    return gin.to(grad.dtype)


@_roi_pool_backward_op.register_fake
def _(grad, rois, argmax, batch_size, channels, height, width):
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    x, rois, *_ = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(rois, output[1])
    ctx.shape = tuple(x.shape)


def _grad(ctx, grad, _grad_argmax):
    rois, argmax = ctx.saved_tensors
    gin = _roi_pool_backward_op(grad, rois, argmax, *ctx.shape)
    return gin, None, None, None, None


torch.library.register_autograd("fastdet::roi_pool", _grad, setup_context=_setup_context)


@torch.fx.wrap  # a leaf of torch.fx traces (as torchvision's): its checks read real values
def roi_pool(input, boxes, output_size, spatial_scale: float = 1.0):
    """RoIPool: [N, C, H, W] features and boxes -> [K, C, PH, PW] (torchvision.ops.roi_pool)."""
    x, rois, ph, pw = _checked_inputs(input, boxes, output_size)
    args = (_spatial_scale(spatial_scale), ph, pw)
    if isinstance(x, Tensor) and not arrays.eager(x, rois):
        out = _roi_pool_op(x, rois, *args)[0]
    else:  # numpy, cupy, or the eager fast path: the op's own function, without the dispatcher
        out = _forward(x, rois, *args, with_argmax=False)[0]
    return arrays.cast(out, input)


class RoIPool(nn.Module):
    """Module form of roi_pool, as torchvision.ops.RoIPool."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input, rois):
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
