"""Test-time augmentation and ensembles of detectors (fastdet.engine.tasks.det.ensemble,
`predict det` and `evaluate det` with --tta / --ensemble / --fuse)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from fastdet.cli import main
from fastdet.data.synthetic import synth_rsna
from fastdet.engine import DetConfig, load_model, predict_detections
from fastdet.engine.tasks.det.data import prepare_image
from fastdet.engine.tasks.det.ensemble import (
    _scaled,
    check_members,
    fuse_detections,
    map_back,
    member_predictions,
    parse_tta,
    predict_fused,
    tta_views,
)
from fastdet.ops import batched_nms, weighted_boxes_fusion

from .test_det_cli import TINY


class BrightBoxes(nn.Module):
    """A flip-equivariant fake detector: per channel c in (0, 1), the box around the pixels
    > 0.5 (x2 = last column + 1), label c + 1, score the mean of those pixels."""

    def forward(self, images):
        out = []
        for x in images:
            boxes, scores, labels = [], [], []
            for c in (0, 1):
                ys, xs = torch.nonzero(x[c] > 0.5, as_tuple=True)
                if len(xs):
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    scores.append(x[c][x[c] > 0.5].mean())
                    labels.append(c + 1)
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.tensor(scores, dtype=torch.float32),
                    "labels": torch.tensor(labels, dtype=torch.int64),
                }
            )
        return out


class FixedBoxes(nn.Module):
    """A fake detector returning the same detections for any image."""

    def __init__(self, det):
        super().__init__()
        self.det = det

    def forward(self, images):
        return [{k: v.clone() for k, v in self.det.items()} for _ in images]


def _blobs(rng, h=48, w=64):
    """A [3, H, W] image in 0..255 with an off-centre bright block in channels 0 and 1."""
    image = rng.uniform(0, 100, (3, h, w)).astype(np.float32)
    image[0, 5:20, 3:30] = rng.uniform(140, 255, (15, 27))
    image[1, 30:44, 40:61] = rng.uniform(140, 255, (14, 21))
    return image


def _model_like(rng, size=(48, 64), n=40):
    """Detections as a detector returns them: per label NMS at IoU 0.5, decreasing score."""
    h, w = size
    xy = rng.uniform(0, [w - 4, h - 4], (n, 2))
    wh = rng.uniform(3, [w / 2, h / 2], (n, 2))
    boxes = torch.tensor(np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1), dtype=torch.float32)
    scores = torch.tensor(rng.uniform(0.05, 1.0, n), dtype=torch.float32)
    labels = torch.tensor(rng.integers(1, 3, n), dtype=torch.int64)
    keep = batched_nms(boxes, scores, labels, 0.5)
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def test_parse_tta_and_views():
    assert parse_tta("hflip, scale") == ("hflip", "scale")
    assert parse_tta(None) == parse_tta("") == ()
    assert tta_views("scale,vflip") == [
        ("none", 1.0),
        ("scale", 0.8),
        ("scale", 1.2),
        ("vflip", 1.0),
    ]
    with pytest.raises(ValueError, match="unknown augmentation 'rot90'"):
        parse_tta("hflip,rot90")
    with pytest.raises(ValueError, match="repeated"):
        parse_tta("hflip,hflip")


def test_map_back_is_the_exact_inverse_of_a_flip(rng):
    h, w = 37, 53
    # quarter pixels, where w - (w - x) == x in float32 (else it is x to the last bit)
    boxes = torch.tensor(rng.integers(0, 4 * 36, (20, 4)) / 4, dtype=torch.float32)
    boxes = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] / 8], 1)
    # a box of columns [c1, c2) seen in the left-right flipped image covers [w - c2, w - c1)
    flipped = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    assert torch.equal(map_back(flipped, "hflip", (h, w)), boxes)
    flipped = torch.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], 1)
    assert torch.equal(map_back(flipped, "vflip", (h, w)), boxes)
    assert torch.equal(map_back(boxes, "none", (h, w)), boxes)
    real = torch.tensor(rng.uniform(0, 30, (20, 4)), dtype=torch.float32)
    twice = map_back(map_back(real, "hflip", (h, w)), "hflip", (h, w))
    torch.testing.assert_close(twice, real, atol=4e-6, rtol=0)


def test_flipped_views_map_back_to_the_plain_prediction(rng):
    """The detector's boxes on each flipped image, mapped back, equal its boxes on the
    image itself (exactly: the fake detector is flip-equivariant)."""
    image = _blobs(rng)
    member = (BrightBoxes(), DetConfig())
    per = member_predictions([member], image, "hflip,vflip")
    plain, hflip, vflip = per[0]
    assert plain["boxes"].tolist() == [[3, 5, 30, 20], [40, 30, 61, 44]]
    for view in (hflip, vflip):
        assert torch.equal(view["boxes"], plain["boxes"])
        assert torch.equal(view["labels"], plain["labels"])
        torch.testing.assert_close(view["scores"], plain["scores"])
    # the flipped view really saw other coordinates
    x = prepare_image(image, DetConfig())
    raw = BrightBoxes()([x.flip(-1)])[0]["boxes"]
    assert raw.tolist() == [[34, 5, 61, 20], [3, 30, 24, 44]]
    # WBF of the three agreeing views: the same boxes, scores avg * 3/3
    fused = predict_fused([member], image, "hflip,vflip", "wbf")
    order = torch.argsort(plain["scores"], descending=True)
    torch.testing.assert_close(fused["boxes"], plain["boxes"][order], atol=1e-4, rtol=0)
    torch.testing.assert_close(fused["scores"], plain["scores"][order], atol=1e-6, rtol=0)
    assert torch.equal(fused["labels"], plain["labels"][order])


@pytest.mark.parametrize("fuse", ["nms", "soft_nms"])
def test_one_model_without_tta_is_its_own_output(rng, fuse):
    det = _model_like(rng)
    assert len(det["boxes"]) > 10 and len(torch.unique(det["labels"])) == 2
    fused = predict_fused([(FixedBoxes(det), DetConfig())], _blobs(rng), (), fuse)
    for k in ("boxes", "scores", "labels"):
        assert torch.equal(fused[k], det[k]), k


def test_wbf_of_one_model_is_wbf_of_its_list(rng):
    det = _model_like(rng)
    h, w = 48, 64
    fused = predict_fused([(FixedBoxes(det), DetConfig())], _blobs(rng, h, w), (), "wbf")
    scale = np.array([w, h, w, h], np.float64)
    b, s, lab = weighted_boxes_fusion(
        [det["boxes"].double().numpy() / scale], [det["scores"].numpy()], [det["labels"].numpy()]
    )
    np.testing.assert_allclose(fused["boxes"].numpy(), b * scale, atol=1e-4, rtol=0)
    np.testing.assert_allclose(fused["scores"].numpy(), s, atol=1e-7, rtol=0)
    assert fused["labels"].tolist() == lab.tolist()
    # boxes overlapping at most 0.5 (< 0.55) stay apart: WBF hands back the model's detections
    torch.testing.assert_close(fused["boxes"], det["boxes"], atol=1e-4, rtol=0)
    torch.testing.assert_close(fused["scores"], det["scores"])


@pytest.mark.parametrize("fuse", ["wbf", "nms", "soft_nms"])
def test_two_identical_models_fuse_to_one(rng, fuse):
    """wbf: each cluster holds the two copies, so its box is theirs and its score
    mean(s) * 2 / 2 = s; nms and soft_nms (linear, IoU 1 -> factor 0) drop the copy."""
    det = _model_like(rng)
    image = _blobs(rng)
    one = predict_fused([(FixedBoxes(det), DetConfig())], image, (), fuse)
    two = predict_fused([(FixedBoxes(det), DetConfig())] * 2, image, (), fuse)
    torch.testing.assert_close(two["boxes"], one["boxes"], atol=1e-4, rtol=0)
    torch.testing.assert_close(two["scores"], one["scores"], atol=1e-6, rtol=0)
    assert torch.equal(two["labels"], one["labels"])
    torch.testing.assert_close(one["boxes"], det["boxes"], atol=1e-4, rtol=0)


def test_fusion_merges_and_votes():
    """Two lists: the overlapping boxes (IoU 0.8 > 0.55) fuse to their score-weighted mean,
    the box only one list found scores half under WBF; nms keeps the better of the pair."""
    a = {
        "boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 50, 50]]),
        "scores": torch.tensor([0.9, 0.6]),
        "labels": torch.tensor([1, 1]),
    }
    b = {
        "boxes": torch.tensor([[10.0, 10, 30, 34]]),  # IoU 400 / 480 with a's first
        "scores": torch.tensor([0.3]),
        "labels": torch.tensor([1]),
    }
    fused = fuse_detections([a, b], (64, 64), "wbf")
    torch.testing.assert_close(fused["boxes"][0], torch.tensor([10.0, 10, 30, 31]))
    torch.testing.assert_close(fused["scores"], torch.tensor([0.6, 0.3]))
    fused = fuse_detections([a, b], (64, 64), "nms")
    assert fused["boxes"].tolist() == [[10, 10, 30, 30], [40, 40, 50, 50]]
    fused = fuse_detections([a, b], (64, 64), "soft_nms")
    torch.testing.assert_close(fused["scores"], torch.tensor([0.9, 0.6, 0.3 * (1 - 400 / 480)]))
    assert len(fuse_detections([a, b], (64, 64), "nms", skip_box_thr=0.5)["boxes"]) == 2
    assert len(fuse_detections([a, b], (64, 64), "wbf", max_detections=1)["boxes"]) == 1
    with pytest.raises(ValueError, match="fuse must be one of"):
        fuse_detections([a], (64, 64), "mean")


def test_members_refused():
    with pytest.raises(ValueError, match="Mask R-CNN"):
        check_members([(None, DetConfig(model="maskrcnn_resnet18_fpn"))])
    with pytest.raises(ValueError, match="different num_classes"):
        check_members([(None, DetConfig()), (None, DetConfig(num_classes=3))])
    with pytest.raises(ValueError, match="at least one"):
        check_members([])


@pytest.fixture(scope="module")
def run(module_tmp):
    tmp = module_tmp("tta")
    data = synth_rsna(tmp / "rsna", n=4, seed=0, size=64)
    args = ["train", "det", "--data", str(data), "--layout", "rsna", "--out", str(tmp / "run")]
    args += ["--model", "resnet18_fpn"]
    assert main([*args, *TINY]) == 0
    return data, tmp / "run"


def test_real_detector(run, rng):
    """On a trained checkpoint: one model, no TTA, nms -> its own output; the scale views'
    resize of the model, restored afterwards."""
    _, out = run
    model, config = load_model(out / "best.pt")
    image = rng.uniform(0, 255, (1, 64, 64)).astype(np.float32)
    plain = predict_detections(model, [prepare_image(image, config)], "cpu")[0]
    fused = predict_fused([(model, config)], image, (), "nms")
    for k in ("boxes", "scores", "labels"):
        assert torch.equal(fused[k], plain[k]), k
    with _scaled(model, 1.2):  # the scale views' resize: 64 * 1.2, 96 * 1.2
        assert (model.transform.min_size, model.transform.max_size) == ((77,), 115)
    assert (model.transform.min_size, model.transform.max_size) == ((64,), 96)


def test_cli_evaluate_and_predict(run, tmp_path, capsys):
    data, out = run
    js = tmp_path / "scores.json"
    # the validation split (1 image): a forward pass costs seconds on a loaded 2-core machine
    base = ["--data", str(data), "--layout", "rsna", "--split", "val", "--device", "cpu"]
    ckpt = ["--checkpoint", str(out / "best.pt")]
    args = ["evaluate", "det", *ckpt, *base, "--json", str(js), "--max-figures", "0"]
    assert main([*args, "--tta", "scale", "--ensemble", str(out / "last.pt")]) == 0
    text = capsys.readouterr().out
    result = json.loads(js.read_text())
    assert result["images"] >= 1
    assert result["fusion"] == {
        "tta": ["scale"],
        "views": 3,
        "fuse": "wbf",
        "fuse_iou": 0.55,
        "fuse_skip": 0.0,
    }
    assert [m["checkpoint"] for m in result["members"]] == [
        str(out / "best.pt"),
        str(out / "last.pt"),
    ]
    for m in result["members"]:
        assert all(0.0 <= m[k] <= 1.0 for k in ("rsna", "rsna_thresholded", "map", "map_50"))
    assert "member 1 (" in text and "fused: 2 model(s) x 3 view(s)" in text
    # the members' figures are those of plain evaluation of each checkpoint
    assert main([*args]) == 0
    plain = json.loads(js.read_text())
    assert "members" not in plain
    assert (plain["rsna"], plain["map_50"]) == (
        result["members"][0]["rsna"],
        result["members"][0]["map_50"],
    )
    capsys.readouterr()
    dcm = sorted((data / "stage_2_train_images").glob("*.dcm"))[0]
    pred = ["predict", "det", *ckpt, str(dcm), "--device", "cpu", "--score-threshold", "0"]
    assert main([*pred, "--out", str(tmp_path / "p"), "--tta", "hflip", "--fuse", "nms"]) == 0
    with open(tmp_path / "p" / "boxes.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(0 <= float(r["x1"]) <= float(r["x2"]) <= 64 for r in rows)
    # errors: an unknown TTA word, a checkpoint of another task in --ensemble
    assert main([*pred, "--out", str(tmp_path / "q"), "--tta", "hflip,rot90"]) == 2
    assert "unknown augmentation 'rot90'" in capsys.readouterr().err
    seg = tmp_path / "seg.pt"
    torch.save({"format": "fastdet.seg.v1", "config": {}, "model": {}}, seg)
    assert main([*pred, "--out", str(tmp_path / "r"), "--ensemble", str(seg)]) == 2
    assert "not detection" in capsys.readouterr().err
