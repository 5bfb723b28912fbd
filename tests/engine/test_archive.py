"""`predict det` over archives (engine.archive, det.predict): the field's formats parsed back,
unreadable inputs listed and skipped, a kill -9 resumed to the uninterrupted output, a rerun
refused with other settings, torchrun's 2 processes equal to one, `fastdet merge`.

The detector is an untrained fasterrcnn_resnet18_fpn at 64 px (its boxes are arbitrary but
deterministic), scored from 0 so every image has boxes; the inputs are synthetic RSNA DICOMs.
Runs compared byte for byte predict one image per batch on one thread, in this process and in
the ones it starts: a batch's composition or a thread count may move a float's last bits, and
a written digit with it."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from fastdet.cli import main
from fastdet.data.synthetic import synth_rsna
from fastdet.engine.tasks.det.task import CHECKPOINT_FORMAT, DetConfig, build_model

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """(checkpoint, the DICOM inputs)."""
    root = tmp_path_factory.mktemp("archive")
    torch.manual_seed(0)
    config = DetConfig(model="fasterrcnn_resnet18_fpn", num_classes=2, min_size=64, max_size=64)
    model = build_model(config, pretrained=False)
    ckpt = root / "det.pt"
    state = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "model": model.state_dict()}
    torch.save(state, ckpt)
    data = synth_rsna(root / "rsna", n=6, seed=0, size=64)
    return ckpt, sorted((data / "stage_2_train_images").glob("*.dcm"))


def _argv(ckpt, inputs, out, *flags):
    base = ["predict", "det", "--checkpoint", str(ckpt), *map(str, inputs), "--out", str(out)]
    flags = ["--score-threshold", "0", "--device", "cpu", "--workers", "0", *flags]
    return [*base, *flags] if "--batch-size" in flags else [*base, "--batch-size", "1", *flags]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rsna_submission_parses_back_to_the_boxes(archive, tmp_path):
    ckpt, dcms = archive
    out = tmp_path / "p"
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in dcms[::-1]))  # @FILE, any order
    assert main(_argv(ckpt, [f"@{listing}"], out, "--format", "rsna", "--batch-size", "4")) == 0
    boxes = _rows(out / "boxes.csv")
    assert [r["path"] for r in boxes] == sorted(r["path"] for r in boxes)
    by_path = defaultdict(list)
    for r in boxes:
        by_path[Path(r["path"]).stem].append(r)
    sub = _rows(out / "submission.csv")
    assert [r["patientId"] for r in sub] == [p.stem for p in dcms]  # one row per input
    for row in sub:
        words = row["PredictionString"].split()
        groups = [words[i : i + 5] for i in range(0, len(words), 5)]
        want = by_path[row["patientId"]]
        assert len(groups) == len(want) > 0
        scores = [float(g[0]) for g in groups]
        assert scores == sorted(scores, reverse=True)
        for g, r in zip(groups, want):
            x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
            assert g[0] == r["score"] and len(g[0].split(".")[1]) == 4
            got = [float(v) for v in g[1:]]
            assert got == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.051)


def test_coco_results_use_the_sorted_index_or_the_ground_truth_ids(archive, tmp_path):
    ckpt, dcms = archive
    assert main(_argv(ckpt, dcms[:2], tmp_path / "a", "--format", "coco")) == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {r["image_id"] for r in results} == {0, 1}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in results)
    gt = tmp_path / "gt.json"
    images = [{"id": 70 + i, "file_name": f"x/{p.name}"} for i, p in enumerate(dcms[:2])]
    gt.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    flags = ("--format", "coco", "--coco-gt", str(gt))
    assert main(_argv(ckpt, dcms[:2], tmp_path / "b", *flags)) == 0
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert {r["image_id"] for r in results} == {70, 71}


def test_an_unreadable_input_is_listed_and_the_rest_predicted(archive, tmp_path, capsys):
    ckpt, dcms = archive
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM but not really" * 10)
    out = tmp_path / "p"
    assert main(_argv(ckpt, [*dcms[:3], bad], out)) == 0
    text = capsys.readouterr().out
    assert "1 could not be read" in text and str(out / "errors.csv") in text
    errors = _rows(out / "errors.csv")
    assert [r["path"] for r in errors] == [str(bad)] and errors[0]["error"]
    assert {r["path"] for r in _rows(out / "boxes.csv")} == set(map(str, dcms[:3]))
    assert main(_argv(ckpt, [*dcms[:3], bad], tmp_path / "s", "--strict")) == 2
    assert "broken.dcm" in capsys.readouterr().err


def test_a_rerun_skips_what_is_done_and_refuses_other_settings(archive, tmp_path, capsys):
    ckpt, dcms = archive
    out = tmp_path / "p"
    assert main(_argv(ckpt, dcms[:2], out)) == 0
    first = (out / "boxes.csv").read_text()
    capsys.readouterr()
    assert main(_argv(ckpt, dcms[:3], out)) == 0  # one more input: only it is predicted
    assert "1 now, 2 done before" in capsys.readouterr().out
    assert (out / "boxes.csv").read_text().startswith(first.splitlines()[0])
    assert main(_argv(ckpt, dcms[:3], out, "--nms-iou", "0.3")) == 2
    assert "other settings" in capsys.readouterr().err


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.pop("WORLD_SIZE", None)
    return env


def test_kill_9_then_resume_gives_the_uninterrupted_output(archive, tmp_path):
    ckpt, dcms = archive
    assert main(_argv(ckpt, dcms, tmp_path / "whole", "--format", "rsna")) == 0
    out = tmp_path / "killed"
    argv = _argv(ckpt, dcms, out, "--format", "rsna", "--no-progress")
    proc = subprocess.Popen([sys.executable, "-m", "fastdet.cli", *argv], env=_env())
    manifest = out / "parts" / "rank-0" / "manifest.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and len(manifest.read_text().splitlines()) >= 3:
            break  # two inputs recorded, the third on its way
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "submission.csv").exists()  # killed before the end
    with open(out / "parts" / "rank-0" / "boxes.csv", "a") as f:
        f.write(f"{dcms[-1]},1.0,2.0,3")  # what a kill mid-write leaves: a cut row
    with open(manifest, "a") as f:
        f.write(f"{dcms[-1]},ok,12")  # and a cut record
    assert main(argv) == 0
    for name in ("boxes.csv", "submission.csv"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_torchrun_two_processes_equal_one(archive, tmp_path):
    ckpt, dcms = archive
    assert main(_argv(ckpt, dcms, tmp_path / "one", "--format", "rsna", "--workers", "1")) == 0
    out = tmp_path / "two"
    argv = _argv(ckpt, dcms, out, "--format", "rsna", "--no-progress")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    r = subprocess.run(
        [*cmd, "-m", "fastdet.cli", *argv], env=_env(), capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["rank-0", "rank-1"]
    for name in ("boxes.csv", "submission.csv"):
        assert (out / name).read_text() == (tmp_path / "one" / name).read_text(), name
    # a rerun in one process finds everything done by the two ranks: no row twice
    assert main(argv) == 0
    assert (out / "boxes.csv").read_text() == (tmp_path / "one" / "boxes.csv").read_text()
    (out / "boxes.csv").unlink()  # `fastdet merge` writes the final files again from the parts
    assert main(["merge", str(out)]) == 0
    assert (out / "boxes.csv").read_text() == (tmp_path / "one" / "boxes.csv").read_text()


def test_predict_cls_over_an_archive(tmp_path):
    from fastdet.engine.tasks.cls.task import CHECKPOINT_FORMAT as CLS_FORMAT
    from fastdet.engine.tasks.cls.task import ClsConfig
    from fastdet.engine.tasks.cls.task import build_model as build_cls

    torch.manual_seed(0)
    config = ClsConfig(model="resnet18", classes=["a", "b"], in_channels=1, size=32)
    ckpt = tmp_path / "cls.pt"
    state = {"format": CLS_FORMAT, "config": config.to_dict()}
    torch.save({**state, "model": build_cls(config, pretrained=False).state_dict()}, ckpt)
    data = synth_rsna(tmp_path / "rsna", n=3, seed=1, size=64)
    dcms = sorted((data / "stage_2_train_images").glob("*.dcm"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    argv = ["predict", "cls", "--checkpoint", str(ckpt), *map(str, [bad, *dcms])]
    argv += ["--out", str(tmp_path / "p"), "--device", "cpu", "--workers", "0", "--batch-size", "2"]
    assert main(argv) == 0
    rows = _rows(tmp_path / "p" / "predictions.csv")
    assert [r["path"] for r in rows] == list(map(str, dcms))
    assert all(abs(float(r["P(a)"]) + float(r["P(b)"]) - 1) < 1e-5 for r in rows)
    assert [r["path"] for r in _rows(tmp_path / "p" / "errors.csv")] == [str(bad)]
