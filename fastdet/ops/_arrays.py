"""Array plumbing shared by the ops: torch tensors, numpy arrays and cupy arrays in, the same
kind out. Kernels receive raw pointers; outputs are allocated by the input's own framework."""

from __future__ import annotations

import math
import operator
import os

import numpy as np
import torch

from .._ext import _C

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NP_FLOATS = (np.float16, np.float32, np.float64)
_INTS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class ShapeError(ValueError, RuntimeError):
    """A bad shape where torchvision's kernels raise RuntimeError (NMS, box ops): code written
    for either library catches it."""


class RoIBoxesError(ValueError, AssertionError):
    """Boxes of roi_align / roi_pool of the wrong shape, where torchvision asserts."""


def kind(x, name: str) -> str:
    if isinstance(x, torch.Tensor):
        return "torch"
    if isinstance(x, np.ndarray):
        return "numpy"
    if type(x).__module__.split(".")[0] == "cupy":
        return "cupy"
    raise TypeError(
        f"{name} must be a torch.Tensor, numpy.ndarray or cupy.ndarray, got {type(x).__name__}"
    )


def same_kind(**arrays) -> str:
    """The common kind of the named arrays; TypeError or ValueError naming the odd one out."""
    it = iter(arrays.values())
    first = next(it)
    if type(first) is torch.Tensor:  # the common case first, without the dicts below
        dev = first.device
        if all(type(a) is torch.Tensor and a.device == dev for a in it):
            return "torch"
    kinds = {n: kind(a, n) for n, a in arrays.items()}
    first = next(iter(kinds))
    for n, k in kinds.items():
        if k != kinds[first]:
            raise TypeError(
                f"{n} is a {k} array but {first} is a {kinds[first]} array; pass one kind"
            )
    devs = {n: device_of(a) for n, a in arrays.items()}
    for n, d in devs.items():
        if d != devs[first]:
            raise ValueError(f"{n} is on {d} but {first} is on {devs[first]}; expected one device")
    return kinds[first]


def device_of(x) -> str:
    if isinstance(x, torch.Tensor):
        return str(x.device)
    if isinstance(x, np.ndarray):
        return "cpu"
    return f"cuda:{x.device.id}"


def is_cuda(x) -> bool:
    return x.is_cuda if isinstance(x, torch.Tensor) else not isinstance(x, np.ndarray)


def check_float(x, name: str) -> None:
    dt = x.dtype
    ok = dt in _FLOATS if isinstance(x, torch.Tensor) else np.dtype(dt).type in _NP_FLOATS
    if not ok:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {dt}")


def is_int(x) -> bool:
    """An integer (not bool) array."""
    if isinstance(x, torch.Tensor):
        return x.dtype in _INTS
    return np.dtype(x.dtype).kind in "iu"


def check_float_or_int(x, name: str) -> None:
    if not is_int(x):
        try:
            check_float(x, name)
        except TypeError:
            raise TypeError(
                f"{name} must be float16, bfloat16, float32, float64 or an integer type, "
                f"got {x.dtype}"
            ) from None


def check_shape(
    x, name: str, last: int | None = 4, ndim: int = 2, what: str = "[N, 4]", error=ShapeError
) -> None:
    if x.ndim != ndim or (last is not None and x.shape[-1] != last):
        raise error(f"{name} must have shape {what}, got {tuple(x.shape)}")


def check_boxes(x, name: str) -> None:
    check_float(x, name)
    check_shape(x, name)


def check_scores(boxes, scores, name: str = "scores") -> None:
    """scores: float [N] with N = len(boxes)."""
    check_float(scores, name)
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ShapeError(
            f"{name} must have shape [N] with N = {boxes.shape[0]} (boxes), "
            f"got {tuple(scores.shape)}"
        )


def check_threshold(value, name: str = "iou_threshold") -> float:
    """value as a float; NaN raises (it would compare false with everything)."""
    return check_real(value, name)


def prepare_boxes_scores(boxes, scores, **more):
    """Checks boxes [N, 4] and scores [N] (and that `more` arrays are of their kind and device);
    returns both contiguous in their common compute dtype."""
    same_kind(boxes=boxes, scores=scores, **more)
    check_boxes(boxes, "boxes")
    check_scores(boxes, scores)
    dt = compute_dtype(boxes, scores)
    return prepare(boxes, dt), prepare(scores, dt)


def compute_dtype(*xs):
    """float64 if any input is float64, else float32 (float16/bfloat16 compute in float32)."""
    if isinstance(xs[0], torch.Tensor):
        for x in xs:
            if x.dtype is torch.float64:  # dtypes are singletons
                return torch.float64
        return torch.float32
    return np.float64 if any(native_dtype(x.dtype) == np.float64 for x in xs) else np.float32


def prepare(x, dtype):
    """Contiguous and of `dtype`; no copy when it already is."""
    if isinstance(x, torch.Tensor):
        if x.dtype is dtype and x.is_contiguous():
            return x
        return x.to(dtype).contiguous()
    mod = np if isinstance(x, np.ndarray) else _cupy()
    return mod.ascontiguousarray(x, dtype=dtype)


def cast(x, like):
    """x converted back to like's dtype (float16 in, float16 out)."""
    if x.dtype == like.dtype:
        return x
    if isinstance(x, torch.Tensor):
        return x.to(like.dtype)
    return x.astype(native_dtype(like.dtype), copy=False)  # native out, whatever came in


# Looked up once: the kernels take the enum member itself (a scoped enum refuses ints).
_DTYPE_OF_SIZE = {4: _C.DType.float32, 8: _C.DType.float64}


_KERNEL_FLOATS = (torch.float32, torch.float64)
_CODE_OF = {torch.float32: _C.DType.float32, torch.float64: _C.DType.float64}


def dtype_code(x):
    """The _C.DType of x, which must be float32 or float64 (callers convert first)."""
    size = x.element_size() if isinstance(x, torch.Tensor) else x.itemsize
    code = _DTYPE_OF_SIZE.get(size)
    if code is None:
        raise TypeError(f"internal: kernel called with {x.dtype}; expected float32 or float64")
    return code


def ptr(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.data_ptr()
    if isinstance(x, np.ndarray):
        return x.ctypes.data
    return x.data.ptr


def empty(like, shape, dtype=None):
    """An uninitialised array of like's kind and device (like's dtype unless given)."""
    if isinstance(like, torch.Tensor):
        dt = (
            dtype if dtype is None or isinstance(dtype, torch.dtype) else _TORCH_OF[np.dtype(dtype)]
        )
        return torch.empty(shape, dtype=dt or like.dtype, device=like.device)
    dt = dtype if dtype is not None else like.dtype
    if isinstance(dt, torch.dtype):
        dt = _NP_OF[dt]
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=dt)
    cp = _cupy()
    with cp.cuda.Device(like.device.id):
        return cp.empty(shape, dtype=dt)


_TORCH_OF = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.uint8): torch.uint8,
}
_NP_OF = {v: k for k, v in _TORCH_OF.items()}


def _cupy():
    import cupy

    return cupy


def to_torch(x):
    """A torch view of a numpy or cupy array (no copy; cupy through DLPack); tensors as they
    are."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if not x.flags.writeable or not x.dtype.isnative or any(st < 0 for st in x.strides):
            x = np.array(x, dtype=x.dtype.newbyteorder("="))  # a copy torch can view
        return torch.from_numpy(x)
    return torch.from_dlpack(x)


def from_torch(t, like):
    """t as an array of like's kind (numpy or cupy; no copy where the framework allows)."""
    if isinstance(like, torch.Tensor):
        return t
    if isinstance(like, np.ndarray):
        return t.numpy()
    return _cupy().from_dlpack(t)


def via_torch(fn, *xs, **kwargs):
    """fn(*xs) for arrays of any kind: numpy and cupy arrays go through torch views and the
    result comes back as their kind. For the ops that are a few framework ops (box_convert,
    masks_to_boxes, the losses)."""
    if len(xs) == 1 and isinstance(xs[0], torch.Tensor):  # the common case, no generator
        return fn(xs[0], **kwargs)
    out = fn(*(to_torch(x) for x in xs), **kwargs)
    return out if isinstance(xs[0], torch.Tensor) else from_torch(out, xs[0])


def cuda_module():
    if not getattr(_C, "with_cuda", False):
        raise RuntimeError(
            "fastdet was built without CUDA kernels; reinstall on a machine with nvcc "
            "(or set FASTDET_CUDA=ON to make a missing nvcc an error)"
        )
    return _C.cuda


def launch(like, name: str, *args):
    """Runs kernel `name` for like's device: _C.cpu.name(*args) or _C.cuda.name(*args, dev,
    stream)."""
    if not is_cuda(like):
        return getattr(_C.cpu, name)(*args)
    mod = cuda_module()
    if isinstance(like, torch.Tensor):
        dev = like.device.index
        stream = torch.cuda.current_stream(like.device).cuda_stream
    else:
        dev = like.device.id
        with _cupy().cuda.Device(dev):
            stream = _cupy().cuda.get_current_stream().ptr
    return getattr(mod, name)(*args, dev, stream)


def workspace(like, fn: str, n: int):
    """(extra kernel arguments, buffer to keep alive): the scratch memory of the GPU's NMS
    kernels, sized by _C.cuda.<fn>(n); nothing on the CPU."""
    if not is_cuda(like):
        return (), None
    nbytes = getattr(cuda_module(), fn)(n)
    ws = empty(like, (max(nbytes, 1),), np.uint8)
    return (ptr(ws), nbytes), ws


def status_error(status: int, what: str) -> Exception:
    """The error a kernel's negative count (a _C.Status) stands for; callers test count < 0
    first, so the usual path pays for no enum comparison."""
    if status == _C.Status.non_finite:
        return ValueError("boxes and scores must be finite: found NaN or inf")
    if status == _C.Status.workspace_too_small:
        return RuntimeError(f"fastdet {what}: workspace too small (status {status})")
    if status == _C.Status.bad_index:
        return ValueError(f"fastdet {what}: an index argument is out of range")
    return RuntimeError(f"fastdet {what}: unknown kernel status {status}")


def numel(x) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else x.size


def check_finite(x, name: str) -> None:
    """NaN or inf raise ValueError. CPU arrays only: on the GPU this would cost a host sync."""
    if type(x) is torch.Tensor:  # the common case in fewer calls (a tiny op's budget)
        if x.is_cuda:
            return
        n = x.numel()
        code = _CODE_OF.get(x.dtype)
        if n and _C.cpu.count_nonfinite(dtype_code(x) if code is None else code, x.data_ptr(), n):
            raise ValueError(f"{name} contains NaN or inf")
        return
    if is_cuda(x) or numel(x) == 0:
        return
    if _C.cpu.count_nonfinite(dtype_code(x), ptr(x), numel(x)):
        raise ValueError(f"{name} contains NaN or inf")


def check_finite_any(x, name: str) -> None:
    """check_finite for arrays of any dtype and layout (integers are finite), through torch:
    for the ops that are a few framework ops. CPU only, as check_finite."""
    if type(x) is torch.Tensor and x.is_cpu and x.dtype in _KERNEL_FLOATS and x.is_contiguous():
        if not _is_compiling():  # the common case in fewer calls
            check_finite(x, name)
        return
    if is_cuda(x) or numel(x) == 0 or is_fake(x) or torch.compiler.is_compiling():
        return  # (torch.compile traces no data: the compiled graph runs unchecked)
    t = to_torch(x)
    if t.dtype in (torch.float32, torch.float64) and t.is_contiguous():
        check_finite(t, name)  # the kernel's single pass: no temporary (4x faster)
    elif (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


# The eager fast path. A public op called on plain torch tensors in eager mode, with no gradient
# wanted, runs its kernel function directly instead of through its torch.library op: the
# dispatcher's layers (autograd, the custom op's Python wrappers, the fake-tensor registry) cost
# more than a tiny call's kernel (10-14 us on the CPU). Anything that watches or transforms the
# call sees the op as before: torch.compile / torch.export / jit tracing, fake, functional or
# other tensor subclasses, dispatch and function modes (make_fx, FakeTensorMode,
# `with torch.device(...)`), functorch transforms (vmap, grad), the profiler (the bench reads
# the ops' events), and autograd when an input requires grad. The kernel functions are the ones
# the ops run, so both paths give the same result bit for bit (tests/ops/test_eager.py).
_tracing_state = torch._C._get_tracing_state
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_modes = torch._C._is_torch_function_mode_enabled
_functorch_level = torch._C._functorch.peek_interpreter_stack
_profiling = torch._C._autograd._profiler_enabled
_grad_enabled = torch.is_grad_enabled
_is_compiling = torch.compiler.is_compiling


def eager(*tensors) -> bool:
    """True when an op may call its kernel function on `tensors` directly (see above): plain
    torch.Tensor objects (no subclass), CPU or CUDA, no tracing, mode or profiler active, and
    no input requiring grad while grad is enabled."""
    grad = False
    for t in tensors:
        if type(t) is not torch.Tensor or not (t.is_cpu or t.is_cuda):
            return False
        grad = grad or t.requires_grad
    return not (
        (grad and _grad_enabled())
        or _is_compiling()
        or _dispatch_modes()
        or _function_modes()
        or _tracing_state() is not None
        or _functorch_level() is not None
        or _profiling()
    )


def is_fake(x) -> bool:
    """True for the fake tensors torch.compile traces with (no data to check)."""
    return isinstance(x, torch.Tensor) and type(x).__name__ == "FakeTensor"


# Scalar arguments, byte order and output sizes: every public op validates through these, so a
# bad value raises naming the argument instead of failing deep in float(), a schema or a kernel.

_INT64_MAX = 2**63 - 1
# Refused where a number is expected: bool is an int to Python but never means one here.
_NOT_NUMBERS = (bool, np.bool_, str, bytes, complex, np.complexfloating)


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _is_bool_array(value) -> bool:
    if isinstance(value, (int, float, torch.SymInt, torch.SymFloat)):
        return False  # (and torch.compile cannot trace getattr on a symbolic size)
    dt = getattr(value, "dtype", None)
    return (
        dt == torch.bool
        if isinstance(dt, torch.dtype)
        else isinstance(dt, np.dtype) and dt.kind in "bc"
    )


def check_real(
    value, name: str, *, finite: bool = False, minimum=None, allow_nan: bool = False
) -> float:
    """value as a float: TypeError unless a real number (bool, str, None refused); ValueError for
    NaN (unless allow_nan), for inf when `finite`, and below `minimum`."""
    if type(value) is float:  # the common case: no conversion to try
        v = value
    elif value is None or isinstance(value, _NOT_NUMBERS) or _is_bool_array(value):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    else:
        try:
            v = float(value)
        except OverflowError:  # an int beyond float's range
            raise ValueError(f"{name} must be a finite number, got {_describe(value)}") from None
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: several values
            raise TypeError(f"{name} must be a real number, got {_describe(value)}") from None
    if math.isnan(v):
        if allow_nan:
            return v
        raise ValueError(f"{name} must be a number, got NaN")
    if finite and math.isinf(v):
        raise ValueError(f"{name} must be a finite number, got {v}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def check_int(value, name: str, *, minimum=None, maximum: int = _INT64_MAX) -> int:
    """value as an int: TypeError unless an integer (float, bool, str, None refused); ValueError
    outside [minimum, maximum]."""
    if type(value) is int:  # the common case (bool is a subclass, not int itself)
        v = value
    elif isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {_describe(value)}")
    else:
        try:
            v = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {_describe(value)}") from None
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def check_bool(value, name: str) -> bool:
    """A bool (or numpy bool): bool("False") is True, so nothing else is coerced."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)


def native_dtype(dt):
    """numpy dtype dt in the machine's byte order: '>f8' computes as float64, not as float32,
    and the kernels (which read native floats) never see swapped bytes. torch dtypes pass."""
    if isinstance(dt, torch.dtype):
        return dt
    dt = np.dtype(dt)
    return dt if dt.isnative else dt.newbyteorder("=")


def same_dtype(a, b) -> bool:
    """a and b hold the same type whatever their byte order ('>f2' and '<f2': True)."""
    return native_dtype(a.dtype) == native_dtype(b.dtype)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no default cap
        return _INT64_MAX


_PHYSICAL_MEMORY = _physical_memory()
MAX_OUTPUT_BYTES_ENV = "FASTDET_MAX_OUTPUT_BYTES"


def max_output_bytes() -> int:
    """The largest output an op allocates: $FASTDET_MAX_OUTPUT_BYTES, read per call, or the
    machine's physical memory."""
    env = os.environ.get(MAX_OUTPUT_BYTES_ENV)
    if not env:
        return _PHYSICAL_MEMORY
    try:
        return int(env)
    except ValueError:
        raise ValueError(
            f"{MAX_OUTPUT_BYTES_ENV} must be a number of bytes (an integer), got {env!r}"
        ) from None


# Below this an output is refused only by a $FASTDET_MAX_OUTPUT_BYTES that is set (no machine
# has less physical memory), so the check reads no more than whether it is.
_SMALL_OUTPUT = 1 << 20


# os.environ's own mapping, keyed as it keys it: `in os.environ` costs ~1 us (it encodes the
# key on every call), this ~50 ns; it sees what is set through os.environ (as monkeypatch).
try:
    _ENV, _ENV_KEY = os.environ._data, os.environ.encodekey(MAX_OUTPUT_BYTES_ENV)
except AttributeError:  # pragma: no cover - another Python's os.environ
    _ENV, _ENV_KEY = os.environ, MAX_OUTPUT_BYTES_ENV


def _cap_set() -> bool:
    return _ENV_KEY in _ENV


def check_output_size(op: str, shape, like) -> None:
    """Refuses, before allocating, an output whose element count overflows int64 or whose bytes
    exceed max_output_bytes(): a clear ValueError instead of an allocator's error, a wrapped
    size, or minutes of swapping."""
    count = 1
    for s in shape:
        count *= int(s)
    nbytes = count * (like.element_size() if isinstance(like, torch.Tensor) else like.itemsize)
    if nbytes <= _SMALL_OUTPUT and not _cap_set():  # a small output and the default cap
        return
    shape = tuple(int(s) for s in shape)
    if count > _INT64_MAX:
        raise ValueError(
            f"{op}: the output shape {shape} has {count} elements, more than int64 can count"
        )
    cap = max_output_bytes()
    if nbytes > cap:
        raise ValueError(
            f"{op}: the output of shape {shape} would take {nbytes} bytes, more than the "
            f"{cap} allowed; set {MAX_OUTPUT_BYTES_ENV} (bytes; default: physical memory) "
            "to raise the limit"
        )


# Beyond these, an area ((2L)^2) plus another (a union, up to 8 L^2) overflows the compute dtype
# and an IoU would come out 0 where it is not (torchvision: NaN): 8 * 2^124 < 2^128 in float32,
# 8 * 2^1020 < 2^1024 in float64. float16 and bfloat16 compute in float32, far inside.
COORDINATE_LIMIT = {4: 2.0**62, 8: 2.0**510}


def check_coordinates(x, name: str) -> None:
    """check_finite, and coordinates beyond COORDINATE_LIMIT raise too, in the same single
    pass. CPU arrays only, as check_finite."""
    if is_cuda(x):
        return
    n = numel(x)
    if n == 0:
        return
    size = x.element_size() if isinstance(x, torch.Tensor) else x.itemsize
    limit = COORDINATE_LIMIT[size]
    if _C.cpu.count_beyond(dtype_code(x), ptr(x), n, limit):
        check_finite(x, name)  # NaN or inf: that message
        dt = "float32" if size == 4 else "float64"
        raise ValueError(
            f"{name} has coordinates beyond +-{limit:.3g} (2^{int(math.log2(limit))}), where "
            f"{dt} areas overflow and IoU is undefined"
            + ("; pass float64 boxes" if size == 4 else "")
        )


def fake_indices(like: torch.Tensor) -> torch.Tensor:
    """The fake output of an op returning int64 indices [K] whose K depends on the data (NMS,
    remove_small_boxes): an unbacked size for torch.compile / torch.export."""
    k = torch.library.get_ctx().new_dynamic_size()
    return like.new_empty((k,), dtype=torch.int64)
