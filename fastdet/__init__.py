"""fastdet: fast detection and segmentation ops and models for biomedical images."""

from . import ops
from ._ext import _C  # noqa: F401  (loads the compiled core first)
from ._info import build_info, get_num_threads, set_num_threads
from ._version import __version__

__all__ = ["__version__", "build_info", "set_num_threads", "get_num_threads", "ops"]
