"""The classification task on the one engine: the class-folder layout, RSNA's three classes,
training and exact resume, the stored Youden's J threshold, loading, the gate's probability
function, and `fastdet train|predict|evaluate cls` on tiny data."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastdet.cli import main
from fastdet.data import ClassFolderDataset, RSNADataset
from fastdet.data.synthetic import synth_rsna
from fastdet.engine import (
    ClsConfig,
    Trainer,
    load_classifier,
    load_model,
    positive_probability,
    predict_probabilities,
    task_for,
)
from fastdet.engine.checkpoint import load_checkpoint
from fastdet.engine.logging import read_metrics_csv
from fastdet.engine.tasks.cls.data import (
    RSNA_CLASS_ORDER,
    ClsTensors,
    class_name_list,
    dataset_classes,
    inverse_frequency_weights,
    labels_for,
    open_cls_dataset,
)
from fastdet.engine.tasks.cls.task import class_probabilities, threshold_below
from fastdet.engine.tasks.det.gate import gate_keeps

CLASSES = ("disc", "horizontal", "vertical")  # sorted: the label order


def write_tree(root, n_per_class=4, size=32, seed=0, classes=CLASSES):
    """root/<class>/<i>.png (and one .jpg per class): a disc, horizontal or vertical stripes
    on noise, 0..255 grey."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            period, phase = g.uniform(5, 9), g.uniform(0, 2 * np.pi)
            if c == "horizontal":
                img = np.sin(2 * np.pi * yy / period + phase)
            elif c == "vertical":
                img = np.sin(2 * np.pi * xx / period + phase)
            else:
                cy, cx = g.uniform(size / 4, 3 * size / 4, 2)
                r = g.uniform(size / 6, size / 3)
                img = 2.0 * ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) - 1
            img = np.clip(128 + 80 * img + g.normal(0, 25, img.shape), 0, 255).astype(np.uint8)
            ext = "jpg" if i == 0 else "png"
            Image.fromarray(img).save(root / c / f"{i}.{ext}")
    return root


@pytest.fixture(scope="module")
def tree(module_tmp):
    root = write_tree(module_tmp("classes") / "data")
    (root / "disc" / "notes.txt").write_text("not an image")  # ignored, as by ImageFolder
    return root


@pytest.fixture(scope="module")
def rsna(module_tmp):
    return synth_rsna(module_tmp("rsna") / "data", n=12, seed=0, size=64)


def tiny(**kw) -> ClsConfig:
    base = dict(model="resnet18", size=32, epochs=2, batch_size=4, lr=1e-3, seed=1)
    base.update(kw, device="cpu", progress=False)
    return ClsConfig(**base)


# ---------------------------------------------------------------------- data


def test_class_folders_follow_image_folder(tree):
    ds = ClassFolderDataset(tree)
    assert ds.classes == list(CLASSES) and len(ds) == 12
    assert ds.targets == [0] * 4 + [1] * 4 + [2] * 4
    s = ds[5]
    assert s["image"].shape == (1, 32, 32) and s["image"].dtype == torch.float32
    assert (s["label"], s["id"], s["meta"]["class"]) == (1, "horizontal/1.png", "horizontal")
    assert float(s["image"].max()) > 1  # file units
    tv = pytest.importorskip("torchvision.datasets")
    theirs = tv.ImageFolder(str(tree))
    assert theirs.class_to_idx == ds.class_to_idx
    assert [t for _, t in theirs.samples] == ds.targets
    assert [p for p, _ in theirs.samples] == [it[1].as_posix() for it in ds.items]
    train = ClassFolderDataset(tree, split="train", val_fraction=0.25, split_seed=3)
    val = ClassFolderDataset(tree, split="val", val_fraction=0.25, split_seed=3)
    assert set(train.ids).isdisjoint(val.ids) and len(train) + len(val) == 12
    assert sorted(val.targets) == [0, 1, 2]  # stratified: one of each class
    assert ClassFolderDataset(tree, rgb=True)[0]["image"].shape == (3, 32, 32)


def test_hidden_folders_are_not_classes(tmp_path):
    """Unlike torchvision's ImageFolder, which makes ".hidden" a class (and refuses it empty)."""
    write_tree(tmp_path, n_per_class=2, classes=("b", "a"))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a" / ".x.png").write_bytes(b"")
    (tmp_path / "a" / "sub").mkdir()  # subfolders of a class are not read
    ds = ClassFolderDataset(tmp_path)
    assert ds.classes == ["a", "b"] and ds.ids == ["a/0.jpg", "a/1.png", "b/0.jpg", "b/1.png"]


def test_class_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        ClassFolderDataset(tmp_path / "absent")
    with pytest.raises(ValueError, match="no class folders"):
        ClassFolderDataset(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="a class folder without images"):
        ClassFolderDataset(tmp_path)
    (tmp_path / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="x.png"):
        ClassFolderDataset(tmp_path)
    with pytest.raises(ValueError, match=r"layout must be one of .*images/ and masks/"):
        open_cls_dataset("folders", tmp_path)


def test_rsna_classes_in_fixed_order(rsna, tmp_path):
    ds = RSNADataset(rsna)
    names = class_name_list(ds)
    assert names == [ds[i]["meta"]["class"] for i in range(len(ds))]
    assert dataset_classes(ds) == list(RSNA_CLASS_ORDER)
    labels = labels_for(ds, RSNA_CLASS_ORDER)
    targets = np.array([ds[i]["meta"]["target"] for i in range(len(ds))])
    assert np.array_equal(labels == 2, targets == 1)  # "Lung Opacity" is index 2
    sub = torch.utils.data.Subset(ds, [3, 1])
    assert class_name_list(sub) == [names[3], names[1]]
    assert dataset_classes(sub) == list(RSNA_CLASS_ORDER)
    with pytest.raises(ValueError, match="does not know"):
        labels_for(ds, ["Normal", "Lung Opacity"])
    import shutil

    shutil.copytree(rsna, tmp_path / "nocls")
    (tmp_path / "nocls" / "stage_2_detailed_class_info.csv").unlink()
    with pytest.raises(ValueError, match="needs stage_2_detailed_class_info.csv"):
        class_name_list(RSNADataset(tmp_path / "nocls"))


def test_class_weights_and_balanced_sampling(tree):
    w = inverse_frequency_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    np.testing.assert_allclose(w, [6 / 12, 6 / 4, 6 / 8, 0])
    ds = ClassFolderDataset(tree)
    imbalanced = torch.utils.data.Subset(ds, list(range(4)) + [4, 8])  # 4 discs, 1 + 1
    cfg = tiny(classes=list(CLASSES), in_channels=1, balance="sampling")
    data = ClsTensors(imbalanced, cfg, augment=True)
    counts = np.zeros(3)
    for epoch in range(40):
        data.set_epoch(epoch)
        counts += np.bincount(data.labels[data.order], minlength=3)
    assert counts.min() > 0.25 * counts.sum()  # each class near a third (disc alone: 2/3)
    data.set_epoch(7)
    again = ClsTensors(imbalanced, cfg, augment=True)
    again.set_epoch(7)
    assert np.array_equal(data.order, again.order)  # a function of (seed, epoch)
    x0, y0 = data[0]
    x1, y1 = again[0]
    assert torch.equal(x0, x1) and y0 == y1 and x0.shape == (1, 32, 32)
    assert abs(float(x0.mean())) < 1e-5 and float(x0.std(unbiased=False)) == pytest.approx(1, 1e-3)


# ---------------------------------------------------------------------- training


def test_train_resume_threshold_and_gate(rsna, tmp_path):
    """RSNA's three classes, balanced sampling: the run folder, a stored threshold, a resumed
    run equal to an uninterrupted one, load_model / load_classifier, and the gate's
    probabilities (the same for dataset images and detection's inputs)."""
    kw = dict(split_seed=0, val_fraction=0.34)
    train = RSNADataset(rsna, split="train", **kw)
    val = RSNADataset(rsna, split="val", **kw)
    cfg = tiny(balance="sampling")
    t = Trainer(task_for(cfg), train, val, tmp_path / "full")
    hist = t.fit()
    t.close()
    rows = read_metrics_csv(tmp_path / "full" / "metrics.csv")
    assert list(rows[0])[:7] == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_balanced_accuracy",
        "val_auc",
        "val_threshold",
    ]
    assert all(0 <= r["val_auc"] <= 1 and math.isfinite(r["train_loss"]) for r in hist)
    ckpt = load_checkpoint(tmp_path / "full" / "last.pt")
    assert ckpt["format"] == "fastdet.cls.v1"
    assert ckpt["classes"] == list(RSNA_CLASS_ORDER) and ckpt["positive_class"] == "Lung Opacity"
    assert ckpt["config"]["in_channels"] == 1 and ckpt["config"]["classes"] == ckpt["classes"]
    assert ckpt["threshold"] == pytest.approx(hist[-1]["val_threshold"])
    assert 0 < ckpt["threshold"] <= 1 and -1 <= ckpt["youden_j"] <= 1
    assert sum(ckpt["class_counts"]) == len(train)

    half = Trainer(task_for(tiny(balance="sampling", epochs=1)), train, val, tmp_path / "half")
    half.fit()
    half.close()
    resumed = Trainer(task_for(cfg), train, val, tmp_path / "half", resume=True)
    assert len(resumed.fit()) == 2
    resumed.close()
    a = load_checkpoint(tmp_path / "half" / "last.pt")
    for k, v in ckpt["model"].items():
        assert torch.equal(v, a["model"][k]), k
    assert a["threshold"] == ckpt["threshold"]

    best = tmp_path / "full" / "best.pt"
    with pytest.raises(ValueError, match="a classification checkpoint .*not detection"):
        load_model(best, task="det")
    model, config, threshold = load_classifier(best)
    assert not model.training and config.classes == list(RSNA_CLASS_ORDER)
    assert threshold == load_checkpoint(best)["threshold"]
    images = [val[i]["image"] for i in range(len(val))]
    p = predict_probabilities(model, config, images, batch_size=3)
    assert p.shape == (len(val), 3) and p.dtype == torch.float64  # one P everywhere: float64
    assert torch.allclose(p.sum(1), torch.ones(len(val), dtype=torch.float64))
    from fastdet.engine.tasks.det.data import prepare_image as det_input
    from fastdet.engine.tasks.det.task import DetConfig

    det_images = [det_input(im, DetConfig()) for im in images]  # [3, H, W] in [0, 1]
    got = predict_probabilities(model, config, det_images)
    torch.testing.assert_close(got, p, rtol=1e-5, atol=1e-6)  # float32 logits of other inputs
    pos = positive_probability(model, config, images)
    torch.testing.assert_close(pos, p[:, 2])
    torch.testing.assert_close(predict_probabilities(model, config, torch.stack(images)), p)
    with pytest.raises(ValueError, match="not one of the classifier's classes"):
        positive_probability(model, config, images, cls="Pneumothorax")


def test_config_checks(tree, tmp_path):
    with pytest.raises(ValueError, match="positive_class 'x' is not one of"):
        tiny(classes=["a", "b"], positive_class="x")
    with pytest.raises(ValueError, match="at least 2 distinct names"):
        tiny(classes=["a", "a"])
    ds = ClassFolderDataset(tree)
    with pytest.raises(ValueError, match="differ from the data's classes"):
        Trainer(task_for(tiny(classes=["a", "b"])), ds, None, tmp_path / "x")
    assert tiny(classes=["a", "b", "Lung Opacity"]).positive == "Lung Opacity"
    assert tiny(classes=["a", "b"]).positive == "b"
    assert tiny(classes=["a", "b"], positive_class="a").positive == "a"


# ---------------------------------------------------------------------- command line


def test_cli_train_predict_evaluate_classes(tree, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--data", str(tree), "--layout", "classes", "--model", "resnet18", "--size", "32"]
    flags += ["--batch-size", "4", "--device", "cpu", "--no-progress", "--val-fraction", "0.25"]
    flags += ["--positive-class", "disc", "--hflip", "0"]
    assert main(["train", "cls", "--out", str(out), *flags, "--epochs", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == list(CLASSES) and config["extra"]["layout"] == "classes"
    assert config["hflip"] == 0.0 and config["positive_class"] == "disc"
    assert main(["train", "cls", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "epoch 2: train loss" in text and "val AUC" in text
    assert load_checkpoint(out / "last.pt")["positive_class"] == "disc"

    ckpt = out / "last.pt"
    assert (
        main(
            ["predict", "cls", "--checkpoint", str(ckpt), str(tree / "vertical")]
            + ["--out", str(tmp_path / "pred"), "--device", "cpu"]
        )
        == 0
    )
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "predicted", "P(disc)", "P(horizontal)", "P(vertical)"]
    assert len(rows) == 4 and all(r["predicted"] in CLASSES for r in rows)
    assert all(abs(sum(float(r[f"P({c})"]) for c in CLASSES) - 1) < 1e-4 for r in rows)

    report = tmp_path / "eval" / "result.json"
    assert (
        main(
            ["evaluate", "cls", "--checkpoint", str(ckpt), "--data", str(tree)]
            + ["--layout", "classes", "--json", str(report), "--device", "cpu"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "confusion matrix" in printed
    r = json.loads(report.read_text())
    assert r["n_images"] == 12 and r["classes"] == list(CLASSES)
    cm = np.array(r["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 12 and list(cm.sum(1)) == [4, 4, 4]
    assert r["accuracy"] == pytest.approx(np.trace(cm) / 12)
    recall = np.diag(cm) / 4
    assert r["balanced_accuracy"] == pytest.approx(recall.mean())
    for k, c in enumerate(CLASSES):
        row = r["per_class"][c]
        assert row["support"] == 4 and row["sensitivity"] == pytest.approx(recall[k])
        assert set(row) == {"sensitivity", "specificity", "precision", "support"}
        assert 0 <= r["auc"][c] <= 1
    assert r["macro_auc"] == pytest.approx(np.mean([r["auc"][c] for c in CLASSES]))
    assert r["positive_class"] == "disc"
    if r["threshold"] is not None:
        assert set(r["at_threshold"]) == {"sensitivity", "specificity", "positives"}
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "roc.png", "predictions.csv"):
        assert (report.parent / name).is_file(), name
    with open(report.parent / "confusion_matrix.csv", newline="") as f:
        back = list(csv.DictReader(f))
    assert [int(back[i][c]) for i in range(3) for c in CLASSES] == cm.ravel().tolist()


def test_cli_rsna_layout_and_wrong_layout(rsna, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--data", str(rsna), "--layout", "rsna", "--model", "resnet18", "--size", "32"]
    flags += ["--batch-size", "4", "--device", "cpu", "--no-progress", "--epochs", "1"]
    assert main(["train", "cls", "--out", str(out), *flags]) == 0
    report = tmp_path / "r.json"
    assert (
        main(
            ["evaluate", "cls", "--checkpoint", str(out / "best.pt"), "--data", str(rsna)]
            + ["--layout", "rsna", "--split", "val", "--json", str(report)]
        )
        == 0
    )
    r = json.loads(report.read_text())
    assert r["classes"] == list(RSNA_CLASS_ORDER) and r["positive_class"] == "Lung Opacity"
    assert r["n_images"] == len(RSNADataset(rsna, split="val"))
    capsys.readouterr()
    with pytest.raises(SystemExit):  # seg's images/ + masks/ layout is not a cls layout
        main(["train", "cls", "--out", str(tmp_path / "x"), "--layout", "folders"])
    assert "invalid choice: 'folders'" in capsys.readouterr().err


def test_plain_sample_lists_and_bad_images():
    """Any dataset of sample dicts with meta["class"] works (classes sorted by name); a NaN
    image is an error naming its sample, and prepare_image's output is standardized."""
    from fastdet.engine.tasks.cls.data import prepare_image

    g = torch.Generator().manual_seed(0)
    data = [
        {"image": torch.rand(1, 20, 30, generator=g) * 255, "id": f"s{i}", "meta": {"class": c}}
        for i, c in enumerate(["b", "a", "b"])
    ]
    assert dataset_classes(data) == ["a", "b"] and list(labels_for(data, ["a", "b"])) == [1, 0, 1]
    cfg = tiny(classes=["a", "b"], in_channels=3, size=16)
    x = prepare_image(data[0]["image"], cfg)
    assert x.shape == (3, 16, 16) and abs(float(x.mean())) < 1e-5
    data[2]["image"][0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="sample 's2': image holds NaN or inf"):
        ClsTensors(data, cfg, augment=False)[2]
    with pytest.raises(ValueError, match="has no class"):
        labels_for([{"image": torch.zeros(1, 4, 4), "id": "x", "meta": {}}], ["a", "b"])


def test_one_probability_and_a_threshold_a_recomputed_p_cannot_cross():
    logits = torch.tensor([[0.2, 1.5, -0.3], [2.0, 0.1, 0.0]])
    p = class_probabilities(logits)
    assert p.dtype == torch.float64 and torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64))
    assert torch.equal(p, class_probabilities(logits.double()))  # float32 logits: same P
    scores = np.array([0.1, 0.3, 0.5, 0.3])
    t = threshold_below(scores, 0.3)
    assert t == pytest.approx(0.2)
    assert gate_keeps(0.3 - 1e-8, t) and not gate_keeps(0.1 + 1e-8, t)  # rounding cannot flip
    assert threshold_below(scores, 0.1) == pytest.approx(0.05)  # nothing lower: half of it
    assert np.isnan(threshold_below(scores, float("nan")))
    assert gate_keeps(t, t)  # a P equal to the threshold keeps the boxes
