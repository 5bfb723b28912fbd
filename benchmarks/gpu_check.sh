#!/usr/bin/env bash
# The one-call GPU check, for the lent GPU machine (no network there; Python 3.12, torch,
# torchvision, cupy, pybind11, cmake, ninja preinstalled). From the repository root:
#   bash benchmarks/gpu_check.sh        # results under $OUT (the device tool's) or benchmarks/results/
# Builds fastdet in place for the local GPU's architecture, runs the GPU tests, then times every
# GPU case against torchvision with CUDA events. Stays well under 8 minutes on an H100/H200.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
RES=${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RES"
log() { echo "== $* ($(date -u +%T))"; }

log machine
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$RES/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

log build
arch=$(python3 -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}{p[1]}')")
rm -f fastdet/_C*.so
FASTDET_CUDA=ON FASTDET_CUDA_ARCHS="${FASTDET_CUDA_ARCHS:-$arch}" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  python3 setup.py -q build_ext --inplace > "$RES/build.log" 2>&1 || { tail -40 "$RES/build.log"; exit 1; }
python3 -m fastdet.cli info | tee "$RES/info.txt"

log gpu tests
timeout 200 python3 -m pytest tests -m gpu -q -p no:cacheprovider -o addopts="" -rfE 2>&1 | tee "$RES/gpu_tests.log" | tail -40

log gpu benchmarks
timeout 220 python3 -m fastdet.cli bench --device cuda --json "$RES/gpu_bench.json" 2>"$RES/gpu_bench.err" | tee "$RES/gpu_bench.txt"
tail -5 "$RES/gpu_bench.err"
log done
