#!/usr/bin/env bash
# Why loading fastdet._C before torch crashed `import torch` on the GPU machine: run there after
# a build (bash benchmarks/gpu_check.sh builds in place). Each line runs in a fresh interpreter.
set -u
cd "$(dirname "$0")/.."
so=$(ls fastdet/_C*.so)
t() { echo "--- $1"; timeout 60 python3 -X faulthandler -c "$1" 2>&1 | tail -3; echo "rc=${PIPESTATUS[0]}"; }
t "import ctypes; ctypes.CDLL('libgomp.so.1'); import torch; print(torch.ones(1).cuda())"
t "import ctypes; ctypes.CDLL('$so'); import torch; print(torch.ones(1).cuda())"
t "import torch; import fastdet; print(fastdet.ops.box_iou(torch.rand(3, 4).cuda(), torch.rand(2, 4).cuda()).shape)"
