"""Loads the compiled core, fastdet._C, with an error that says how to rebuild it."""

from ._version import __version__

_REBUILD = (
    "Rebuild it from the source tree with `pip install -e .` (or `pip install .`); "
    "set FASTDET_CUDA=OFF to skip the CUDA kernels."
)

# torch loads first. On the GPU machine (H200, torch 2.11+cu130, Python 3.12) dlopen-ing _C's
# shared object before torch, even without initialising the module, made `import torch` segfault;
# loading the system libgomp first did not (benchmarks/gpu_diag.sh). Suspect, unconfirmed: the
# static CUDA runtime's load-time registration before torch's dynamic one.
import torch  # noqa: F401,E402

try:
    from . import _C
except ImportError as e:  # missing, or built for another Python
    raise ImportError(
        f"fastdet's compiled core fastdet._C could not be loaded ({e}). {_REBUILD}"
    ) from e

if getattr(_C, "__version__", None) != __version__:
    raise ImportError(
        f"fastdet._C is stale: it was built for fastdet {getattr(_C, '__version__', '?')}, "
        f"but the Python package is {__version__}. {_REBUILD}"
    )

__all__ = ["_C"]
