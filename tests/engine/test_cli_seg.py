"""`fastdet train seg`, `predict seg`, `evaluate seg` on tiny synthetic datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastdet.cli import main
from fastdet.data.synthetic import synth, synth_mri, synth_rsna

from .conftest import evaluate_args, predict_args, train_args

TINY = "--depth 2 --width 4 --size 32 --batch-size 2 --device cpu --no-progress".split()


@pytest.fixture(scope="module")
def run(module_tmp):
    """A DSB-2018 folder (4 images) and a 1-epoch U-Net run on it."""
    root = module_tmp("cli")
    data = synth("dsb2018", root / "data", n=4)
    out = root / "run"
    assert main(train_args("seg", data, "dsb2018", "unet", out, "--epochs", "1", *TINY)) == 0
    return data, out


def test_train_writes_run_and_resumes(run, capsys):
    data, out = run
    for name in ("config.json", "last.pt", "best.pt", "metrics.csv", "metrics.png"):
        assert (out / name).is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["extra"]["layout"] == "dsb2018" and config["size"] == 32
    capsys.readouterr()
    assert main(["train", "seg", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "epoch 1:" in text and "epoch 2:" in text
    assert len((out / "metrics.csv").read_text().splitlines()) == 3


def test_train_flags_reach_the_config(tmp_path, run):
    data, _ = run
    out = tmp_path / "flags"
    flags = ["--epochs", "1", *TINY, "--momentum", "0.8", "--gamma", "0.25"]
    flags += ["--weight-decay", "1e-4", "--no-hflip", "--no-resize", "--deterministic"]
    assert main(train_args("seg", data, "dsb2018", "unet", out, *flags)) == 0
    c = json.loads((out / "config.json").read_text())
    assert (c["momentum"], c["gamma"], c["weight_decay"]) == (0.8, 0.25, 1e-4)
    assert not c["hflip"] and c["vflip"] and not c["resize"] and c["deterministic"]


def test_train_errors(tmp_path, run, capsys):
    data, out = run
    assert main(train_args("seg", data, "dsb2018", "unet", out, *TINY)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "seg", "--out", str(tmp_path / "new"), *TINY]) == 2
    assert "--data, --layout, --model required" in capsys.readouterr().err
    assert main(train_args("seg", data, "rsna", "unet", tmp_path / "r")) == 2
    assert "train det" in capsys.readouterr().err
    assert main(["train", "seg", "--out", str(tmp_path / "none"), "--resume"]) == 2
    for cmd in (["train", "det"], ["predict", "det"], ["evaluate", "det"]):  # required options
        with pytest.raises(SystemExit) as exit_info:
            main(cmd)
        assert exit_info.value.code == 2 and "required" in capsys.readouterr().err


def test_predict_png_tiff_dicom(tmp_path, run, capsys):
    import tifffile
    from PIL import Image

    data, out = run
    sid = sorted(p.name for p in data.iterdir())[0]
    png = data / sid / "images" / f"{sid}.png"
    tif = tmp_path / "big.tif"
    grey = np.asarray(Image.open(png))[..., 0]
    tifffile.imwrite(tif, np.tile(grey, (1, 2)))  # 128 x 256: wider than the training size
    dcm = next((synth_rsna(tmp_path / "rsna", n=1, size=64) / "stage_2_train_images").iterdir())
    series = synth_mri(tmp_path / "mri", n=1, shape=(8, 32, 32)) / "sub-001"
    dest = tmp_path / "pred"
    inputs = [png, tif, dcm, series]
    flags = ["--post-process", "--tile", "32", "--overlap", "8", "--device", "cpu"]
    assert main(predict_args("seg", out / "best.pt", inputs, dest, *flags)) == 0
    written = {p.name for p in dest.iterdir()}
    assert f"{sid}_mask.png" in written and "big_mask.png" in written
    assert f"{dcm.stem}_mask.png" in written and "sub-001_mask.nii.gz" in written
    big = np.asarray(Image.open(dest / "big_mask.png"))
    assert big.shape == (128, 256) and set(np.unique(big)) <= {0, 255}
    nib = pytest.importorskip("nibabel")
    assert nib.load(dest / "sub-001_mask.nii.gz").shape == (32, 32, 8)
    assert main(predict_args("seg", out / "best.pt", [tmp_path / "no.png"], dest)) == 2


def test_evaluate_table_json_figures(tmp_path, run, capsys):
    data, out = run
    js, figs = tmp_path / "e.json", tmp_path / "figs"
    flags = ["--json", js, "--figures", figs, "--device", "cpu"]
    assert main(evaluate_args("seg", out / "best.pt", data, "dsb2018", *flags)) == 0
    text = capsys.readouterr().out
    assert "model IoU" in text and "class Dice" in text and "DSB" in text
    assert "overall model:" in text and "overall classical:" in text
    result = json.loads(js.read_text())
    assert len(result["images"]) == 8  # 4 images x (model, classical)
    assert {r["method"] for r in result["images"]} == {"model", "classical"}
    for m in ("model", "classical"):
        o = result["overall"][m]
        assert set(o) == {"iou", "dice", "sensitivity", "specificity", "dsb"}
        assert 0 <= o["specificity"]["mean"] <= 1
    assert result["overall"]["classical"]["dice"]["mean"] > 0.7  # the baseline works here
    assert len(list(figs.glob("*.png"))) == 4
    flags = ["--split", "val", "--no-classical", "--device", "cpu"]
    assert main(evaluate_args("seg", out / "best.pt", data, "dsb2018", *flags)) == 0
    assert "classical" not in capsys.readouterr().out.split("overall")[-1]


def test_mri_layout_per_subject(tmp_path, capsys):
    data = synth_mri(tmp_path / "mri", n=3, shape=(8, 32, 32))
    out = tmp_path / "run"
    flags = ["--epochs", "1", "--val-fraction", "0.34", *TINY]
    assert main(train_args("seg", data, "mri", "unet", out, *flags)) == 0
    js = tmp_path / "e.json"
    flags = ["--json", js, "--device", "cpu", "--tile", "0"]
    assert main(evaluate_args("seg", out / "last.pt", data, "mri", *flags)) == 0
    text = capsys.readouterr().out
    assert "subject" in text and "sub-002" in text
    result = json.loads(js.read_text())
    rows = [r for r in result["subjects"] if r["method"] == "model"]
    assert [r["subject"] for r in rows] == ["sub-001", "sub-002", "sub-003"]
    assert all(r["n_images"] == 8 for r in rows)
    assert "dsb" not in result["overall"]["model"]  # no instance labels in this layout


def test_train_unet_gan_from_unet(tmp_path, run, capsys):
    data, out = run
    gan = tmp_path / "gan"
    flags = ["--gan-mode", "epoch", "--init-checkpoint", out / "best.pt", "--epochs", "2", *TINY]
    assert main(train_args("seg", data, "dsb2018", "unet_gan", gan, *flags)) == 0
    header, d_row, g_row = (gan / "metrics.csv").read_text().splitlines()
    assert header.endswith("phase,d_loss") and ",d," in d_row and ",g," in g_row
    pred = tmp_path / "p"
    assert main(predict_args("seg", gan / "last.pt", [data], pred, "--device", "cpu")) == 2
    assert "no PNG, JPEG, TIFF or DICOM" in capsys.readouterr().err
    sid = sorted(p.name for p in data.iterdir())[0]
    images = [data / sid / "images"]
    assert main(predict_args("seg", gan / "last.pt", images, pred, "--device", "cpu")) == 0
    assert (pred / f"{sid}_mask.png").is_file()


def test_train_seg_on_synthetic_rsna_lungs(tmp_path):
    """synth_rsna's OUT/lungs is a folders layout `train seg` reads: a 1-epoch lung-field run
    over all of its images."""
    data = synth_rsna(tmp_path / "rsna", n=4, seed=0, size=64)
    out = tmp_path / "lungs"
    argv = train_args("seg", data / "lungs", "folders", "unet", out, "--epochs", "1", *TINY)
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["in_channels"] == 1
    assert (out / "best.pt").is_file() and (out / "metrics.csv").is_file()
