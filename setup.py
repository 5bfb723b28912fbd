"""Build fastdet._C with CMake (pybind11, OpenMP, CUDA when nvcc is found).

Environment switches:
  FASTDET_CUDA=AUTO|ON|OFF   compile the CUDA kernels when nvcc is found (AUTO), always, or never
  FASTDET_CUDA_ARCHS="90"    CUDA architectures (CMake syntax); default follows the nvcc version
  FASTDET_BUILD_TYPE=Release CMake build type
  FASTDET_SANITIZE=address,undefined  the C++ kernels under these sanitizers (docs/install.md)
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()


def version():
    text = (ROOT / "fastdet" / "_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_dir = Path(self.build_temp).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda = os.environ.get("FASTDET_CUDA", "AUTO").upper()
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('FASTDET_BUILD_TYPE', 'Release')}",
            f"-DFASTDET_CUDA={cuda}",
            f"-DFASTDET_VERSION={version()}",
        ]
        # always passed: CMake caches it, so a build after a sanitized one must clear it
        args.append(f"-DFASTDET_SANITIZE={os.environ.get('FASTDET_SANITIZE', '')}")
        if os.environ.get("FASTDET_CUDA_ARCHS"):
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={os.environ['FASTDET_CUDA_ARCHS']}")
        try:
            import ninja  # noqa: F401

            args.append("-GNinja")
        except ImportError:
            pass
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_dir, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_dir, check=True)


setup(
    version=version(),
    ext_modules=[CMakeExtension("fastdet._C")],
    cmdclass={"build_ext": CMakeBuild},
)
