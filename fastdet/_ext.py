"""Loads the compiled core, fastdet._C, with an error that says how to rebuild it."""
from ._version import __version__

_REBUILD = (
    "Rebuild it from the source tree with `pip install -e .` (or `pip install .`); "
    "set FASTDET_CUDA=OFF to skip the CUDA kernels."
)

# torch's libraries load first: on a GPU machine (H200, torch 2.11+cu130) `import torch` after
# _C segfaulted, torch first works. _C links the system libgomp.so.1 and torch bundles its own
# under the same soname; whichever loads first serves both (see benchmarks/gpu_diag.sh).
import torch  # noqa: F401,E402

try:
    from . import _C
except ImportError as e:  # missing, or built for another Python
    raise ImportError(f"fastdet's compiled core fastdet._C could not be loaded ({e}). {_REBUILD}") from e

if getattr(_C, "__version__", None) != __version__:
    raise ImportError(
        f"fastdet._C is stale: it was built for fastdet {getattr(_C, '__version__', '?')}, "
        f"but the Python package is {__version__}. {_REBUILD}"
    )

__all__ = ["_C"]
