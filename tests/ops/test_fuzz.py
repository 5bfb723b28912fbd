"""Property-based fuzzing of every public op against torchvision (or fastdet.ops._reference where
torchvision lacks the op, or to apply a documented difference).

Each example draws arrays (empty, wrong rank or last dim; float16/bfloat16/float32/float64 in
both byte orders, ints, bool, complex; NaN, inf, huge, tiny, inverted and zero-area boxes;
strided, Fortran-ordered, read-only; numpy and torch mixed) and scalar arguments (good ones and
None, str, bool, NaN, inf, negative, huge ints; box formats, reductions). The box ops also get
fmt= (every format torchvision takes, and bad ones), integer boxes and batched [..., N, 4] boxes
with broadcasting leading dimensions; the rotated ops are checked against _reference's polygon
clipping, their NMS also against a greedy pass over box_iou_rotated's own IoUs (which decides
where an IoU is within 1e-4 of the threshold). It passes when fastdet gives the oracle's result
(within the tolerances the op tests use) or, where the input is outside the contract, raises
ValueError/TypeError whose message names an argument. It counts as
- wrong: a result that differs, a result where the contract says raise, or a refusal of a valid
  input (a false "contains NaN", say);
- unclear: any other exception, or an error message that names no argument;
- crash: the process died (segfault, abort) or hung.

The search runs in a child process (this file run as a script), so a crash fails the test
instead of killing pytest; a crashed op is reported and the child restarted for the others.
FASTDET_FUZZ_EXAMPLES sets the examples per op (default 100, about 30 s in all); by hand:

    FASTDET_FUZZ_EXAMPLES=2000 pytest -s tests/ops/test_fuzz.py
    python tests/ops/test_fuzz.py --examples 2000 nms roi_align   # one op's report as JSON
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import traceback

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # long: run first (tests/conftest.py)

OPS = [
    "box_iou",
    "generalized_box_iou",
    "box_area",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "nms",
    "batched_nms",
    "suppress_contained",
    "soft_nms",
    "roi_align",
    "AnchorGenerator",
    "cell_anchors",
    "BoxCoder.encode",
    "BoxCoder.decode",
    "distance_box_iou",
    "complete_box_iou",
    "generalized_box_iou_loss",
    "distance_box_iou_loss",
    "complete_box_iou_loss",
    "roi_pool",
    "box_convert",
    "masks_to_boxes",
    "MultiScaleRoIAlign",
    "box_iou_rotated",
    "nms_rotated",
    "batched_nms_rotated",
    "rotated_to_cxcywhr",
]
EXAMPLES = int(os.environ.get("FASTDET_FUZZ_EXAMPLES", "100"))
# A child that prints nothing for this long is hung (one example takes milliseconds).
HANG_SECONDS = float(os.environ.get("FASTDET_FUZZ_HANG_SECONDS", "120"))

# ============================================================================ the parent (pytest)


def _run_child(ops, examples, results, trace=False):
    """Runs the child over `ops` until it finishes or dies; fills results; returns the ops it
    did not reach. trace: the child prints each example before running it."""
    # The child imports the fastdet this process tests (a worktree's, or an installed one).
    import fastdet

    root = os.path.dirname(os.path.dirname(fastdet.__file__))
    env = dict(os.environ, PYTHONFAULTHANDLER="1", FASTDET_FUZZ_ROOT=root)
    env["FASTDET_FUZZ_TRACE"] = "1" if trace else "0"
    cmd = [sys.executable, __file__, "--examples", str(examples), *ops]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)]).start()
    current, tail = None, []
    while True:
        try:
            line = lines.get(timeout=HANG_SECONDS)
        except queue.Empty:
            proc.kill()
            results[current] = _crash(current, f"hung: no progress for {HANG_SECONDS:.0f} s", tail)
            break
        if line is None:
            break
        if line.startswith("@@START "):
            current, tail = line.split()[1], []
        elif line.startswith("@@RESULT "):
            r = json.loads(line[len("@@RESULT ") :])
            results[r["op"]] = r
            current = None
        else:
            tail = (tail + [line.rstrip()])[-60:]
    rc = proc.wait()
    if current is not None and current not in results:
        results[current] = _crash(current, f"child exited with status {rc}", tail)
    return [op for op in ops if op not in results]


def _crash(op, why, tail):
    return dict(
        op=op, examples=0, ok=0, refused=0, wrong=0, unclear=0, crash=why, error=None, failures=tail
    )


@pytest.fixture(scope="module")
def fuzz_results():
    pytest.importorskip("torchvision")  # the oracle
    pytest.importorskip("hypothesis")
    results: dict = {}
    todo = [*OPS, "_segfault"]  # last: the self-test dies, and no op is left to restart for
    start = time.perf_counter()
    while todo:
        todo = _run_child(todo, EXAMPLES, results)
    for op in OPS:  # a crash: once more, printing each example, to show the one that crashes
        if results[op]["crash"]:
            again: dict = {}
            _run_child([op], EXAMPLES, again, trace=True)
            results[op]["failures"] += ["--- rerun, each example printed first:"]
            results[op]["failures"] += again[op]["failures"] if op in again else []
    seconds = time.perf_counter() - start
    print(f"\nfastdet.ops fuzzing, {EXAMPLES} examples per op, {seconds:.1f} s")
    print(
        f"{'op':24} {'examples':>8} {'ok':>6} {'refused':>7} {'wrong':>5} {'unclear':>7} "
        f"{'s':>5} crash"
    )
    for op in OPS:
        r = results[op]
        print(
            f"{op:24} {r['examples']:8d} {r['ok']:6d} {r['refused']:7d} {r['wrong']:5d} "
            f"{r['unclear']:7d} {r.get('seconds', 0):5.1f} {r['crash'] or 0}"
        )
    return results


def test_a_crash_is_caught(fuzz_results):
    """The self-test op segfaults: the parent reports it and survives."""
    r = fuzz_results["_segfault"]
    crashed = {f"child exited with status -{signal.SIGSEGV}"}
    if "asan" in os.environ.get("LD_PRELOAD", ""):  # AddressSanitizer's SEGV handler exits 1
        crashed.add("child exited with status 1")
    assert r["crash"] in crashed, r
    assert any("Segmentation fault" in line for line in r["failures"]), r["failures"]


@pytest.mark.parametrize("op", OPS)
def test_fuzz(fuzz_results, op):
    r = fuzz_results[op]
    detail = "\n".join(r["failures"])
    assert r["crash"] is None, f"{op} crashed ({r['crash']}); last output:\n{detail}"
    assert r["error"] is None, f"the fuzzer's oracle failed on {op}:\n{r['error']}"
    assert r["wrong"] == 0 and r["unclear"] == 0, f"{op}: {r}\n{detail}"
    assert r["examples"] >= min(EXAMPLES, 20)


# ============================================================================ the child (fuzzer)


class Invalid(Exception):
    """The input is outside the op's contract: the op must raise naming an argument."""


class Outcome:
    ok, refused, wrong, unclear = "ok", "refused", "wrong", "unclear"


NAN, INF = float("nan"), float("inf")
SWAPPED = "<" if sys.byteorder == "big" else ">"  # the non-native byte order
FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
TORCH_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "complex64": torch.complex64,
}
NP_DTYPES = {
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "swapped16": np.dtype(f"{SWAPPED}f2"),
    "swapped32": np.dtype(f"{SWAPPED}f4"),
    "swapped64": np.dtype(f"{SWAPPED}f8"),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
}
SPECIAL = [
    0.0, -0.0, 0.5, 1e-30, 1e-42, 5e-324, 65504.0, 65520.0, 1e19, 6e18, 1e30, 3.4e38, 1e39,
    1e154, 1e300, 1.7e308, NAN, INF, -INF, -1e19, -1e300,
]  # fmt: skip
# Scalar values every op must refuse or handle as torchvision does.
BAD_SCALARS = [None, "0.5", True, NAN, INF, -INF, -1, 0, 2**31, 2**63, 2**100, 1e308, [0.5], 1j]


def _child_main(argv):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, default=EXAMPLES)
    p.add_argument("ops", nargs="*", default=OPS)
    a = p.parse_args(argv)
    fuzzer = _Fuzzer()
    for op in a.ops:
        print(f"@@START {op}", flush=True)
        print("@@RESULT " + json.dumps(fuzzer.run(op, a.examples)), flush=True)


class _Fuzzer:
    def __init__(self):
        global st, hyp, ops, reference, tv
        import hypothesis as hyp
        import torchvision as tv
        from hypothesis import strategies as st

        from fastdet import ops
        from fastdet.ops import _reference as reference

        print(f"@@FASTDET {ops.__file__}", flush=True)

        self.trace = os.environ.get("FASTDET_FUZZ_TRACE") == "1"

    def run(self, op, examples):
        counts = dict(
            op=op, examples=0, ok=0, refused=0, wrong=0, unclear=0, crash=None, error=None
        )
        failures, reasons = [], {}
        case = _CASES[op]

        @hyp.settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hyp.HealthCheck),
            phases=[hyp.Phase.explicit, hyp.Phase.generate],
        )
        @hyp.given(st.data())
        def search(data):
            draw = _Draw(data)
            call, expect, names = case(draw)
            if self.trace:  # the example, before running it: what a crash leaves behind
                print(f"{op}: {draw.log}", flush=True)
            outcome, why = _judge(call, expect, names)
            counts["examples"] += 1
            counts[outcome] += 1
            if outcome == Outcome.refused:  # why, roughly: to see what the search spends time on
                key = re.sub(r"\d+|\(.*", "#", why)[:40]
                reasons[key] = reasons.get(key, 0) + 1
            if outcome in (Outcome.wrong, Outcome.unclear) and len(failures) < 8:
                failures.append(f"{outcome}: {why}\n    example: {draw.log}")

        start = time.perf_counter()
        try:
            search()
        except Exception:  # noqa: BLE001 - a bug in this file's oracle: reported, not fatal
            counts["error"] = traceback.format_exc(limit=-4)
        counts["seconds"] = round(time.perf_counter() - start, 2)
        counts["failures"] = failures
        counts["refusals"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:8])
        return counts


def _judge(call, expect, names):
    """(outcome, why) of one example: call() against expect() (a compare function, or Invalid)."""
    try:
        got = call()
        error = None
    except (ValueError, TypeError) as e:
        got, error = None, e
    except Exception as e:  # noqa: BLE001 - any other exception is an unclear error
        return Outcome.unclear, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"
    try:
        compare = expect()
    except Invalid as why:
        if error is None:
            return Outcome.wrong, f"returned {_short(got)}, but the input is invalid ({why})"
        outcome, text = _named(error, names)
        return outcome, text or str(why)
    if error is not None:
        outcome, text = _named(error, names)
        if outcome == Outcome.unclear:
            return outcome, text
        if getattr(compare, "may_refuse", False):  # e.g. integer boxes: refusing is allowed
            return Outcome.refused, "integers refused"
        return Outcome.wrong, f"refused a valid input: {type(error).__name__}: {error}"
    why = compare(got)
    return (Outcome.ok, "") if why is None else (Outcome.wrong, why)


def _named(error, names):
    msg = str(error)
    if any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", msg) for n in names):
        return Outcome.refused, ""
    return Outcome.unclear, f"{type(error).__name__} names none of {names}: {msg}"


class _Draw:
    """Hypothesis draws, logged (compactly) so a failure or crash shows its example."""

    def __init__(self, data):
        self.data, self.log = data, ""

    def pick(self, options, label):
        """One of options, the first ones more often: repeat an option to weight it, and put
        the common ones first. (sampled_from weighs by distinct value, so repeats would not
        count, and a few odd options could take half the examples; hypothesis' integers lean
        to small values, which this turns into a lean to the first options.)"""
        v = options[self.data.draw(st.integers(0, 999), label) * len(options) // 1000]
        self.log += f" {label}={_short(v)}"
        return v

    def __call__(self, strategy, label):
        v = self.data.draw(strategy, label=label)
        self.log += f" {label}={_short(v)}"
        return v

    # ------------------------------------------------------------------------ arrays

    def kind(self, label):
        return self.pick(["torch", "numpy"], f"{label}.kind")

    def other(self, kind, label):
        """kind nine times in ten, else the other one (numpy and torch mixed)."""
        return self.pick([kind] * 9 + ["numpy" if kind == "torch" else "torch"], f"{label}.kind")

    def dtype(self, kind, label, floats_only=False):
        names = list(TORCH_DTYPES if kind == "torch" else NP_DTYPES)
        good = [n for n in names if "float" in n or "swapped" in n]
        if floats_only:
            names = good
        # Each valid dtype nine times as often as each other one.
        return self.pick((good * 8 + names), f"{label}.dtype")

    def layout(self, kind, label):
        extra = ["readonly"] if kind == "numpy" else ["grad"]
        return self.pick((["c"] * 4 + ["strided", "fortran"] + extra), f"{label}.layout")

    def coord(self, label):
        return self(
            st.one_of(st.integers(-20, 120).map(float), st.floats(-1e3, 1e3, width=32)), label
        )

    def boxes_values(self, label, n=None, cols=4):
        """float64 values [n, 4] of boxes: corners and signed sides (inverted or zero-area), and
        in one array in five, a few special values (NaN, inf, huge, tiny) in drawn places."""
        if n is None:
            n = self(st.integers(0, 10), f"{label}.n")
        vals = []
        for i in range(n):
            x, y = self.coord(f"{label}[{i}].x"), self.coord(f"{label}[{i}].y")
            w, h = (self(st.integers(-3, 60).map(float), f"{label}[{i}].{s}") for s in "wh")
            vals.append([x, y, x + w, y + h][:cols] + [1.0] * (cols - 4))
        v = np.array(vals, np.float64).reshape(n, cols)
        self.special(v, label)
        return v

    def special(self, v, label):
        """In one array in five, up to three entries of v (in place) become special values, or
        (scaling) every entry becomes huge or tiny."""
        if not v.size or not self.pick([False] * 4 + [True], f"{label}.special"):
            return
        if self(st.booleans(), f"{label}.scaled"):
            v *= self.pick([1e-30, 1e-20, 1e17, 1e19, 1e36, 1e150, 1e200, 1e300], "by")
            return
        for _ in range(self(st.integers(1, 3), f"{label}.specials")):
            i = self(st.integers(0, v.size - 1), "at")
            v.flat[i] = self.pick(SPECIAL, "value")

    def shape_variant(self, values, label):
        """values, or (rarely) reshaped to a wrong rank or last dim."""
        v = self.pick(["ok"] * 40 + ["1d", "3d", "last3", "last5"], f"{label}.shape")
        if v == "1d":
            return values.reshape(-1)
        if v == "3d":
            return values[None]
        if v == "last3":
            return values[:, :3]
        if v == "last5":
            return np.concatenate([values, values[:, :1]], 1)
        return values

    def array(self, values, label, kind=None, floats_only=False):
        """values (float64 numpy) as an array of a drawn kind, dtype and layout."""
        kind = kind or self.kind(label)
        return _build(values, kind, self.dtype(kind, label, floats_only), self.layout(kind, label))

    def boxes(self, label, n=None, kind=None, shape=True):
        v = self.boxes_values(label, n)
        if shape:
            v = self.shape_variant(v, label)
        return self.array(v, label, kind)

    def scalar(self, label, good):
        """A good value (from the strategy `good`) nine times in ten, else a bad one."""
        bad = self.pick([False] * 9 + [True], f"{label}.bad")
        return self.pick(BAD_SCALARS, label) if bad else self(good, label)


def _short(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    text = repr(v)
    return text if len(text) < 60 else text[:57] + "..."


def _build(values, kind, dtype, layout):
    values = np.asarray(values, np.float64)
    with np.errstate(all="ignore"):
        if dtype in ("int32", "int64", "uint8"):
            info = np.iinfo(dtype)
            v = np.clip(np.nan_to_num(values, nan=0, posinf=0, neginf=0), info.min, info.max)
            arr = v.astype(dtype)
        elif dtype == "bool":
            arr = values != 0
        elif dtype == "complex64":
            arr = values.astype(np.complex64)
        elif kind == "numpy":
            arr = values.astype(NP_DTYPES[dtype])
        else:
            arr = values.astype(np.float32 if dtype == "bfloat16" else FLOATS[dtype])
    if kind == "torch":
        t = torch.from_numpy(np.ascontiguousarray(arr))
        arr = t.to(TORCH_DTYPES[dtype]) if dtype == "bfloat16" else t
    if layout == "strided" and arr.ndim >= 1:
        big = _stack2(arr, kind)
        arr = big[::2]
    elif layout == "fortran" and arr.ndim >= 2:
        arr = np.asfortranarray(arr) if kind == "numpy" else arr.T.contiguous().T
    elif layout == "readonly" and kind == "numpy":
        arr = arr.copy()
        arr.flags.writeable = False
    elif layout == "grad" and kind == "torch" and arr.dtype.is_floating_point:
        arr = arr.clone().requires_grad_(True)
    return arr


def _stack2(arr, kind):
    """An array holding arr at the even rows (and garbage at the odd ones)."""
    if kind == "numpy":
        big = np.full((2 * arr.shape[0], *arr.shape[1:]), 7, arr.dtype)
    else:
        big = torch.full((2 * arr.shape[0], *arr.shape[1:]), 7, dtype=arr.dtype)
    big[::2] = arr
    return big


# ---------------------------------------------------------------------------- oracle helpers


def _kind(x):
    if isinstance(x, torch.Tensor):
        return "torch"
    if isinstance(x, np.ndarray):
        return "numpy"
    raise Invalid(f"not an array: {type(x).__name__}")


def _same_kind(*xs):
    if len({_kind(x) for x in xs}) > 1:
        raise Invalid("numpy and torch mixed")


def _float_kind(x):
    """'float', 'int' (refusing is allowed: fastdet computes floats) or Invalid (bool, complex)."""
    dt = x.dtype
    if isinstance(x, torch.Tensor):
        if dt.is_floating_point:
            return "float"
        if dt.is_complex or dt == torch.bool:
            raise Invalid(f"dtype {dt}")
        return "int"
    if dt.kind == "f":
        return "float"
    if dt.kind in "iu":
        return "int"
    raise Invalid(f"dtype {dt}")


def _f64(x):
    """The exact values of x as float64 numpy."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()
    return np.asarray(x).astype(np.float64)


def _shape(x, ndim, last, label):
    if x.ndim != ndim or (last is not None and x.shape[-1] != last):
        raise Invalid(f"{label} shape {tuple(x.shape)}")


def _finite(v, label):
    if not np.isfinite(v).all():
        raise Invalid(f"{label} has NaN or inf")


def _compute(*xs):
    """The compute dtype: float64 if any input is float64, else float32."""
    for x in xs:
        dt = x.dtype
        if dt == torch.float64 or (
            isinstance(dt, np.dtype) and dt.kind == "f" and dt.itemsize == 8
        ):
            return np.float64
    return np.float32


def _out_dtype(*xs):
    """The dtype of a float op's output: the input's (native) when all share it, else the
    compute dtype."""
    native = [x.dtype if isinstance(x, torch.Tensor) else _np_dtype(x.dtype) for x in xs]
    return native[0] if all(d == native[0] for d in native) else _compute(*xs)


def _np_dtype(dt):
    """numpy's native dtype for a torch or numpy dtype (bfloat16: float32, its compute dtype)."""
    if isinstance(dt, torch.dtype):
        return (
            np.dtype(np.float32) if dt == torch.bfloat16 else torch.empty(0, dtype=dt).numpy().dtype
        )
    return np.dtype(dt).newbyteorder("=")


def _tol(cdt, out):
    """(rtol, atol) as the op tests use: 1e-5 / 1e-6 in float32, 1e-12 in float64; a float16 or
    bfloat16 output adds its rounding."""
    rtol, atol = (1e-5, 1e-6) if cdt == np.float32 else (1e-11, 1e-14)
    if out in (torch.float16, np.float16) or np.dtype(_np_dtype(out)) == np.float16:
        rtol, atol = rtol + 2**-10, atol + 2**-24
    if out == torch.bfloat16:
        rtol, atol = rtol + 2**-7, atol + 1e-38
    return rtol, atol


def _output_ok(got, kind, dtype=None, shape=None):
    """None if got is an array of kind (and dtype, shape), else why not."""
    if _kind(got) != kind:
        return f"output is a {type(got).__name__}, expected {kind}"
    if isinstance(got, np.ndarray) and not got.dtype.isnative:
        return f"output dtype {got.dtype} is not native"
    if dtype is not None and got.dtype != dtype and _np_dtype(got.dtype) != _np_dtype(dtype):
        return f"output dtype {got.dtype}, expected {dtype}"
    if shape is not None and tuple(got.shape) != tuple(shape):
        return f"output shape {tuple(got.shape)}, expected {tuple(shape)}"
    return None


def _close(got, wants, rtol, atol, mask=None):
    """None if got (float64 numpy) is within tolerance of any of `wants` at every position
    (positions where mask is False are skipped), else a description of the worst position."""
    ok = np.zeros(got.shape, bool)
    with np.errstate(all="ignore"):
        for w in wants:
            ok |= np.isclose(got, w, rtol=rtol, atol=atol, equal_nan=True)
    if mask is not None:
        ok |= ~mask
    if ok.all():
        return None
    i = tuple(int(j) for j in np.argwhere(~ok)[0])
    return f"at {i}: got {got[i]!r}, expected {[float(w[i]) for w in wants]}"


def _expectation(fn, may_refuse=False):
    fn.may_refuse = may_refuse
    return fn


def _t(v, dtype=torch.float64):
    return torch.from_numpy(np.ascontiguousarray(v)).to(dtype)


# ---------------------------------------------------------------------------- the cases
# Each case draws an example and returns (call, expect, argument names): call() runs fastdet;
# expect() raises Invalid or returns compare(got) -> None or why it is wrong.

BOX_NAMES = ["boxes", "boxes1", "boxes2", "scores", "idxs"]
# Beyond these, float32/float64 areas (and unions) overflow: the IoU ops raise.
COORD_LIMIT = {np.float32: 2.0**62, np.float64: 2.0**510}


def _check_boxes(x, label, ndim=2):
    kind = _float_kind(x)
    _shape(x, ndim, 4, label)
    v = _f64(x)
    _finite(v, label)
    return v, kind == "int"


def _regular(v, cdt):
    """Boxes whose area in the compute dtype is a positive normal number (no documented
    difference applies, and no underflow rounds it)."""
    a = reference.box_area(v.astype(cdt)).astype(np.float64)
    return (a >= np.finfo(cdt).tiny) & np.isfinite(a)


def _dtype_name(dt):
    if isinstance(dt, torch.dtype):
        return str(dt).split(".")[1]
    return np.dtype(dt).newbyteorder("=").name


def case_clip(draw):
    v = draw.boxes_values("boxes")
    rank = draw.pick(["2d"] * 4 + ["1d", "3d", "last3"], "boxes.rank")
    v = {"1d": v[:1].reshape(-1), "3d": v.reshape(-1, 1, 4), "last3": v[:, :3]}.get(rank, v)
    if v.ndim == 1 and v.size == 0:
        v = np.zeros(4)
    b = draw.array(v, "boxes")
    size_form = draw.pick(["pair"] * 6 + ["int", "triple", "str"], "size.form")
    good = st.one_of(st.integers(0, 300), st.floats(0, 1e4), st.sampled_from([INF, 1e300]))
    h, w = draw.scalar("size[0]", good), draw.scalar("size[1]", good)
    size = {"pair": (h, w), "int": 5, "triple": (h, w, 3), "str": "ab"}[size_form]

    def expect():
        kind = _float_kind(b)
        if b.ndim < 1 or b.shape[-1] != 4:
            raise Invalid("shape")
        if size_form != "pair":
            raise Invalid("size")
        hw = [_real(x, "size", minimum=0) for x in size]
        vals = _f64(b)
        _finite(vals, "boxes")
        cdt = _compute(b)
        want = tv.ops.clip_boxes_to_image(_t(vals), (hw[0], hw[1])).numpy()
        # clamp in the compute dtype: the bound rounds there first (as the kernel's T(height)).
        with np.errstate(all="ignore"):
            hc, wc = float(cdt(hw[0])), float(cdt(hw[1]))
        want_c = tv.ops.clip_boxes_to_image(_t(vals), (hc, wc)).numpy()
        out = b.dtype

        def compare(got):
            why = _output_ok(got, _kind(b), None if kind == "int" else out, b.shape)
            if why:
                return why
            g = _f64(got)
            r = [_f64(_build(x, _kind(b), _dtype_name(out), "c")) for x in (want, want_c)]
            return _close(g, r, 0, 0)

        return _expectation(compare, kind == "int")

    return (lambda: ops.clip_boxes_to_image(b, size)), expect, ["boxes", "size"]


def _real(v, label, minimum=None, finite=False, allow_nan=False):
    """The contract for a real scalar: TypeError for None, str, bool, complex, lists; NaN and
    (when finite) inf refused."""
    if v is None or isinstance(v, (bool, str, bytes, list, complex, np.bool_)):
        raise Invalid(f"{label}={v!r}")
    try:
        f = float(v)
    except OverflowError:
        raise Invalid(f"{label} overflows") from None
    if math.isnan(f) and not allow_nan:
        raise Invalid(f"{label} NaN")
    if finite and math.isinf(f):
        raise Invalid(f"{label} inf")
    if minimum is not None and f < minimum:
        raise Invalid(f"{label} < {minimum}")
    return f


def _int(v, label, minimum=None, maximum=2**63 - 1):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise Invalid(f"{label}={v!r}")
    if (minimum is not None and v < minimum) or v > maximum:
        raise Invalid(f"{label} out of range")
    return int(v)


def case_remove_small(draw):
    b = draw.boxes("boxes")
    good = st.one_of(st.floats(-10, 100), st.integers(-5, 50), st.sampled_from([INF, -INF, 1e-30]))
    m = draw.scalar("min_size", good)

    def expect():
        v, i = _check_boxes(b, "boxes")
        ms = _real(m, "min_size")
        cdt = _compute(b)
        want = tv.ops.remove_small_boxes(_t(v, _torch(cdt)), ms).numpy()

        def compare(got):
            why = _output_ok(got, _kind(b), np.int64, want.shape)
            return why or (None if np.array_equal(_f64(got), want) else f"{got} != {want}")

        return _expectation(compare, i)

    return (lambda: ops.remove_small_boxes(b, m)), expect, ["boxes", "min_size"]


def _scores(draw, n, label="scores"):
    """Scores for n boxes: ties (few distinct values) or distinct, rarely special or misshapen."""
    vals = draw(
        st.lists(
            st.one_of(st.sampled_from([0.1, 0.5, 0.9]), st.floats(0, 1, width=32)),
            min_size=n,
            max_size=n,
        ),
        label,
    )
    v = np.array(vals, np.float64)
    draw.special(v, label)
    form = draw.pick(["ok"] * 12 + ["2d", "short"], f"{label}.shape")
    if form == "2d":
        v = v[:, None]
    elif form == "short" and n:
        v = v[:-1]
    return v


def _nms_inputs(draw, with_idxs=False):
    n = draw(st.integers(0, 10), "n")
    kind = draw.kind("boxes")
    v = draw.boxes_values("boxes", n)
    b = draw.array(draw.shape_variant(v, "boxes"), "boxes", kind)
    s = draw.array(_scores(draw, n), "scores", draw.other(kind, "scores"))
    idxs = None
    if with_idxs:
        c = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n), "idxs")
        cdt = draw.pick(["int64"] * 4 + ["int32", "uint8", "float32", "bool"], "idxs.dtype")
        iv = np.array(c, np.float64)
        if cdt == "uint8":
            iv = np.abs(iv)
        idxs = _build(iv, kind, cdt, "c")
    thr = draw.scalar(
        "iou_threshold", st.one_of(st.sampled_from([0.0, 0.5, 1.0, -0.5, INF]), st.floats(0, 1))
    )
    return b, s, idxs, _near_pair(draw, thr, v, reference.box_iou)


def _near_pair(draw, thr, v, iou):
    """thr, or (half the time) 1% above or below the IoU of an overlapping pair of boxes v by
    the reference `iou`: that pair's fate then depends on the threshold, which a drawn one
    rarely decides (a 3% error in the threshold went unnoticed)."""
    with np.errstate(all="ignore"):
        ious = iou(v, v) if np.isfinite(v).all() else np.zeros(0)
    mid = np.unique(ious[(ious > 1e-3) & (ious < 0.99)])
    if len(mid) and draw.pick([True, False], "iou_threshold.at_pair"):
        return float(mid[draw(st.integers(0, len(mid) - 1), "pair")]) * draw.pick(
            [1.01, 0.99], "side"
        )
    return thr


def _check_per_box(b, x, label, kind):
    """float64 values of x [N], one per box of b [N, ...], whose dtype is of a kind ("float",
    "int"), or Invalid."""
    if _float_kind(x) != kind:
        raise Invalid(f"{label} dtype")
    if x.ndim != 1 or x.shape[0] != b.shape[0]:
        raise Invalid(f"{label} shape")
    return _f64(x)


def _check_scores(b, s):
    vs = _check_per_box(b, s, "scores", "float")
    _finite(vs, "scores")
    return vs


def _check_idxs(b, idxs):
    return _check_per_box(b, idxs, "idxs", "int").astype(np.int64)


def _check_nms(b, s, idxs=None):
    _same_kind(*(x for x in (b, s, idxs) if x is not None))
    vb, ib = _check_boxes(b, "boxes")
    vs = _check_scores(b, s)
    cdt = _compute(b, s)
    if np.abs(vb).max(initial=0) > COORD_LIMIT[cdt]:
        raise Invalid("boxes beyond the overflow limit")
    return vb.astype(cdt), vs.astype(cdt), ib


def _compare_keep(b, *wants):
    """compare(got) of an NMS's keep (of boxes b): int64 indices equal to each want of the
    (oracle's name, want) pairs, in turn; a want of None is not compared."""

    def compare(got):
        why = _output_ok(got, _kind(b), np.int64, None)
        if why:
            return why
        g = _f64(got).astype(np.int64)
        for name, want in wants:
            if want is not None and not np.array_equal(g, want):
                return f"keep {g.tolist()} != {name} {want.tolist()}"
        return None

    return compare


def case_nms(draw):
    b, s, _, thr = _nms_inputs(draw)

    def expect():
        vb, vs, ib = _check_nms(b, s)
        t = _real(thr, "iou_threshold")
        want = reference.nms(vb, vs, t)
        # torchvision where no documented difference applies: distinct scores, regular boxes.
        tv_ok = len(set(vs.tolist())) == len(vs) and _regular(vb, vb.dtype.type).all()
        tvk = tv.ops.nms(_t(vb, _torch(vb.dtype.type)), _t(vs, _torch(vb.dtype.type)), t).numpy()
        compare = _compare_keep(b, ("reference", want), ("torchvision", tvk if tv_ok else None))
        return _expectation(compare, ib)

    return (lambda: ops.nms(b, s, thr)), expect, ["boxes", "scores", "iou_threshold"]


def case_batched_nms(draw):
    b, s, idxs, thr = _nms_inputs(draw, with_idxs=True)

    def expect():
        if math.prod(b.shape) == 0:
            # Documented, as torchvision: no boxes give an empty result at once, the other
            # arguments unread.
            return _expectation(lambda got: _output_ok(got, _kind(b), np.int64, (0,)), True)
        vb, vs, ib = _check_nms(b, s, idxs)
        c = _check_idxs(b, idxs)
        t = _real(thr, "iou_threshold")
        want = reference.batched_nms(vb, vs, c, t)
        tv_ok = (
            len(set(vs.tolist())) == len(vs)
            and _regular(vb, vb.dtype.type).all()
            # docs: torchvision's offset trick mixes classes at negative coordinates (or with
            # a negative threshold, which suppresses even boxes that do not overlap).
            and (vb >= 0).all()
            and t >= 0
        )
        tdt = _torch(vb.dtype.type)
        tvk = tv.ops.batched_nms(_t(vb, tdt), _t(vs, tdt), _t(c, torch.int64), t).numpy()
        compare = _compare_keep(b, ("reference", want), ("torchvision", tvk if tv_ok else None))
        return _expectation(compare, ib)

    names = ["boxes", "scores", "idxs", "iou_threshold"]
    return (lambda: ops.batched_nms(b, s, idxs, thr)), expect, names


def case_suppress_contained(draw):
    b, s, idxs, _ = _nms_inputs(draw, with_idxs=True)
    f = draw.scalar(
        "fraction", st.one_of(st.sampled_from([0.0, 0.5, 1.0, -0.5, 1.5]), st.floats(0, 1))
    )

    def expect():
        vb, vs, ib = _check_nms(b, s, idxs)
        c = _check_idxs(b, idxs)
        t = _real(f, "fraction")
        if not 0 <= t <= 1:
            raise Invalid(f"fraction={t!r}")
        want = reference.suppress_contained(vb, vs, c, t)
        return _expectation(_compare_keep(b, ("reference", want)), ib)

    names = ["boxes", "scores", "idxs", "fraction"]
    return (lambda: ops.suppress_contained(b, s, idxs, f)), expect, names


def case_soft_nms(draw):
    b, s, _, thr = _nms_inputs(draw)
    method = draw.pick(["linear", "gaussian"] * 6 + ["hard", None, ["linear"]], "method")
    sigma = draw.scalar("sigma", st.one_of(st.sampled_from([0.5, 0.1, 2.0]), st.floats(1e-3, 10)))
    sthr = draw.scalar(
        "score_threshold", st.one_of(st.sampled_from([0.001, 0.0, 0.5]), st.floats(-1, 1))
    )

    def expect():
        if method not in ("linear", "gaussian"):
            raise Invalid("method")
        vb, vs, ib = _check_nms(b, s)
        t = _real(thr, "iou_threshold")
        sg = _real(sigma, "sigma", minimum=1e-300 if method == "gaussian" else None)
        st_ = _real(sthr, "score_threshold")
        keep, scores = reference.soft_nms(vb, vs, t, sg, st_, method)
        out = _out_dtype(s) if _float_kind(s) == "float" else None

        def compare(got):
            if not (isinstance(got, tuple) and len(got) == 2):
                return f"returned {type(got).__name__}, expected (keep, scores)"
            why = _output_ok(got[0], _kind(b), np.int64, keep.shape) or _output_ok(
                got[1], _kind(b), out, keep.shape
            )
            if why:
                return why
            if not np.array_equal(_f64(got[0]).astype(np.int64), keep):
                return f"keep {got[0].tolist()} != reference {keep.tolist()}"
            want = _f64(_build(scores.astype(np.float64), _kind(b), _dtype_name(out), "c"))
            return _close(_f64(got[1]), [want], 0, 0)

        return _expectation(compare, ib)

    names = ["boxes", "scores", "iou_threshold", "sigma", "score_threshold", "method"]
    return (lambda: ops.soft_nms(b, s, thr, sigma, sthr, method)), expect, names


def _roi_input(draw):
    """(kind, N, input) of the RoI ops: a feature map [N, C, H, W] of small integers (one in
    ten with a NaN or a huge value; rarely 3-d or 5-d)."""
    kind = draw.kind("input")
    n = draw.pick([1] * 4 + [2] * 3 + [3, 0], "N")
    c = draw(st.integers(0, 3), "C")
    h, w = draw(st.integers(0, 9), "H"), draw(st.integers(0, 9), "W")
    feat_special = draw.pick(["normal"] * 8 + ["nan", "huge"], "input.values")
    x = np.arange(n * c * h * w, dtype=np.float64).reshape(n, c, h, w) % 7 - 3
    if feat_special == "nan" and x.size:
        x.flat[0] = NAN
    elif feat_special == "huge" and x.size:
        x.flat[-1] = 1e30
    rank = draw.pick(["4d"] * 12 + ["3d", "5d"], "input.rank")
    xv = {"3d": x.reshape(n * c, h, w), "5d": x[None]}.get(rank, x)
    return kind, n, draw.array(xv, "input", kind)


def _roi_corners(draw, k):
    """float64 [k, 4] RoI corners: mostly within a few maps of the map (torchvision's loops
    stay short), else any boxes_values."""
    if draw.pick([True] * 6 + [False], "boxes.small"):
        vals = [[draw(st.integers(-2, 12), "r") + draw.pick([0.0, 0.25, 0.5, 0.7], "f")
                 for _ in range(4)] for _ in range(k)]  # fmt: skip
        return np.array(vals, np.float64).reshape(k, 4)
    return draw.boxes_values("boxes", k)


def _roi_boxes(draw, kind, form, v, bidx, n):
    """The RoIs v [K, 4] in images bidx [K, 1] as the boxes argument of a form: "k5" [K, 5],
    "k4" [K, 4] (no batch index: wrong) or "list" (per image [K_i, 4])."""
    bkind = draw.other(kind, "boxes")
    if form == "list":
        return [draw.array(v[bidx[:, 0] == i], f"boxes[{i}]", bkind) for i in range(max(n, 1))]
    if form == "k4":
        return draw.array(v, "boxes", bkind)
    return draw.array(np.concatenate([bidx, v], 1), "boxes", bkind)


def _roi_output(draw):
    """(output_size, spatial_scale) of the RoI ops, each bad one time in ten."""
    out_size = draw.scalar(
        "output_size", st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 3), st.integers(1, 3)))
    )
    scale = draw.scalar(
        "spatial_scale", st.one_of(st.sampled_from([1.0, 0.5, 0.25, 2.0]), st.floats(0.01, 4))
    )
    return out_size, scale


def case_roi_align(draw):
    kind, n, inp = _roi_input(draw)
    k = draw(st.integers(0, 6), "K")
    form = draw.pick(["k5"] * 6 + ["list", "k4"], "boxes.form")
    v = _roi_corners(draw, k)
    bidx = np.array(
        [draw.pick(list(range(max(n, 1))) * 8 + [-1, n, 0.5], "batch") for _ in range(k)],
        np.float64,
    ).reshape(k, 1)
    boxes = _roi_boxes(draw, kind, form, v, bidx, n)
    out_size, scale = _roi_output(draw)
    sr = draw.scalar("sampling_ratio", st.integers(-2, 4))
    aligned = draw.pick([True, False] * 6 + [1, "False", None], "aligned")

    def expect():
        (ph, pw), sc = _check_roi_output(inp, out_size, scale)
        s_r = _int(sr, "sampling_ratio", maximum=1024)
        if not isinstance(aligned, (bool, np.bool_)):
            raise Invalid("aligned")
        rois = _check_rois(inp, boxes)
        cdt = _compute(inp)
        K, C = len(rois), inp.shape[1]
        xin = _f64(inp)
        T = cdt
        with np.errstate(all="ignore"):
            size = np.abs(rois[:, 3:5] - rois[:, 1:3]) * sc + 1 if K else np.zeros((0, 2))
            grid = s_r if s_r > 0 else np.ceil(size / [pw, ph]).max(initial=1)
        out = inp.dtype
        # The references loop over every sample: only where the grid stays small.
        small = grid <= 64
        if small:
            ref = _roi_align_reference(xin, rois.astype(T), (ph, pw), sc, s_r, aligned, T)
        # torchvision reads out of bounds (segfaults) on an empty map, and propagates a NaN
        # feature through 0 weights (docs): compared on finite, non-empty maps only.
        tvs = []
        if small and np.isfinite(xin).all() and xin.size:
            for dt in (torch.float64, _torch(T)):
                try:
                    r_ = _t(rois.astype(T), dt)
                    y = tv.ops.roi_align(_t(xin, dt), r_, (ph, pw), sc, s_r, bool(aligned))
                    tvs.append(y.double().numpy())
                except (RuntimeError, ValueError):  # "cannot create std::vector larger..."
                    pass  # for an inverted aligned RoI; the reference still decides

        def compare(got):
            why = _output_ok(got, _kind(inp), out, (K, C, ph, pw))
            if why:
                return why
            g = _f64(got)
            if not small:  # a huge RoI: no oracle, but finite features give finite outputs
                finite_in = np.isfinite(xin).all() and np.abs(xin).max(initial=0) < 1e20
                return None if not finite_in or np.isfinite(g).all() else "non-finite output"
            rtol, atol = _tol(cdt, out)
            atol *= max(1.0, np.nanmax(np.abs(np.where(np.isfinite(xin), xin, 0)), initial=0))
            why = _close(g, [ref], rtol, atol)
            if why:
                return f"reference: {why}"
            return _close(g, tvs, rtol, atol) if tvs else None

        return _expectation(compare)

    names = ["input", "boxes", "output_size", "spatial_scale", "sampling_ratio", "aligned"]
    call = lambda: ops.roi_align(inp, boxes, out_size, scale, sr, aligned)  # noqa: E731
    return call, expect, names


def _roi_align_reference(x, rois, size, scale, sampling_ratio, aligned, T):
    """torchvision's roi_align (its CPU kernel's arithmetic, sample positions in T) in plain
    numpy, except that a tap of weight 0 adds nothing (fastdet; torchvision's 0 * NaN spreads a
    NaN feature to the neighbouring bins). Sums in float64."""
    ph, pw = size
    K, (_, C, H, W) = len(rois), x.shape
    out = np.zeros((K, C, ph, pw))
    off, sc = T(0.5 if aligned else 0.0), T(scale)

    def axis(start, bin_, p, grid, extent):
        """(low, high, w_low, w_high) of the grid samples of bin p; invalid ones weigh 0."""
        i = np.arange(max(grid, 0), dtype=T)
        v = start + T(p) * bin_ + (i + T(0.5)) * bin_ / T(grid)
        valid = (v >= -1) & (v <= extent)
        v = np.maximum(v, T(0))
        low = np.minimum(np.floor(v), extent - 1).astype(np.int64)
        edge = low >= extent - 1
        v = np.where(edge, low.astype(T), v)
        high = np.where(edge, low, low + 1)
        frac = (v - low.astype(T)).astype(np.float64)
        w_low, w_high = np.where(valid, 1 - frac, 0), np.where(valid, frac, 0)
        return np.clip(low, 0, None), np.clip(high, 0, None), w_low, w_high

    with np.errstate(all="ignore"):
        for k in range(K):
            b = int(rois[k, 0])
            x1, y1, x2, y2 = (T(rois[k, j]) * sc - off for j in (1, 2, 3, 4))
            rw, rh = x2 - x1, y2 - y1
            if not aligned:
                rw, rh = max(rw, T(1)), max(rh, T(1))
            bin_w, bin_h = rw / T(pw), rh / T(ph)
            gh = sampling_ratio if sampling_ratio > 0 else int(np.ceil(rh / T(ph)))
            gw = sampling_ratio if sampling_ratio > 0 else int(np.ceil(rw / T(pw)))
            count = max(gh * gw, 1)
            if H == 0 or W == 0:
                continue
            plane = x[b]
            for p in range(ph):
                yl, yh, wyl, wyh = axis(y1, bin_h, p, gh, H)
                for q in range(pw):
                    xl, xh, wxl, wxh = axis(x1, bin_w, q, gw, W)
                    total = np.zeros(C)
                    for ys, wy in ((yl, wyl), (yh, wyh)):
                        for xs, wx in ((xl, wxl), (xh, wxh)):
                            w = wy[:, None] * wx[None, :]
                            v = plane[:, ys[:, None], xs[None, :]]
                            total += np.where(w > 0, w * v, 0).sum(axis=(1, 2))
                    out[k, :, p, q] = total / count
    return out


class _Images:
    def __init__(self, tensors):
        self.tensors = tensors


def _level_values(draw, label):
    good = st.one_of(
        st.sampled_from([32.0, 64.0, 0.5, 1.0, 2.0]), st.floats(0.1, 600), st.integers(1, 512)
    )
    return tuple(draw.scalar(f"{label}[{i}]", good) for i in range(draw(st.integers(1, 3), label)))


def case_anchor_generator(draw):
    levels = draw(st.integers(1, 3), "levels")
    sizes = tuple(_level_values(draw, f"sizes{i}") for i in range(levels))
    ratios = tuple(_level_values(draw, f"ratios{i}") for i in range(levels))
    cache = draw.scalar("cache_size", st.integers(0, 8))
    H, W = draw(st.integers(1, 300), "H"), draw(st.integers(1, 300), "W")
    dtype = draw.pick(["float32"] * 3 + ["float64"] * 2 + ["float16", "bfloat16", "int64"], "dtype")
    fms = []
    for i in range(draw.pick([levels] * 6 + [levels + 1], "maps")):
        fh, fw = (draw.pick([draw(st.integers(1, 40), f"fm{i}.{a}")] * 12 + [0], a) for a in "hw")
        fms.append(torch.zeros(1, 1, fh, fw, dtype=TORCH_DTYPES[dtype]))
    images = _Images(torch.zeros(1, 3, H, W))

    def call():
        return ops.AnchorGenerator(sizes, ratios, cache)(images, fms)

    def expect():
        from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchors

        for name, levels_ in (("sizes", sizes), ("aspect_ratios", ratios)):
            for lv in levels_:
                for x in lv:
                    if _real(x, name, finite=True) <= 0:
                        raise Invalid(f"{name} <= 0")
        _int(cache, "cache_size", 0)
        if len(fms) != len(sizes):
            raise Invalid("levels")
        if any(0 in fm.shape[-2:] for fm in fms):
            raise Invalid("empty feature map")
        if not fms[0].dtype.is_floating_point:
            return _expectation(lambda got: None, True)  # integer anchors: refusing allowed
        work = torch.float64 if dtype == "float64" else torch.float32
        theirs = TvAnchors(sizes, ratios)
        want = theirs(_TvImages(images.tensors), [fm.to(work) for fm in fms])[0].to(fms[0].dtype)

        def compare(got):
            if not (isinstance(got, list) and len(got) == 1):
                return f"returned {type(got).__name__}, expected a list of 1 tensor"
            why = _output_ok(got[0], "torch", want.dtype, want.shape)
            if why:
                return why
            if dtype in ("float16", "bfloat16"):  # docs: computed in float32, rounded once
                return _close(_f64(got[0]), [_f64(want)], 0, 0)
            return None if torch.equal(got[0], want) else _close(_f64(got[0]), [_f64(want)], 0, 0)

        return _expectation(compare)

    return call, expect, ["sizes", "aspect_ratios", "cache_size", "feature_maps", "image_list"]


class _TvImages:
    def __init__(self, tensors):
        self.tensors = tensors
        self.image_sizes = [tuple(tensors.shape[-2:])] * tensors.shape[0]


def case_cell_anchors(draw):
    sizes = _level_values(draw, "sizes")
    ratios = _level_values(draw, "aspect_ratios")

    def expect():
        for name, lv in (("sizes", sizes), ("aspect_ratios", ratios)):
            for x in lv:
                if _real(x, name, finite=True) <= 0:
                    raise Invalid(f"{name} <= 0")
        from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchors

        want = TvAnchors().generate_anchors(sizes, ratios)

        def compare(got):
            why = _output_ok(got, "torch", torch.float32, want.shape)
            return why or (None if torch.equal(got, want) else f"{got} != {want}")

        return _expectation(compare)

    return (lambda: ops.cell_anchors(sizes, ratios)), expect, ["sizes", "aspect_ratios"]


def _coder(draw):
    good = st.one_of(st.sampled_from([1.0, 10.0, 5.0, 0.5]), st.floats(0.01, 100))
    weights = tuple(draw.scalar(f"weights[{i}]", good) for i in range(4))
    form = draw.pick(["ok"] * 8 + ["three", "none"], "weights.form")
    weights = {"three": weights[:3], "none": None}.get(form, weights)
    clip = draw.scalar("bbox_xform_clip", st.sampled_from([math.log(1000.0 / 16), 1.0, 10.0, INF]))
    return weights, clip


def _check_coder(weights, clip):
    if weights is None or len(weights) != 4:
        raise Invalid("weights")
    ws = [_real(w, "weights", finite=True) for w in weights]
    if 0 in ws:
        raise Invalid("weights 0")
    return ws, _real(clip, "bbox_xform_clip")


def case_encode(draw):
    weights, clip = _coder(draw)
    n = draw(st.integers(0, 8), "n")
    kind = draw.kind("reference_boxes")
    g = draw.array(
        draw.shape_variant(draw.boxes_values("reference_boxes", n), "reference_boxes"),
        "reference_boxes",
        kind,
    )
    pn = draw.pick([n] * 9 + [n + 1], "proposals.n")
    p = draw.array(draw.boxes_values("proposals", pn), "proposals", draw.other(kind, "proposals"))
    as_list = draw.pick([False, False, True], "list")

    def call():
        coder = ops.BoxCoder(weights, clip)
        if as_list:
            return coder.encode([g], [p])
        return coder.encode_single(g, p)

    def expect():
        ws, _ = _check_coder(weights, clip)
        _same_kind(g, p)
        vg, ig = _check_boxes(g, "reference_boxes")
        vp, ip = _check_boxes(p, "proposals")
        if len(vg) != len(vp):
            raise Invalid("lengths")
        cdt = _compute(g, p)
        from torchvision.models.detection._utils import BoxCoder as TvCoder

        tvc = TvCoder(tuple(ws))
        w64 = tvc.encode_single(_t(vg), _t(vp)).numpy()
        tdt = _torch(cdt)
        wc = tvc.encode_single(_t(vg, tdt), _t(vp, tdt)).double().numpy()
        out = _out_dtype(g, p)

        def compare(got):
            if as_list:
                if not (isinstance(got, tuple) and len(got) == 1):
                    return f"encode returned {type(got).__name__}, expected a 1-tuple"
                got = got[0]
            why = _output_ok(got, _kind(g), None if ig or ip else out, (len(vg), 4))
            if why:
                return why
            rtol, atol = _tol(cdt, out)
            rounded = _f64(_build(w64, _kind(g), _dtype_name(out), "c"))
            return _close(_f64(got), [w64, wc, rounded], rtol, atol)

        return _expectation(compare, ig or ip)

    return call, expect, ["weights", "bbox_xform_clip", "reference_boxes", "proposals"]


def case_decode(draw):
    weights, clip = _coder(draw)
    n = draw(st.integers(0, 6), "n")
    k = draw(st.integers(1, 3), "k")
    kind = draw.kind("rel_codes")
    cv = np.array(draw(st.lists(st.floats(-3, 3), min_size=n * 4 * k, max_size=n * 4 * k), "codes"))
    cv = cv.reshape(n, 4 * k)
    draw.special(cv, "rel_codes")
    form = draw.pick(["ok"] * 10 + ["odd", "rows"], "rel_codes.shape")
    if form == "odd":
        cv = cv[:, :-1] if cv.shape[1] else cv
    elif form == "rows":
        cv = cv[:-1]
    c = draw.array(cv, "rel_codes", kind)
    b = draw.boxes("boxes", n, kind=draw.other(kind, "boxes"))
    as_list = draw.pick([False, False, True], "list")

    def call():
        coder = ops.BoxCoder(weights, clip)
        return coder.decode(c, [b]) if as_list else coder.decode_single(c, b)

    def expect():
        ws, cl = _check_coder(weights, clip)
        _same_kind(c, b)
        if _float_kind(c) != "float":
            raise Invalid("rel_codes dtype")
        vb, ib = _check_boxes(b, "boxes")
        vc = _f64(c)
        if vc.ndim != 2 or vc.shape[1] % 4 or vc.shape[0] != len(vb):
            if not (as_list and len(vb) and vc.size % (4 * len(vb)) == 0):
                raise Invalid("rel_codes shape")
        _finite(vc, "rel_codes")
        cdt = _compute(c, b)
        from torchvision.models.detection._utils import BoxCoder as TvCoder

        tvc = TvCoder(tuple(ws), cl)
        vcr = vc.reshape(len(vb), -1) if len(vb) else vc
        w64 = tvc.decode_single(_t(vcr), _t(vb)).numpy()
        tdt = _torch(cdt)
        try:
            wc = tvc.decode_single(_t(vcr, tdt), _t(vb, tdt)).double().numpy()
        except RuntimeError:  # a clip beyond float32: torch refuses it (fastdet: no clipping)
            wc = w64
        out = c.dtype
        shape = (len(vb), vcr.shape[1] // 4, 4) if as_list and len(vb) else vcr.shape

        def compare(got):
            why = _output_ok(got, _kind(c), out, shape)
            if why:
                return why
            rtol, atol = _tol(cdt, out)
            scale = max(1.0, np.abs(vb).max(initial=0))
            rounded = _f64(_build(w64, _kind(c), _dtype_name(out), "c")).reshape(w64.shape)
            g = _f64(got).reshape(w64.shape)
            return _close(g, [w64, wc, rounded], rtol, atol * scale * 1e3)

        return _expectation(compare, ib)

    return call, expect, ["weights", "bbox_xform_clip", "rel_codes", "boxes"]


# ---------------------------------------------------------------------------- the drop-in ops
# fmt=, integer and batched boxes, the DIoU/CIoU family and the losses, roi_pool, box_convert,
# masks_to_boxes, MultiScaleRoIAlign and the rotated ops.

AXIS_FMTS = ("xyxy", "xywh", "cxcywh")
ROTATED_FMTS = ("cxcywhr", "xywhr", "xyxyxyxy")
BAD_FMTS = ["XYXY", "", None, ["xyxy"], 3]
# Leading dimensions of (boxes1, boxes2): none, equal, broadcasting, or not broadcasting.
LEADS = {
    "none": ((), ()),
    "same": ((2,), (2,)),
    "bcast": ((2, 1), (3,)),
    "one": ((1,), ()),
    "bad": ((2,), (3,)),
}


def _lead_boxes(draw, label, lead, kind):
    """Boxes [*lead, n, 4] (without leading dimensions, maybe of a wrong rank or last dim)."""
    n = draw(st.integers(0, 6), f"{label}.n")
    v = draw.boxes_values(label, n * math.prod(lead))
    v = v.reshape(*lead, n, 4) if lead else draw.shape_variant(v, label)
    return draw.array(v, label, kind)


def _as_torch(x):
    """x as a torch tensor of its own dtype and values (numpy: in native byte order)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.from_numpy(np.array(x, dtype=x.dtype.newbyteorder("=")))


def _check_pair_boxes(x, label):
    _float_kind(x)
    if x.ndim < 2 or x.shape[-1] != 4:
        raise Invalid(f"{label} shape {tuple(x.shape)}")


def _pair_dtypes(a, b):
    """(compute dtype, output dtype) of the pairwise ops: float64 if either is float64; integer
    boxes compute in float64 and give float32 (torchvision's dtype); else float32 computing,
    the inputs' dtype out when they agree."""
    native = [_np_dtype(x.dtype) for x in (a, b)]
    if np.dtype(np.float64) in native:
        return np.float64, np.float64
    if "int" in (_float_kind(a), _float_kind(b)):
        return np.float64, np.float32
    return np.float32, _out_dtype(a, b)


def _out_tol(out):
    """(rtol, atol) of an output of dtype out (float32 for integer boxes' float64 IoUs)."""
    return _tol(np.float64 if _np_dtype(out) == np.float64 else np.float32, out)


def _pairwise_oracle(op, a, b, eps, kind):
    """compare(got) for the pairwise op on xyxy boxes a, b (any leading dimensions)."""
    cdt, out = _pair_dtypes(a, b)
    va, vb = _f64(a), _f64(b)
    _finite(va, "boxes1")
    _finite(vb, "boxes2")
    try:
        lead = tuple(np.broadcast_shapes(va.shape[:-2], vb.shape[:-2]))
    except ValueError:
        raise Invalid("leading dimensions do not broadcast") from None
    for v, label in ((va, "boxes1"), (vb, "boxes2")):
        if np.abs(v).max(initial=0) > COORD_LIMIT[cdt]:
            raise Invalid(f"{label} beyond the overflow limit")
    A = np.broadcast_to(va, lead + va.shape[-2:])
    B = np.broadcast_to(vb, lead + vb.shape[-2:])
    n, m = A.shape[-2], B.shape[-2]
    extra = () if eps is None else (eps,)
    ref = np.zeros(lead + (n, m))
    for i in np.ndindex(*lead):
        ref[i] = getattr(reference, op)(A[i].astype(cdt), B[i].astype(cdt), *extra)
    fn = getattr(tv.ops, op)
    tv64 = fn(_t(A), _t(B), *extra).numpy()
    tvc = fn(_t(A, _torch(cdt)), _t(B, _torch(cdt)), *extra).double().numpy()

    def regular(v):
        return _regular(v.reshape(-1, 4), cdt).reshape(v.shape[:-1])

    mask = regular(A)[..., :, None] & regular(B)[..., None, :]

    def compare(got):
        why = _output_ok(got, kind, out, lead + (n, m))
        if why:
            return why
        g = _f64(got)
        rtol, atol = _out_tol(out)
        return _close(g, [ref], rtol, atol) or _close(g, [tv64, tvc], rtol, atol, mask)

    return _expectation(compare)


def case_pairwise(draw, op):
    kind = draw.kind("boxes1")
    la, lb = LEADS[draw.pick(["none"] * 8 + list(LEADS)[1:], "lead")]
    a = _lead_boxes(draw, "boxes1", la, kind)
    b = _lead_boxes(draw, "boxes2", lb, draw.other(kind, "boxes2"))
    kw, names = {}, ["boxes1", "boxes2"]
    if op == "box_iou":
        fmts = ["xyxy"] * 10 + ["xywh", "cxcywh"] * 3 + ["cxcywhr"] + BAD_FMTS
        kw["fmt"], names = draw.pick(fmts, "fmt"), names + ["fmt"]
    if op in ("distance_box_iou", "complete_box_iou"):
        kw["eps"] = draw.scalar("eps", st.sampled_from([1e-7, 0.0, 1e-3, 1.0]))
        names = names + ["eps"]

    def expect():
        _same_kind(a, b)
        fmt = kw.get("fmt", "xyxy")
        if not isinstance(fmt, str) or fmt not in AXIS_FMTS + ROTATED_FMTS:
            raise Invalid("fmt")
        _check_pair_boxes(a, "boxes1")
        _check_pair_boxes(b, "boxes2")
        if fmt in ROTATED_FMTS:
            raise Invalid("rotated fmt for [..., 4] boxes")
        eps = None
        if "eps" in kw:
            eps = _real(kw["eps"], "eps", finite=True, minimum=0)
        ca, cb = a, b
        if fmt != "xyxy":  # converted as fastdet does: in the boxes' own dtype (torchvision's)
            ca, cb = (tv.ops.box_convert(_as_torch(x), fmt, "xyxy") for x in (a, b))
        return _pairwise_oracle(op, ca, cb, eps, _kind(a))

    return (lambda: getattr(ops, op)(a, b, **kw)), expect, names


def _torch(npdt):
    return {np.float32: torch.float32, np.float64: torch.float64}[npdt]


def case_box_area(draw):
    lead = draw.pick([()] * 8 + [(2,), (3, 1)], "lead")
    n = draw(st.integers(0, 8), "boxes.n")
    v = draw.boxes_values("boxes", n * math.prod(lead))
    v = v.reshape(*lead, n, 4) if lead else draw.shape_variant(v, "boxes")
    b = draw.array(v, "boxes")
    fmt = draw.pick(["xyxy"] * 10 + ["xywh", "cxcywh"] * 3 + ["xywhr"] + BAD_FMTS, "fmt")

    def expect():
        if not isinstance(fmt, str) or fmt not in AXIS_FMTS:
            raise Invalid("fmt")
        kind = _float_kind(b)
        if b.ndim < 1 or b.shape[-1] != 4:
            raise Invalid("boxes shape")
        shape = b.shape[:-1]
        if kind == "int":
            # Exact areas (Python integers); torchvision's dtypes: int64 for int64 boxes, else
            # int32. An area beyond them must raise (torchvision wraps around).
            q = _as_torch(b).to(torch.int64).numpy().astype(object).reshape(-1, 4)
            w, h = (q[:, 2], q[:, 3]) if fmt != "xyxy" else (q[:, 2] - q[:, 0], q[:, 3] - q[:, 1])
            exact = [max(x, 0) * max(y, 0) for x, y in zip(w, h)]
            out = np.int64 if _np_dtype(b.dtype) == np.int64 else np.int32
            if max(exact, default=0) > np.iinfo(out).max:
                raise Invalid("integer area overflows its dtype")

            def compare(got):
                why = _output_ok(got, _kind(b), out, shape)
                g = None if why else _as_torch(got).to(torch.int64).reshape(-1).tolist()
                return why or (None if g == exact else f"{g} != {exact}")

            return _expectation(compare)
        v = _f64(b)
        _finite(v, "boxes")
        flat = v.reshape(-1, 4)
        cdt = _compute(b)
        if fmt == "xyxy":
            ref = reference.box_area(flat.astype(cdt)).astype(np.float64)
            w, h = flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]
            truth = np.where((w >= 0) & (h >= 0), tv.ops.box_area(_t(flat)).numpy(), 0.0)  # docs
        else:  # docs: negative sides count as 0 (torchvision: w * h)
            truth = ref = np.maximum(flat[:, 2], 0) * np.maximum(flat[:, 3], 0)
        out = b.dtype

        def compare(got):
            why = _output_ok(got, _kind(b), out, shape)
            if why:
                return why
            g = _f64(got).reshape(-1)
            rtol, atol = _tol(cdt, out)
            # The float64 truth rounded to the output dtype (1e20 * 1e20 is inf in float32).
            rounded = _f64(_build(truth, _kind(b), _dtype_name(out), "c"))
            return _close(g, [ref, rounded], rtol, atol)

        return _expectation(compare)

    return (lambda: ops.box_area(b, fmt=fmt)), expect, ["boxes", "fmt"]


REDUCTIONS = ["none", "mean", "sum"] * 4 + ["max", None, "MEAN", ["mean"]]


def case_iou_loss(draw, op):
    kind = draw.kind("boxes1")
    n = draw(st.integers(0, 6), "n")
    a = draw.array(draw.boxes_values("boxes1", n), "boxes1", kind)
    form = draw.pick(["same"] * 8 + ["one", "batched", "short", "last3"], "boxes2.form")
    v = draw.boxes_values("boxes2", {"one": 1, "short": n + 1}.get(form, n))
    v = {"batched": np.stack([v, v[::-1]]) if n else v[None], "last3": v[:, :3]}.get(form, v)
    b = draw.array(v, "boxes2", draw.other(kind, "boxes2"))
    reduction = draw.pick(REDUCTIONS, "reduction")
    eps = draw.scalar("eps", st.sampled_from([1e-7, 0.0, 1e-3]))

    def expect():
        _same_kind(a, b)
        for x, label in ((a, "boxes1"), (b, "boxes2")):
            _float_kind(x)
            if x.ndim < 1 or x.shape[-1] != 4:
                raise Invalid(f"{label} shape")
            _finite(_f64(x), label)
        try:
            shape = tuple(np.broadcast_shapes(a.shape[:-1], b.shape[:-1]))
        except ValueError:
            raise Invalid("boxes1 and boxes2 do not broadcast") from None
        if not isinstance(reduction, str) or reduction not in ("none", "mean", "sum"):
            raise Invalid("reduction")
        e = _real(eps, "eps", finite=True, minimum=0)
        # torchvision's losses index with masks of boxes1's shape: broadcast first, and in one
        # dtype (fastdet's work elementwise, with torch's broadcasting and promotion).
        ta, tb = (x if x.dtype in (torch.float32, torch.float64) else x.float()
                  for x in (_as_torch(a), _as_torch(b)))  # fmt: skip
        mixed = ta.dtype != tb.dtype
        ta, tb = (x.to(torch.promote_types(ta.dtype, tb.dtype)) for x in (ta, tb))
        ta, tb = torch.broadcast_tensors(ta, tb)
        want = getattr(tv.ops, op)(ta, tb, reduction=reduction, eps=e)
        if reduction == "mean" and math.prod(shape) == 0:
            want = torch.zeros((), dtype=want.dtype)  # docs: the mean of no boxes is 0
        out_shape = shape if reduction == "none" else ()

        def compare(got):
            why = _output_ok(got, _kind(a), want.dtype, out_shape)
            if why:
                return why
            # The same expressions in the same order as torchvision's: bit for bit, unless the
            # dtypes differ (then some terms are float32 where this oracle's are float64).
            return _close(_f64(got), [_f64(want)], *((1e-5, 1e-6) if mixed else (0, 0)))

        return _expectation(compare)

    names = ["boxes1", "boxes2", "reduction", "eps"]
    return (lambda: getattr(ops, op)(a, b, reduction=reduction, eps=eps)), expect, names


def case_roi_pool(draw):
    kind, n, inp = _roi_input(draw)
    k = draw(st.integers(0, 6), "K")
    form = draw.pick(["k5"] * 6 + ["list", "k4"], "boxes.form")
    v = _roi_corners(draw, k)
    bidx = np.array([draw.pick(list(range(max(n, 1))), "batch") for _ in range(k)], np.float64)
    if k and draw.pick([False] * 6 + [True], "batch.bad"):  # one RoI naming no image
        bidx[draw(st.integers(0, k - 1), "at")] = draw.pick([-1, n, 0.5], "batch")
    boxes = _roi_boxes(draw, kind, form, v, bidx.reshape(k, 1), n)
    out_size, scale = _roi_output(draw)
    module = draw.pick([False] * 3 + [True], "RoIPool")

    def expect():
        (ph, pw), sc = _check_roi_output(inp, out_size, scale)
        rois = _check_rois(inp, boxes)
        cdt = _compute(inp)
        xin = _f64(inp)
        K, C = len(rois), inp.shape[1]
        rc = rois.astype(cdt)
        # Corners within +-2^20 after scaling: the kernel clamps beyond 2^30, the reference not.
        small = np.abs(rc[:, 1:] * sc).max(initial=0) < 2**20
        lowest = np.finfo(cdt).min  # a bin of NaNs only: NaN never beats the start value
        ref = None
        if small and C == 0:
            ref = np.zeros((K, 0, ph, pw))
        elif small:
            xr = np.where(np.isnan(xin), -INF, xin).astype(cdt)
            ref = reference.roi_pool(xr, rc, (ph, pw), sc).astype(np.float64)
            ref = np.where(ref == -INF, lowest, ref)
        tvs = []
        if small and np.isfinite(xin).all() and xin.size:
            for dt in (torch.float64, _torch(cdt)):
                y = tv.ops.roi_pool(_t(xin, dt), _t(rc, dt), (ph, pw), sc)
                tvs.append(y.double().numpy())
        out = inp.dtype

        def compare(got):
            why = _output_ok(got, _kind(inp), out, (K, C, ph, pw))
            if why or ref is None:
                return why
            g = _f64(got)
            # A max is one of the inputs: exact, up to the output's rounding.
            rounded = _f64(_build(ref, _kind(inp), _dtype_name(out), "c"))
            return _close(g, [rounded], 0, 0) or (_close(g, tvs, 0, 0) if tvs else None)

        return _expectation(compare)

    names = ["input", "boxes", "output_size", "spatial_scale"]
    if module:
        call = lambda: ops.RoIPool(out_size, scale)(inp, boxes)  # noqa: E731
    else:
        call = lambda: ops.roi_pool(inp, boxes, out_size, scale)  # noqa: E731
    return call, expect, names


def _check_roi_output(inp, out_size, scale):
    """((ph, pw), spatial_scale) of a RoI op's input, output_size and spatial_scale, or Invalid."""
    _kind(inp)
    if _float_kind(inp) != "float":
        raise Invalid("input dtype")
    if inp.ndim != 4:
        raise Invalid("input rank")
    if isinstance(out_size, (tuple, list)):
        if len(out_size) != 2:
            raise Invalid("output_size")
        ph, pw = (_int(o, "output_size", 1, 2**31 - 1) for o in out_size)
    else:
        ph = pw = _int(out_size, "output_size", 1, 2**31 - 1)
    sc = _real(scale, "spatial_scale", finite=True)
    if not sc > 0:
        raise Invalid("spatial_scale <= 0")
    return (ph, pw), sc


def _check_rois(inp, boxes):
    """rois [K, 5] float64 as the kernel sees them of a RoI op's boxes (on input), or Invalid."""
    parts = boxes if isinstance(boxes, list) else [boxes]
    for p in parts:
        _same_kind(inp, p)
        if _float_kind(p) != "float":
            raise Invalid("boxes dtype")
    if isinstance(boxes, list):
        for p in parts:
            _shape(p, 2, 4, "boxes[i]")
        rois = np.concatenate(
            [np.concatenate([np.full((len(p), 1), i), _f64(p)], 1) for i, p in enumerate(parts)]
            or [np.zeros((0, 5))]
        )
    else:
        _shape(boxes, 2, 5, "boxes")
        rois = _f64(boxes)
    _finite(rois, "boxes")
    rois = rois.astype(_compute(inp)).astype(np.float64)  # as the kernel sees them
    N = inp.shape[0]
    if len(rois) and (
        (rois[:, 0] < 0).any() or (rois[:, 0] >= N).any() or (rois[:, 0] % 1 != 0).any()
    ):
        raise Invalid("batch index")
    return rois


def _columns(fmt):
    return 8 if fmt == "xyxyxyxy" else 5 if fmt in ("cxcywhr", "xywhr") else 4


def case_box_convert(draw):
    fmts = list(AXIS_FMTS + ROTATED_FMTS) * 3 + ["XYXY", None, ["xyxy"]]
    in_fmt = draw.pick(fmts, "in_fmt")
    # out_fmt mostly of in_fmt's family (axis-aligned or rotated): the others raise
    family = list(ROTATED_FMTS if in_fmt in ROTATED_FMTS else AXIS_FMTS)
    out_fmt = draw.pick(family * 6 + fmts, "out_fmt")
    cols = _columns(in_fmt)
    cols = draw.pick([cols] * 12 + [3, 6], "cols")
    lead = draw.pick([()] * 6 + [(2,), (2, 1)], "lead")
    n = draw(st.integers(0, 6), "boxes.n")
    v = draw.boxes_values("boxes", n * math.prod(lead), cols=max(cols, 4))[:, :cols]
    if cols >= 5 and len(v):  # angles in degrees, multiples of 90 (exact) and others
        v[:, 4] = [draw.pick([0.0, 90.0, -90.0, 180.0, 30.0, 45.0, 1e-3, 400.0], "angle")
                   for _ in range(len(v))]  # fmt: skip
    v = v.reshape(*lead, n, cols) if lead else v
    if not lead and draw.pick([False] * 12 + [True], "boxes.1d") and len(v):
        v = v[0]
    b = draw.array(v, "boxes")

    def expect():
        for f, label in ((in_fmt, "in_fmt"), (out_fmt, "out_fmt")):
            if not isinstance(f, str) or f not in AXIS_FMTS + ROTATED_FMTS:
                raise Invalid(label)
        if (in_fmt in ROTATED_FMTS) != (out_fmt in ROTATED_FMTS):
            raise Invalid("no conversion between axis-aligned and rotated boxes")
        _float_kind(b)
        if b.ndim < 1 or b.shape[-1] != _columns(in_fmt):
            raise Invalid("boxes shape")
        _finite(_f64(b), "boxes")
        want = tv.ops.box_convert(_as_torch(b), in_fmt, out_fmt)

        def compare(got):
            why = _output_ok(got, _kind(b), want.dtype, want.shape)
            # torchvision's arithmetic in the boxes' own dtype: bit for bit.
            return why or _close(_f64(got), [_f64(want)], 0, 0)

        return _expectation(compare)

    names = ["boxes", "in_fmt", "out_fmt"]
    return (lambda: ops.box_convert(b, in_fmt, out_fmt)), expect, names


def case_masks_to_boxes(draw):
    n, h, w = (draw(st.integers(0, 4), "N"), draw(st.integers(0, 7), "H"),
               draw(st.integers(0, 7), "W"))  # fmt: skip
    density = draw.pick([0.3, 0.05, 0.0, 1.0], "density")
    bits = draw(st.lists(st.integers(0, 99), min_size=n * h * w, max_size=n * h * w), "pixels")
    v = (np.array(bits, np.float64) < density * 100).astype(np.float64).reshape(n, h, w)
    if v.size and draw.pick([False] * 4 + [True], "masks.special"):
        v.flat[draw(st.integers(0, v.size - 1), "at")] = draw.pick([NAN, INF, -1.0, 0.5], "value")
    rank = draw.pick(["3d"] * 12 + ["2d", "4d"], "masks.rank")
    v = {"2d": v.reshape(n * h, w), "4d": v[None]}.get(rank, v)
    kind = draw.kind("masks")
    m = _build(v, kind, draw.pick(list(TORCH_DTYPES if kind == "torch" else NP_DTYPES), "dtype"),
               draw.layout(kind, "masks"))  # fmt: skip

    def expect():
        _kind(m)
        if m.ndim != 3:
            raise Invalid("masks rank")
        hit = _as_torch(m).detach() != 0  # NaN is set, as torchvision's masks.bool()
        want = np.zeros((m.shape[0], 4))
        for i in range(m.shape[0]):
            ys, xs = np.nonzero(hit[i].numpy())
            if len(ys):
                want[i] = [xs.min(), ys.min(), xs.max(), ys.max()]
        if m.shape[0] and hit.flatten(1).any(1).all():
            assert np.array_equal(tv.ops.masks_to_boxes(hit).numpy(), want), "oracle"

        def compare(got):
            why = _output_ok(got, _kind(m), np.float32, want.shape)
            return why or _close(_f64(got), [want], 0, 0)

        return _expectation(compare)

    return (lambda: ops.masks_to_boxes(m)), expect, ["masks"]


def case_multiscale(draw):
    levels = draw(st.integers(1, 4), "levels")
    B, C = draw(st.integers(1, 2), "B"), draw(st.integers(1, 3), "C")
    H, W = draw(st.integers(8, 64), "H"), draw(st.integers(8, 64), "W")
    sizes = [(draw(st.integers(1, H), f"h{i}"), draw(st.integers(1, W), f"w{i}")) for i in range(B)]
    if all(s != (H, W) for s in sizes):
        sizes[0] = (H, W)  # the largest image decides the scales; torchvision's takes the max too
    dt = draw.pick(["float32"] * 4 + ["float64"], "dtype")
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16), "seed"))
    feats = {}
    for lv in range(levels):
        s = 2 ** (lv + 2)
        fh, fw = max(H // s, 1), max(W // s, 1)
        feats[str(lv)] = torch.randn(B, C, fh, fw, generator=gen, dtype=TORCH_DTYPES[dt])
    feats["pool"] = torch.randn(B, C, 1, 1, generator=gen, dtype=TORCH_DTYPES[dt])
    names = [str(lv) for lv in range(levels)]
    names = draw.pick([names] * 8 + [names[:1], ["x"]], "featmap_names")
    boxes = []
    for i in range(B):
        k = draw(st.integers(0, 5), f"K{i}")
        rows = []
        for _ in range(k):
            x1, y1 = draw(st.floats(0, sizes[i][1]), "x1"), draw(st.floats(0, sizes[i][0]), "y1")
            bw, bh = draw(st.floats(0, 300), "bw"), draw(st.floats(0, 300), "bh")
            rows.append([x1, y1, x1 + bw, y1 + bh])
        bv = np.array(rows, np.float64).reshape(k, 4)
        odd = draw.pick(["none"] * 12 + ["nan", "inverted", "zero"], f"boxes[{i}].odd")
        if k and odd != "none":  # (no huge boxes: torchvision's adaptive grid would never end)
            bv[0] = {"nan": [NAN, 0, 1, 1], "inverted": [5, 5, 1, 1], "zero": [3, 3, 3, 3]}[odd]
        boxes.append(torch.from_numpy(bv).to(TORCH_DTYPES[dt]))
    if draw.pick([False] * 12 + [True], "boxes.last5"):
        boxes[0] = torch.cat([boxes[0], boxes[0][:, :1]], 1)
    out_size = draw.scalar(
        "output_size", st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 3), st.integers(1, 3)))
    )
    sr = draw.scalar("sampling_ratio", st.integers(-1, 3))

    def call():
        return ops.MultiScaleRoIAlign(names, out_size, sr)(feats, boxes, sizes)

    def expect():
        if isinstance(out_size, (tuple, list)):
            if len(out_size) != 2:
                raise Invalid("output_size")
            os_ = tuple(_int(o, "output_size", 1, 2**31 - 1) for o in out_size)
        else:  # (at most INT_MAX, as roi_align's: the CUDA kernels index bins with int)
            os_ = (_int(out_size, "output_size", 1, 2**31 - 1),) * 2
        s_r = _int(sr, "sampling_ratio", maximum=1024)
        if names == ["x"]:
            raise Invalid("featmap_names")
        for i, b in enumerate(boxes):
            _shape(b, 2, 4, f"boxes[{i}]")
            _finite(_f64(b), "boxes")
        theirs = tv.ops.MultiScaleRoIAlign(names, os_, s_r)
        want = theirs(feats, boxes, sizes)
        # docs: an inverted box goes to the lowest level (torchvision's level is NaN).
        ok = torch.cat([((b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])) for b in boxes])
        tol = (1e-5, 1e-5) if dt == "float32" else (1e-10, 1e-12)

        def compare(got):
            why = _output_ok(got, "torch", want.dtype, want.shape)
            if why:
                return why
            mask = np.broadcast_to(ok.numpy()[:, None, None, None], want.shape)
            return _close(_f64(got), [_f64(want)], *tol, mask)

        return _expectation(compare)

    return call, expect, ["featmap_names", "boxes", "output_size", "sampling_ratio"]


def _rboxes_values(draw, label, n, fmt="cxcywhr", near=False):
    """float64 [n, 5] rotated boxes (cx, cy, w, h, degrees), rarely with special values, as
    `fmt` ([n, 8] for "xyxyxyxy"). near: centres within a few sides of each other, so that most
    pairs overlap (NMS's IoUs spread over [0, 1])."""
    vals = []
    for i in range(n):
        if near:
            cx, cy = (
                draw(st.integers(0, 40).map(float), f"{label}[{i}].{c}") for c in ("cx", "cy")
            )
        else:
            cx, cy = draw.coord(f"{label}[{i}].cx"), draw.coord(f"{label}[{i}].cy")
        w, h = (draw(st.integers(-2, 40).map(float), f"{label}[{i}].{s}") for s in "wh")
        a = draw(st.one_of(st.sampled_from([0.0, 90.0, 45.0, -30.0, 180.0, 270.0]),
                           st.floats(-360, 360)), f"{label}[{i}].a")  # fmt: skip
        vals.append([cx, cy, w, h, a])
    v = np.array(vals, np.float64).reshape(n, 5)
    if fmt != "cxcywhr":
        v = tv.ops.box_convert(_t(v), "cxcywhr", fmt).numpy()
    draw.special(v, label)
    return v


def _check_rboxes(x, label, cols=5):
    if _float_kind(x) != "float":
        raise Invalid(f"{label} dtype")
    _shape(x, 2, cols, label)
    v = _f64(x)
    _finite(v, label)
    return v


def _as_cxcywhr(x, v, fmt):
    """fastdet's conversion of boxes x (float64 values v) to cxcywhr: in float64, then rounded
    to x's dtype."""
    if fmt == "cxcywhr":
        return v
    c = _to_cxcywhr(v, fmt)
    return _f64(_build(c, _kind(x), _dtype_name(x.dtype), "c"))


# Rotated IoUs are compared with the reference where the boxes are moderate: centres within
# 1e4, sides within [1e-2, 1e4] (or <= 0: exactly 0); elsewhere float32 cancels every digit.
def _moderate(v):
    side_ok = ((v[:, 2] >= 1e-2) & (v[:, 3] >= 1e-2)) | (v[:, 2] <= 0) | (v[:, 3] <= 0)
    return side_ok & (np.abs(v[:, :4]).max(1, initial=0) <= 1e4)


def case_box_iou_rotated(draw):
    fmt = draw.pick(["cxcywhr"] * 8 + ["xywhr", "xyxyxyxy", "xyxy", None], "fmt")
    cols = 8 if fmt == "xyxyxyxy" else 5
    kind = draw.kind("boxes1")
    vfmt = fmt if fmt in ROTATED_FMTS else "cxcywhr"

    def rboxes(label, kind):
        v = _rboxes_values(draw, label, draw(st.integers(0, 6), f"{label}.n"), vfmt)
        return draw.array(draw.shape_variant(v, label), label, kind)

    a, b = rboxes("boxes1", kind), rboxes("boxes2", draw.other(kind, "boxes2"))

    def expect():
        if fmt not in ROTATED_FMTS:
            raise Invalid("fmt")
        _same_kind(a, b)
        va = _as_cxcywhr(a, _check_rboxes(a, "boxes1", cols), fmt)
        vb = _as_cxcywhr(b, _check_rboxes(b, "boxes2", cols), fmt)
        _finite(va, "boxes1")
        _finite(vb, "boxes2")
        cdt = _compute(a, b)
        va, vb = va.astype(cdt).astype(np.float64), vb.astype(cdt).astype(np.float64)
        ref = reference.box_iou_rotated(va, vb)
        mask = _moderate(va)[:, None] & _moderate(vb)[None, :]
        empty = ((va[:, 2] <= 0) | (va[:, 3] <= 0))[:, None] | ((vb[:, 2] <= 0) | (vb[:, 3] <= 0))
        out = _out_dtype(a, b)
        atol = 5e-5 if cdt == np.float32 else 1e-9

        def compare(got):
            why = _output_ok(got, _kind(a), out, (len(va), len(vb)))
            if why:
                return why
            g = _f64(got)
            if not ((g >= 0) & (g <= 1)).all():
                return f"IoU outside [0, 1]: {g}"
            if (g[empty] != 0).any():
                return "a box with w or h <= 0 has IoU != 0"
            extra = (
                2**-10 if _np_dtype(out) == np.float16 else 2**-7 if out == torch.bfloat16 else 0
            )
            return _close(g, [ref], extra, atol, mask)

        return _expectation(compare)

    call = lambda: ops.box_iou_rotated(a, b, fmt)  # noqa: E731
    return call, expect, ["boxes1", "boxes2", "fmt"]


def _greedy(iou, scores, thr, cls=None):
    """Greedy NMS over an IoU matrix: kept indices in decreasing score, ties by lower index."""
    order = np.argsort(-scores, kind="stable")
    live = np.ones(len(order), bool)
    keep = []
    for p, i in enumerate(order):
        if not live[p]:
            continue
        keep.append(int(i))
        rest = order[p + 1 :]
        drop = iou[i, rest] > thr
        if cls is not None:
            drop &= cls[rest] == cls[i]
        live[p + 1 :] &= ~drop
    return np.array(keep, np.int64)


def _case_nms_rotated(draw, batched):
    n = draw.pick([8, 10, 6, 4, 3, 2, 1, 0], "n")  # mostly many boxes: more pairs to decide
    kind = draw.kind("boxes")
    near = draw.pick([True] * 3 + [False], "boxes.near")
    v = _rboxes_values(draw, "boxes", n, near=near)
    b = draw.array(draw.shape_variant(v, "boxes"), "boxes", kind)
    s = draw.array(_scores(draw, n), "scores", draw.other(kind, "scores"))
    idxs = None
    if batched:
        c = [draw.pick([0, 0, 1, 0, 1, -2, 3], "idx") for _ in range(n)]  # same-class pairs
        cdt = draw.pick(["int64"] * 4 + ["int32", "uint8", "float32", "bool"], "idxs.dtype")
        idxs = _build(np.abs(c) if cdt == "uint8" else np.array(c, np.float64), kind, cdt, "c")
    good = st.one_of(st.sampled_from([0.5, 0.3, 0.7, 0.0, 1.0, -0.5, INF]), st.floats(0, 1))
    thr = draw.scalar("iou_threshold", good)
    thr = _near_pair(draw, thr, v, reference.box_iou_rotated)

    def expect():
        _same_kind(*(x for x in (b, s, idxs) if x is not None))
        vb = _check_rboxes(b, "boxes")
        vs = _check_scores(b, s)
        cls = _check_idxs(b, idxs) if batched else None
        t = _real(thr, "iou_threshold")
        cdt = _compute(b, s)
        vb, vs = vb.astype(cdt), vs.astype(cdt).astype(np.float64)
        # fastdet's own IoUs (box_iou_rotated, checked against the reference in its case) decide
        # near the threshold; the reference's, where no IoU is within 1e-4 of it.
        mine = _f64(ops.box_iou_rotated(vb, vb))
        want_self = _greedy(mine, vs, t, cls)
        ref_iou = reference.box_iou_rotated(vb, vb)
        near = np.abs(ref_iou - t) < 1e-4
        np.fill_diagonal(near, False)
        want_ref = None
        if _moderate(vb.astype(np.float64)).all() and not near.any():
            want_ref = reference.nms_rotated(vb.astype(np.float64), vs, t, idxs=cls)
        return _expectation(
            _compare_keep(b, ("greedy over box_iou_rotated", want_self), ("reference", want_ref))
        )

    if batched:
        names = ["boxes", "scores", "idxs", "iou_threshold"]
        return (lambda: ops.batched_nms_rotated(b, s, idxs, thr)), expect, names
    return (lambda: ops.nms_rotated(b, s, thr)), expect, ["boxes", "scores", "iou_threshold"]


def _to_cxcywhr(v, fmt):
    """The docs' conversion to cxcywhr in float64 (sides by hypot: no overflow where they
    fit), float64 [n, 5]."""
    if fmt == "cxcywhr":
        return v
    with np.errstate(all="ignore"):
        if fmt == "xywhr":
            x1, y1, w, h, a = v.T
        else:
            x1, y1, x2, y2, x3, y3 = v.T[:6]
            a = np.degrees(np.arctan2(y1 - y2, x2 - x1))
            w, h = np.hypot(x2 - x1, y2 - y1), np.hypot(x3 - x2, y3 - y2)
        c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
        return np.stack([x1 + w / 2 * c + h / 2 * s, y1 - w / 2 * s + h / 2 * c, w, h, a], -1)


def case_rotated_to_cxcywhr(draw):
    fmt = draw.pick(["xywhr", "xyxyxyxy"] * 4 + ["cxcywhr", "xyxy", None], "fmt")
    n = draw(st.integers(0, 6), "n")
    v = _rboxes_values(draw, "boxes", n, fmt if fmt in ROTATED_FMTS else "cxcywhr")
    b = draw.array(draw.shape_variant(v, "boxes"), "boxes")

    def expect():
        if fmt not in ROTATED_FMTS:
            raise Invalid("fmt")
        vb = _check_rboxes(b, "boxes", 8 if fmt == "xyxyxyxy" else 5)
        want64 = _to_cxcywhr(vb, fmt)
        rounded = _f64(_build(want64, _kind(b), _dtype_name(b.dtype), "c"))
        _finite(rounded, "boxes as cxcywhr")  # finite boxes whose conversion overflows
        out = b.dtype

        def compare(got):
            why = _output_ok(got, _kind(b), out, want64.shape)
            if why:
                return why
            if fmt == "cxcywhr":  # as they are (a native copy of swapped bytes)
                if isinstance(b, np.ndarray) and not b.dtype.isnative:
                    return _close(_f64(got), [vb], 0, 0)
                return None if got is b else "cxcywhr boxes: not returned as they are"
            # float64 arithmetic in another order than torchvision's: a few ulps of the
            # coordinates' magnitude, then the output's rounding.
            rtol, atol = _tol(_compute(b), out)
            scale = max(1.0, np.abs(vb).max(initial=0))
            return _close(_f64(got), [want64, rounded], rtol, atol * scale)

        return _expectation(compare)

    return (lambda: ops.rotated_to_cxcywhr(b, fmt)), expect, ["boxes", "fmt"]


def case_segfault(draw):
    """Not an op: reads address 0, so the test can check that a crash is caught."""
    import ctypes

    return (lambda: ctypes.string_at(0)), (lambda: _expectation(lambda got: None)), []


_CASES = {
    "_segfault": case_segfault,
    "box_iou": lambda d: case_pairwise(d, "box_iou"),
    "generalized_box_iou": lambda d: case_pairwise(d, "generalized_box_iou"),
    "box_area": case_box_area,
    "clip_boxes_to_image": case_clip,
    "remove_small_boxes": case_remove_small,
    "nms": case_nms,
    "batched_nms": case_batched_nms,
    "suppress_contained": case_suppress_contained,
    "soft_nms": case_soft_nms,
    "roi_align": case_roi_align,
    "AnchorGenerator": case_anchor_generator,
    "cell_anchors": case_cell_anchors,
    "BoxCoder.encode": case_encode,
    "BoxCoder.decode": case_decode,
    "distance_box_iou": lambda d: case_pairwise(d, "distance_box_iou"),
    "complete_box_iou": lambda d: case_pairwise(d, "complete_box_iou"),
    "generalized_box_iou_loss": lambda d: case_iou_loss(d, "generalized_box_iou_loss"),
    "distance_box_iou_loss": lambda d: case_iou_loss(d, "distance_box_iou_loss"),
    "complete_box_iou_loss": lambda d: case_iou_loss(d, "complete_box_iou_loss"),
    "roi_pool": case_roi_pool,
    "box_convert": case_box_convert,
    "masks_to_boxes": case_masks_to_boxes,
    "MultiScaleRoIAlign": case_multiscale,
    "box_iou_rotated": case_box_iou_rotated,
    "nms_rotated": lambda d: _case_nms_rotated(d, False),
    "batched_nms_rotated": lambda d: _case_nms_rotated(d, True),
    "rotated_to_cxcywhr": case_rotated_to_cxcywhr,
}


if __name__ == "__main__":
    import warnings

    # The fastdet the parent tests; run by hand, this checkout's (not an installed one).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(
        0, os.environ.get("FASTDET_FUZZ_ROOT") or os.path.dirname(os.path.dirname(here))
    )

    warnings.simplefilter("ignore")  # torchvision's and numpy's warnings on odd inputs
    torch.set_num_threads(1)
    _child_main(sys.argv[1:])
