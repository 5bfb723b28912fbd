"""fastdet: fast detection and segmentation ops and models for biomedical images."""
from ._version import __version__
from ._ext import _C
from ._info import build_info, set_num_threads, get_num_threads
from . import ops

__all__ = ["__version__", "build_info", "set_num_threads", "get_num_threads", "ops"]
