"""The build: what fastdet._C reports, the `fastdet info` command, and the rebuild message."""

import json
import subprocess
import sys

import fastdet
from fastdet import _C


def test_build_info_reports_version_backends_threads():
    info = fastdet.build_info()
    assert info["version"] == fastdet.__version__ == _C.__version__
    assert info["backends"][0] == "cpu"
    assert info["cpu_threads"] >= 1 and isinstance(info["openmp"], bool)
    assert info["cuda_compiled"] == ("cuda" in info["backends"])
    if info["cuda_compiled"]:
        assert info["cuda_version"] and info["cuda_archs"]


def test_info_command_json():
    out = subprocess.run(
        [sys.executable, "-m", "fastdet.cli", "info", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["version"] == fastdet.__version__


def test_set_num_threads_round_trips():
    before = fastdet.get_num_threads()
    try:
        fastdet.set_num_threads(1)
        assert fastdet.get_num_threads() == 1
    finally:
        fastdet.set_num_threads(before)
    assert fastdet.get_num_threads() == before


def test_stale_core_raises_import_error_with_rebuild_hint():
    # a Python package newer than its compiled core: _version says 9.9.9, _C says otherwise
    code = (
        "import sys, types; m = types.ModuleType('fastdet._version'); m.__version__ = '9.9.9';"
        "sys.modules['fastdet._version'] = m; import fastdet"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "fastdet._C is stale" in r.stderr and "pip install -e ." in r.stderr


def test_bench_command_writes_json_and_table(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdet.cli",
            "bench",
            "--only",
            "box_iou_1000",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "box_iou_1000x1000" in r.stdout and "torchvision" in r.stdout
    data = json.loads(out.read_text())
    assert data["machine"]["build"]["version"] == fastdet.__version__
    (res,) = data["results"]
    assert res["impls"]["fastdet"]["runs"] >= 5 and res["impls"]["fastdet"]["median_ms"] > 0


def test_bench_command_rejects_unknown_case():
    r = subprocess.run(
        [sys.executable, "-m", "fastdet.cli", "bench", "--only", "no-such-case", "--json", "-"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "no case matches 'no-such-case'" in r.stderr
