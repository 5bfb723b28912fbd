"""The command line's bad-input table: every failure exits 2 with one or two lines naming the
file, flag or value and what was expected, never a traceback."""

from __future__ import annotations

import argparse

import pytest
import torch

from fastdet.cli import main
from fastdet.data.synthetic import synth_dsb2018, synth_rsna
from fastdet.engine import SegConfig, Trainer, task_for
from fastdet.engine.checkpoint import load_checkpoint

from .conftest import evaluate_args, predict_args, train_args

# A depth-1 U-Net on 16 px, for one epoch on the CPU
SEG_FLAGS = "--depth 1 --width 2 --size 16 --epochs 1 --device cpu".split()


@pytest.fixture(scope="module")
def seg_run(module_tmp):
    """A one-epoch segmentation run on 4 synthetic nuclei images: (data folder, run folder)."""
    root = module_tmp("cli_errors")
    data = synth_dsb2018(root / "data", n=4, seed=0, size=32)
    from fastdet.data import DSB2018Dataset

    config = SegConfig(model="unet", depth=1, width=2, size=16, epochs=1, batch_size=2)
    trainer = Trainer(
        task_for(SegConfig(**{**config.to_dict(), "device": "cpu", "progress": False})),
        DSB2018Dataset(data),
        None,
        root / "run",
    )
    trainer.fit()
    trainer.close()
    return data, root / "run"


def _corrupt(folder, good):
    """Checkpoints that are not: truncated, random bytes, text, empty."""
    raw = good.read_bytes()
    files = {
        "truncated": raw[: len(raw) // 2],
        "random": bytes(range(256)) * 64,
        "text": b"this is not a checkpoint\n",
        "empty": b"",
    }
    for name, content in files.items():
        (folder / f"{name}.pt").write_bytes(content)
    return [folder / f"{name}.pt" for name in files]


def _fails(capsys, argv, *needles):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and 1 <= err.count("\n") <= 2, err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


def test_corrupt_checkpoints(tmp_path, capsys, seg_run):
    data, run = seg_run
    for bad in _corrupt(tmp_path, run / "last.pt"):
        msg = "not a readable checkpoint" if bad.stat().st_size else bad.name
        _fails(capsys, evaluate_args("seg", bad, data, "dsb2018"), bad, msg)
        _fails(capsys, predict_args("det", bad, [data], tmp_path / "o"), bad)
        resumed = tmp_path / f"resume_{bad.stem}"
        resumed.mkdir()
        (resumed / "last.pt").write_bytes(bad.read_bytes())
        _fails(capsys, ["train", "seg", "--out", resumed, "--resume"], resumed / "last.pt")


def test_checkpoint_messages_name_the_file_once_and_never_the_unsafe_loader(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    argv = evaluate_args("det", missing, tmp_path, "rsna")
    assert _fails(capsys, argv) == f"fastdet evaluate det: {missing}: checkpoint not found\n"
    expected = (
        "expected a training run's best.pt or last.pt (fastdet train), or a state_dict saved "
        "with torch.save\n"
    )
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 4)
    err = _fails(capsys, evaluate_args("det", noise, tmp_path, "rsna"))
    assert err == (
        f"fastdet evaluate det: {noise}: not a readable checkpoint: not a file torch.save "
        f"wrote, or a truncated one; {expected}"
    )
    pickled = tmp_path / "pickled.pt"
    torch.save({"config": argparse.Namespace(model="unet")}, pickled)  # an object, not values
    err = _fails(capsys, evaluate_args("det", pickled, tmp_path, "rsna"))
    assert err == (
        f"fastdet evaluate det: {pickled}: not a readable checkpoint: it holds Python objects "
        f"other than tensors and plain values; {expected}"
    )
    assert "weights_only" not in err


def test_wrong_checkpoint_kind(tmp_path, capsys, seg_run):
    data, run = seg_run
    argv = evaluate_args("det", run / "last.pt", data, "dsb2018")
    _fails(capsys, argv, "segmentation checkpoint", "not detection")
    argv = predict_args("det", run / "last.pt", [data], tmp_path)
    _fails(capsys, argv, "segmentation checkpoint")


def test_output_paths_that_are_files(tmp_path, capsys, seg_run):
    data, run = seg_run
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(capsys, train_args("seg", data, "dsb2018", "unet", afile / "run", *SEG_FLAGS), afile)
    image = next(data.glob("*/images/*.png"))
    _fails(capsys, predict_args("seg", run / "last.pt", [image], afile), afile)


def test_bad_data_folders_and_files(tmp_path, capsys):
    def train_seg(data, layout, out):
        return train_args("seg", data, layout, "unet", out, *SEG_FLAGS, "--no-progress")

    missing = tmp_path / "missing"
    _fails(capsys, train_seg(missing, "dsb2018", tmp_path / "r1"), missing)
    (tmp_path / "empty").mkdir()
    _fails(capsys, train_seg(tmp_path / "empty", "folders", tmp_path / "r2"), tmp_path / "empty")
    rsna = synth_rsna(tmp_path / "rsna", n=4, seed=0, size=64)
    _fails(capsys, train_seg(rsna, "dsb2018", tmp_path / "r3"), rsna)  # a folder of another layout
    labels = rsna / "stage_2_train_labels.csv"
    labels.write_bytes(bytes(range(256)) * 4)
    det = ["--min-size", "32", "--max-size", "32", "--epochs", "1"]
    argv = train_args("det", rsna, "rsna", "resnet18_fpn", tmp_path / "r4", *det)
    _fails(capsys, argv, labels.name)
    dsb = synth_dsb2018(tmp_path / "dsb", n=4, seed=0, size=32)
    png = next(dsb.glob("*/images/*.png"))
    png.write_bytes(png.read_bytes()[:60])  # truncated
    _fails(capsys, train_seg(dsb, "dsb2018", tmp_path / "r5"), png.name)


def test_bad_values_and_flags(tmp_path, capsys, seg_run):
    data, run = seg_run
    argv = train_args("seg", data, "dsb2018", "unet", tmp_path / "r")
    _fails(capsys, [*argv, "--lr", "-1"], "lr")
    _fails(capsys, [*argv, "--hflip", "2"], "hflip")
    with pytest.raises(SystemExit) as e:  # argparse: its own two lines (usage, error)
        main(["train", "seg", "--out", str(tmp_path), "--model", "yolo"])
    assert e.value.code == 2 and "invalid choice: 'yolo'" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, seg_run):
    bad = _corrupt(tmp_path, seg_run[1] / "last.pt")[0]
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        main(["--debug", *evaluate_args("seg", bad, tmp_path, "dsb2018")])


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path, seg_run):
    """A kill -9 during a checkpoint or plot write leaves `.<name>.<random>.tmp`; the resumed
    run removes it (the finished files stay)."""
    import shutil

    data, run = seg_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in (".metrics.png.abc123.tmp", ".last.pt.x9.tmp"):
        (copy / name).write_bytes(b"half")
    from fastdet.data import DSB2018Dataset

    config = SegConfig.from_dict({**load_checkpoint(copy / "last.pt")["config"], "epochs": 2})
    trainer = Trainer(task_for(config), DSB2018Dataset(data), None, copy, resume=True)
    trainer.close()
    assert not list(copy.glob(".*.tmp")) and (copy / "last.pt").is_file()


def test_a_folder_in_another_layout_is_named_with_the_layout_it_looks_like(tmp_path, capsys):
    rsna = synth_rsna(tmp_path / "rsna", n=2, seed=0, size=64)
    nuclei = synth_dsb2018(tmp_path / "nuclei", n=2, seed=0, size=32)
    flags = ["--epochs", "1", "--device", "cpu"]
    argv = train_args("det", rsna, "dsb2018", "resnet18_fpn", tmp_path / "r1", *flags)
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"fastdet train det: {rsna}: not in the dsb2018 layout (a folder per image, "
        "<id>/images/<id>.png with its masks in <id>/masks/*.png); it looks like the rsna "
        "layout (--layout rsna)\n"
    )
    assert main(train_args("det", nuclei, "rsna", "resnet18_fpn", tmp_path / "r2", *flags)) == 2
    assert capsys.readouterr().err == (
        f"fastdet train det: {nuclei}: not in the rsna layout (stage_2_train_labels.csv and "
        "stage_2_train_images/<patientId>.dcm); it looks like the dsb2018 layout "
        "(--layout dsb2018)\n"
    )
    assert main(train_args("seg", rsna, "folders", "unet", tmp_path / "r3", *SEG_FLAGS)) == 2
    assert "not in the folders layout" in capsys.readouterr().err
