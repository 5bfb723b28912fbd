#!/usr/bin/env bash
# The one-call GPU check, for the lent GPU machine (no network there; Python 3.12, torch,
# torchvision, cupy, pybind11, cmake, ninja preinstalled). From the repository root:
#   bash benchmarks/gpu_check.sh        # results under $OUT (the device tool's) or benchmarks/results/
# pydicom is not on the GPU image: download its wheel into .whl/ here and carry .whl (see below).
# Builds fastdet in place for the local GPU's architecture, runs the GPU tests (ops, the
# segmentation and detection engines with AMP), then times every GPU case against torchvision
# with CUDA events: the detectors (with per-stage times), the ops, the segmentation and the
# classification models. Each step has its own timeout and the JSON is written after every case,
# so a slow step loses only itself. About 5 minutes on an H200. Files (few: the device tool
# returns a limited number): build.log, gpu_tests.log, gpu_bench.json, gpu_det.json,
# gpu_seg.json, gpu_cls.json, bench.err; the tables go to stdout, so run it as
# `bash benchmarks/gpu_check.sh 2>&1 | tee $OUT/check.log`. Put the commit into the command from
# this side (FASTDET_GIT_COMMIT=abc1234 bash ...): git in the machine's copy of the
# tree can report an older HEAD.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
RES=${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RES"
log() { echo "== $* ($(date -u +%T))"; }

log machine
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

# Packages the GPU image lacks (pydicom) travel as wheels in .whl/ (the device tool's carry).
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

log build
arch=$(python3 -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}{p[1]}')")
rm -f fastdet/_C*.so
FASTDET_CUDA=ON FASTDET_CUDA_ARCHS="${FASTDET_CUDA_ARCHS:-$arch}" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  python3 setup.py -q build_ext --inplace > "$RES/build.log" 2>&1 || { tail -40 "$RES/build.log"; exit 1; }
python3 -m fastdet.cli info

log gpu tests
timeout 150 python3 -m pytest tests -m gpu -q -p no:cacheprovider -o addopts="" -rfE 2>&1 | tee "$RES/gpu_tests.log" | tail -40

log gpu benchmarks: detection models
timeout 120 python3 -m fastdet.cli bench --device cuda --kind models --only fasterrcnn \
  --json "$RES/gpu_det.json" 2>>"$RES/bench.err"
tail -3 "$RES/bench.err"

log gpu benchmarks: ops
timeout 130 python3 -m fastdet.cli bench --device cuda --kind ops --json "$RES/gpu_bench.json" 2>>"$RES/bench.err"
tail -3 "$RES/bench.err"

log gpu benchmarks: segmentation models
timeout 70 python3 -m fastdet.cli bench --device cuda --kind models --only _batch2 \
  --json "$RES/gpu_seg.json" 2>>"$RES/bench.err"
tail -3 "$RES/bench.err"

log gpu benchmarks: classification models
timeout 90 python3 -m fastdet.cli bench --device cuda --kind models --only cls_ \
  --json "$RES/gpu_cls.json" 2>>"$RES/bench.err"
tail -3 "$RES/bench.err"
log done
