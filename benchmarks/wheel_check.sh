#!/usr/bin/env bash
# One wheel for every torch: build a wheel (isolated build environment: no torch), install that
# same file beside another torch release in a fresh virtual environment and run the op tests
# outside the source tree, so `import fastdet` is the installed wheel.
#   benchmarks/wheel_check.sh TORCH_VERSION [WHEEL]    e.g. benchmarks/wheel_check.sh 2.13.0
# Without WHEEL it builds one into /tmp/fastdet-wheels (FASTDET_CUDA_ARCHS shortens the build).
# torchvision is installed when a release matching the torch loads beside it; else the tests
# that need it skip, and wheel_ops_check.py checks those ops without it.
set -euo pipefail
ver=${1:?usage: wheel_check.sh TORCH_VERSION [WHEEL]}
src=$(cd "$(dirname "$0")/.." && pwd)
work=${WHEEL_CHECK_DIR:-/tmp/fastdet-wheel-check-$ver}
if [ $# -ge 2 ]; then
  wheel=$(realpath "$2")
else
  git -C "$src" archive HEAD | (rm -rf "$work/src" && mkdir -p "$work/src" && tar -x -C "$work/src")
  pip wheel "$work/src" --no-deps -w /tmp/fastdet-wheels
  wheel=$(ls -t /tmp/fastdet-wheels/fastdet-*.whl | head -1)
fi
rm -rf "$work/venv" "$work/tests" && mkdir -p "$work"
python -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q "torch==$ver" numpy scipy scikit-image pillow matplotlib pydicom \
  tifffile tqdm pytest hypothesis ensemble-boxes
# torchvision (the peer of many op tests) when the release matching this torch loads beside it
if ! { "$py" -m pip install -q "torch==$ver" torchvision && "$py" -c "import torchvision" 2>/dev/null; }; then
  echo "no torchvision that loads beside torch $ver: its comparisons skip" >&2
  "$py" -m pip uninstall -y -q torchvision || true
fi
"$py" -m pip install -q --no-deps "$wheel"
cp -r "$src/tests" "$src/pyproject.toml" "$work/"
cd "$work"
"$py" -c "import fastdet, torch; print(fastdet.__file__, torch.__version__)"
"$py" -m pytest -q -p no:cacheprovider tests/ops -rfE > pytest.log 2>&1 \
  || { grep -E "^(FAILED|ERROR)| seed [0-9]+|rerun with" pytest.log; tail -1 pytest.log; exit 1; }
tail -1 pytest.log
"$py" "$src/benchmarks/wheel_ops_check.py"
