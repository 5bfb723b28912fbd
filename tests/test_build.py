"""The build: what fastdet._C reports, the `fastdet info` command, and the rebuild message."""

import json
import re
import subprocess
import sys

import pytest

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


def _params(signature: str) -> list[str]:
    """The parameters of a pybind11 signature line, split at top-level commas (types such as
    typing.Annotated[..., "FixedSize(4)"] hold commas of their own)."""
    inner = signature[signature.index("(") + 1 : signature.rindex(") -> ")]
    parts, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(inner):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "[(":
            depth += 1
        elif not quoted and ch in "])":
            depth -= 1
        elif not quoted and ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    if inner.strip():
        parts.append(inner[start:].strip())
    return parts


def _bindings():
    mods = [_C.cpu] + ([_C.cuda] if _C.with_cuda else [])
    for mod in mods:
        for name in sorted(dir(mod)):
            fn = getattr(mod, name)
            if type(fn).__name__ == "builtin_function_or_method":
                yield f"{mod.__name__}.{name}", fn


def test_every_binding_has_named_arguments_and_a_docstring():
    found = list(_bindings())
    assert len(found) >= 16 + (20 if _C.with_cuda else 0)  # every kernel, not an empty walk
    for qualname, fn in found:
        name = qualname.rsplit(".", 1)[1]
        lines = (fn.__doc__ or "").strip().splitlines()
        assert lines and lines[0].startswith(f"{name}(") and ") -> " in lines[0], qualname
        assert len(lines) >= 3 and lines[1] == "" and lines[2].strip(), f"{qualname}: no docstring"
        for param in _params(lines[0]):
            assert re.fullmatch(r"[a-z_][a-z0-9_]*: \S.*", param), f"{qualname}: {param!r}"
            assert not re.match(r"arg\d+\b", param), f"{qualname}: unnamed {param!r}"


def test_kernel_codes_are_enums_of_the_compiled_module():
    assert int(_C.DType.float32) == 0 and int(_C.DType.float64) == 1
    assert int(_C.Status.non_finite) == -1 and int(_C.Status.workspace_too_small) == -2
    assert int(_C.Status.bad_index) == -3
    assert [int(m) for m in (_C.SoftNmsMethod.linear, _C.SoftNmsMethod.gaussian)] == [0, 1]
    with pytest.raises(TypeError):  # a bare int is refused where a DType is expected
        _C.cpu.count_nonfinite(0, 0, 0)
    assert _C.cpu.count_nonfinite(_C.DType.float32, 0, 0) == 0
    assert "dtype: fastdet._C.DType" in _C.cpu.box_iou.__doc__
