"""What was built and what it runs on: `fastdet.build_info()` and `fastdet info`."""

from __future__ import annotations

import platform

from ._ext import _C
from ._version import __version__


def set_num_threads(n: int) -> None:
    """Threads for fastdet's CPU kernels (n < 1 restores the OpenMP default)."""
    _C.cpu.set_num_threads(int(n))


def get_num_threads() -> int:
    return _C.cpu.max_threads()


def _gpus() -> list[dict]:
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(
                {
                    "index": i,
                    "name": p.name,
                    "capability": f"{p.major}.{p.minor}",
                    "memory_gib": round(p.total_memory / 2**30, 1),
                }
            )
        return out
    except Exception:  # a broken driver must not break `fastdet info`
        return []


def run_command(args: list[str], **kwargs):
    """subprocess.run(args) with its output captured as text; None where the command cannot
    run or times out (a missing tool must not break what only reports it)."""
    import subprocess

    try:
        return subprocess.run(args, capture_output=True, text=True, **kwargs)
    except (OSError, subprocess.SubprocessError):
        return None


def _driver() -> str | None:
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    r = run_command(query, timeout=10)
    ok = r is not None and r.returncode == 0 and r.stdout.strip()
    return r.stdout.strip().splitlines()[0] if ok else None


def build_info() -> dict:
    """Version, compiled backends, OpenMP threads, CUDA version and architectures, GPUs."""
    info = {
        "version": __version__,
        "python": platform.python_version(),
        "backends": ["cpu"] + (["cuda"] if _C.with_cuda else []),
        "openmp": bool(_C.openmp),
        "cpu_threads": _C.cpu.max_threads(),
        "cuda_compiled": bool(_C.with_cuda),
    }
    if _C.with_cuda:
        info["cuda_version"] = _C.cuda.version()
        info["cuda_archs"] = _C.cuda.archs()
        info["cuda_devices_visible"] = _C.cuda.device_count()
        gpus = _gpus()
        if gpus:
            info["gpus"] = gpus
            info["driver"] = _driver()
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info
