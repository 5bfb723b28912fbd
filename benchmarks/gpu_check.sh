#!/usr/bin/env bash
# The one-call GPU check, for the lent GPU machine (no network there; Python 3.12, torch,
# torchvision, cupy, pybind11, cmake, ninja preinstalled). From the repository root:
#   bash benchmarks/gpu_check.sh        # results under $OUT (the device tool's) or benchmarks/results/
# pydicom is not on the GPU image: download its wheel into .whl/ here and carry .whl (see below).
# Builds fastdet in place for the local GPU's architecture, runs every GPU-marked test (three
# pytest processes side by side on the one GPU), counts the detectors' host syncs (the driver's
# count beside fastdet's own), then times every GPU case against torchvision with CUDA events:
# the detectors eager and bf16 (with per-stage times and the backbone floor), the ops, the
# segmentation and classification models, and last the compiled detectors (their first call
# compiles). Each step has its own timeout (together under 10 minutes) and the JSON is written
# after every case, so a slow step loses only itself. Files (few: the device tool returns a
# limited number): build.log, gpu_tests_{ops_a,ops_b,rest}.log, gpu_syncs.json, gpu_det.json,
# gpu_bench.json, gpu_models.json, gpu_det_batch8.json, gpu_compiled.json, bench.err; the tables go
# to stdout, so run it as
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
  timeout 120 python3 setup.py -q build_ext --inplace > "$RES/build.log" 2>&1 || { tail -40 "$RES/build.log"; exit 1; }
python3 -m fastdet.cli info

log gpu tests: every GPU-marked test, three shards at once
ops=(tests/ops/test_*.py)
half=$(( ${#ops[@]} / 2 ))
shard() {  # name, test paths...
  local name=$1; shift
  timeout 140 python3 -m pytest "$@" -m gpu -q -p no:cacheprovider -o addopts="" -rfE \
    > "$RES/gpu_tests_$name.log" 2>&1
  echo "-- $name: $(tail -1 "$RES/gpu_tests_$name.log")"
}
shard ops_a "${ops[@]:0:$half}" &
shard ops_b "${ops[@]:$half}" &
shard rest tests --ignore=tests/ops &
wait
grep -h -E "^(FAILED|ERROR)" "$RES"/gpu_tests_*.log | head -40

log host syncs per detector call "(fastdet's count, the driver's)"
timeout 30 python3 -c "import json; from fastdet.bench.syncs import detector_syncs; \
print(json.dumps(detector_syncs('cuda'), indent=1))" | tee "$RES/gpu_syncs.json"

bench() {  # seconds, json name, bench arguments...
  local t=$1 name=$2; shift 2
  timeout "$t" python3 -m fastdet.cli bench --device cuda --full "$@" --json "$RES/$name.json" \
    2>>"$RES/bench.err"
  tail -2 "$RES/bench.err"
}
log gpu benchmarks: detection models, eager and bf16
bench 90 gpu_det --kind models --only rcnn --skip compiled,batch8,channels_last
log gpu benchmarks: ops
bench 90 gpu_bench --kind ops
log gpu benchmarks: segmentation and classification models
bench 40 gpu_models --kind models --only _batch,cls_ --skip compiled,channels_last
log gpu benchmarks: detection models, batch 8 at 800 x 1,333
bench 60 gpu_det_batch8 --kind models --only batch8
log gpu benchmarks: compiled detectors "(the warm-up call compiles)"
bench 60 gpu_compiled --kind models \
  --only fasterrcnn_resnet50_fpn_600_inference_compiled,fasterrcnn_resnet50_fpn_600_train_step_compiled
log done
