"""fastdet.export and `fastdet export`: ONNX files run in onnxruntime and give PyTorch's outputs
(segmentation probabilities within 1e-4; detections the same, boxes within 0.5 px and scores
within 1e-4, apart from detections within 1e-4 of the score threshold or of the NMS threshold,
where rounding may decide the other way); .pt2 programs load and give the eager model's outputs;
a model with an op ONNX cannot hold is refused naming the op.

Checkpoints are written in the engine's format from seeded, untrained models (the box
predictor's weights spread so that scores differ), which is all export needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdet.cli import main
from fastdet.engine import load_model
from fastdet.engine.tasks.det.data import prepare_image
from fastdet.engine.tasks.det.point import OperatingPoint, apply_point
from fastdet.engine.tasks.det.predictor import load_detector_at_point
from fastdet.engine.tasks.det.task import CHECKPOINT_FORMAT as DET_FORMAT
from fastdet.engine.tasks.det.task import DetConfig, build_model
from fastdet.engine.tasks.seg.task import CHECKPOINT_FORMAT as SEG_FORMAT
from fastdet.engine.tasks.seg.task import SegConfig
from fastdet.engine.tasks.seg.task import build_model as build_seg
from fastdet.export import export_model, write_onnx
from fastdet.ops import box_iou

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

SIZE = 96  # detection: min_size, and the exported graph's image side


def _save(path, fmt, config, model):
    torch.save({"format": fmt, "config": config.to_dict(), "model": model.state_dict()}, path)
    return path


def _export(ckpt, path, fmt):
    """What `fastdet export` does: the checkpoint's model (a copy of its own) written out."""
    model, config = load_model(ckpt)
    return export_model(model, path, fmt, config=config)


def _session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # no warnings about constant folding
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def seg_ckpt(module_tmp):
    torch.manual_seed(0)
    config = SegConfig(model="unet", depth=2, width=4, in_channels=1, size=32)
    model = build_seg(config, pretrained=False)
    for m in model.modules():  # BatchNorm statistics that do something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return _save(module_tmp("seg") / "seg.pt", SEG_FORMAT, config, model)


def _det_ckpt(folder, name):
    torch.manual_seed(1)
    config = DetConfig(model=name, num_classes=3, min_size=SIZE, max_size=128, progress=False)
    model = build_model(config, pretrained=False)
    with torch.no_grad():  # scores spread over (0, 1) rather than all near 1 / classes
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.2)
    return _save(folder / f"{name}.pt", DET_FORMAT, config, model)


@pytest.fixture(scope="module")
def mask_ckpt(module_tmp):
    return _det_ckpt(module_tmp("mask"), "maskrcnn_resnet18_fpn")


def _images(rng, n=2):
    """Grey test images (file units, 0..255) with a few bright rectangles, prepared as the engine
    prepares them: float [3, SIZE, SIZE] in [0, 1]."""
    out = []
    for _ in range(n):
        im = rng.random((SIZE, SIZE)) * 60
        for _ in range(4):
            y, x = rng.integers(0, SIZE - 20, 2)
            im[y : y + rng.integers(8, 20), x : x + rng.integers(8, 20)] += 150
        out.append(prepare_image(im[None].astype(np.float32), DetConfig()))
    return out


def _explained(i, dets, score_thresh, nms_thresh, tol=1e-4):
    """True when detection i of dets sits within tol of the score threshold or of the NMS
    threshold against a detection of its label (where rounding may keep or drop it)."""
    if abs(float(dets["scores"][i]) - score_thresh) <= tol:
        return True
    same = dets["labels"] == dets["labels"][i]
    same[i] = False
    if not same.any():
        return False
    iou = box_iou(torch.as_tensor(dets["boxes"][i : i + 1]), torch.as_tensor(dets["boxes"][same]))
    return bool(((iou - nms_thresh).abs() <= tol).any())


def _match(ref: dict, got: dict, score_thresh: float, nms_thresh: float) -> list[tuple[int, int]]:
    """Pairs (i, j) of equal detections (label equal, boxes within 0.5 px, scores within 1e-4),
    each used once; every unpaired detection must be explained by a threshold."""
    ref = {k: v.detach().numpy() for k, v in ref.items()}
    used, pairs = set(), []
    for i in range(len(ref["scores"])):
        for j in range(len(got["scores"])):
            if (
                j not in used
                and got["labels"][j] == ref["labels"][i]
                and abs(got["scores"][j] - ref["scores"][i]) <= 1e-4
                and np.abs(got["boxes"][j] - ref["boxes"][i]).max() <= 0.5
            ):
                used.add(j)
                pairs.append((i, j))
                break
    paired_ref = {i for i, _ in pairs}
    for name, dets, paired in (("pytorch", ref, paired_ref), ("exported", got, used)):
        for i in set(range(len(dets["scores"]))) - paired:
            assert _explained(i, dets, score_thresh, nms_thresh), (
                f"{name} detection {i} (score {dets['scores'][i]}, box {dets['boxes'][i]}) has "
                "no equal in the other output and sits at no threshold"
            )
    return pairs


# ---------------------------------------------------------------------- segmentation


def test_segmentation_onnx_and_pt2(seg_ckpt, tmp_path, rng):
    model, _ = load_model(seg_ckpt)
    onnx_file = _export(seg_ckpt, tmp_path / "unet.onnx", "onnx")
    pt2_file = _export(seg_ckpt, tmp_path / "unet.pt2", "pt2")
    session = _session(onnx_file)
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    program = torch.export.load(pt2_file)
    # batch and image size are dynamic (sides in multiples of 2^depth = 4): other than the
    # example's (2 x 1 x 32 x 32)
    for shape in ((1, 1, 32, 32), (3, 1, 40, 52), (2, 1, 36, 28)):
        x = torch.as_tensor(rng.random(shape), dtype=torch.float32)
        with torch.no_grad():
            want = torch.sigmoid(model(x))
        (got,) = session.run(None, {"input": x.numpy()})
        assert got.shape == tuple(want.shape) == (shape[0], 1, *shape[2:])
        np.testing.assert_allclose(torch.sigmoid(torch.as_tensor(got)), want, atol=1e-4, rtol=0)
        with torch.no_grad():
            out = program.module()(x)
        torch.testing.assert_close(torch.sigmoid(out), want, atol=1e-6, rtol=0)


def test_a_model_without_a_checkpoint_exports(tmp_path, rng):
    """export_model takes any model: no engine config (the example is 224 square)."""
    torch.manual_seed(3)
    model = build_seg(SegConfig(model="unet", depth=2, width=4, in_channels=1), pretrained=False)
    model.train()  # exported in eval mode all the same
    program = torch.export.load(export_model(model, tmp_path / "unet.pt2", "pt2"))
    assert not model.training
    x = torch.as_tensor(rng.random((1, 1, 44, 36)), dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------- Mask R-CNN


def test_maskrcnn_onnx_matches_pytorch(mask_ckpt, tmp_path, rng):
    """ONNX: boxes, scores, labels and the unpasted [D, 28, 28] mask probabilities."""
    model, config = load_model(mask_ckpt)
    model.paste_masks = False
    path = _export(mask_ckpt, tmp_path / "maskrcnn.onnx", "onnx")
    graph = onnx.load(str(path)).graph  # standard operators only: no fastdet, no functions
    assert {n.domain for n in graph.node} == {""} and not onnx.load(str(path)).functions
    assert {"NonMaxSuppression", "RoiAlign"} <= {n.op_type for n in graph.node}
    session = _session(path)
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "masks"]
    heads, total = model.roi_heads, 0
    for image in _images(rng):
        with torch.no_grad():
            ref = model([image])[0]
        boxes, scores, labels, masks = session.run(None, {"image": image.numpy()})
        got = {"boxes": boxes, "scores": scores, "labels": labels}
        assert masks.shape == (len(scores), 28, 28) and labels.dtype == np.int64
        pairs = _match(ref, got, heads.score_thresh, heads.nms_thresh)
        for i, j in pairs:
            np.testing.assert_allclose(masks[j], ref["masks"][i].numpy(), atol=1e-4, rtol=0)
        total += len(pairs)
    assert total > 10  # the comparison saw detections


def test_maskrcnn_pt2_pastes_masks(mask_ckpt, tmp_path, rng):
    model, _ = load_model(mask_ckpt)
    assert model.paste_masks is False  # the engine's; the .pt2 pastes, as torchvision
    path = _export(mask_ckpt, tmp_path / "maskrcnn.pt2", "pt2")
    program = torch.export.load(path)
    model.paste_masks = True
    for image in _images(rng, 1):
        with torch.no_grad():
            ref = model([image])[0]
            boxes, scores, labels, masks = program.module()(image)
        assert masks.shape == (len(scores), 1, SIZE, SIZE) and len(scores) > 0
        torch.testing.assert_close(boxes, ref["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(scores, ref["scores"], atol=1e-6, rtol=0)
        assert torch.equal(labels, ref["labels"])
        torch.testing.assert_close(masks, ref["masks"], atol=1e-5, rtol=0)
    # the pasting op has no ONNX form: said, naming the op
    with pytest.raises(ValueError, match="op fastdet.paste_masks: Mask R-CNN exports unpasted"):
        write_onnx(program, tmp_path / "x.onnx", "image", ("boxes",))
    assert not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------------- the command


def test_export_command(tmp_path, capsys, rng):
    ckpt = _det_ckpt(tmp_path, "fasterrcnn_resnet18_fpn")
    out = tmp_path / "out" / "frcnn.pt2"
    args = ["export", "--checkpoint", str(ckpt), "--format", "pt2", "--out", str(out)]
    assert main([*args, "--image-size", str(SIZE), str(SIZE + 16)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model, _ = load_model(ckpt)
    program = torch.export.load(out)
    for image in _images(rng, 1):
        image = torch.cat([image, image[:, :, :16]], 2)  # the --image-size given
        with torch.no_grad():
            ref = model([image])[0]
            got = program.module()(image)
        assert len(got) == 3 and len(ref["scores"]) > 0
        for k, v in zip(("boxes", "scores", "labels"), got):
            torch.testing.assert_close(v, ref[k], atol=1e-4, rtol=0)
    # a file that is no checkpoint: one line, status 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(bad), "--format", "onnx", "--out", "x"]) == 2
    assert "fastdet export: " in capsys.readouterr().err


def test_export_carries_the_stored_operating_point(tmp_path, capsys, rng):
    """A deployed detector gives predict det's boxes: the point's NMS, containment, cap and
    threshold run inside the graph (pt2); ONNX refuses containment, naming the fixes."""
    ckpt = _det_ckpt(tmp_path, "fasterrcnn_resnet18_fpn")
    saved = torch.load(ckpt, weights_only=True)
    point = OperatingPoint(0.2, 0.3, 0.5, 3, "val", "f1", 0.5)
    saved["operating_point"] = point.as_dict()
    torch.save(saved, ckpt)
    out = tmp_path / "frcnn.pt2"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "pt2", "--out", str(out)]) == 0
    assert "operating point" in capsys.readouterr().out
    model, _, stored = load_detector_at_point(ckpt)  # permissive, as predict det runs it
    program = torch.export.load(out)
    shown = 0
    for image in _images(rng, 2):
        with torch.no_grad():
            want = apply_point(model([image])[0], stored)
            got = program.module()(image)
        assert len(got[0]) <= 3 and len(got[0]) == len(want["boxes"])
        shown += len(got[0])
        for k, v in zip(("boxes", "scores", "labels"), got):
            torch.testing.assert_close(v, want[k], atol=1e-4, rtol=0)
    assert shown > 0
    onnx = ["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m")]
    assert main(onnx) == 2
    assert "containment off" in capsys.readouterr().err
    raw = tmp_path / "raw.pt2"
    assert (
        main(["export", "--checkpoint", str(ckpt), "--format", "pt2", "--out", str(raw), "--raw"])
        == 0
    )
    assert "operating point" not in capsys.readouterr().out


def test_export_model_rejects_a_format(seg_ckpt, tmp_path):
    model, config = load_model(seg_ckpt)
    with pytest.raises(ValueError, match="format must be one of \\('onnx', 'pt2'\\), got 'tflite'"):
        export_model(model, tmp_path / "m.tflite", "tflite", config=config)
    assert not (tmp_path / "m.tflite").exists()


# ---------------------------------------------------------------------- the translated ops


class _Ops(torch.nn.Module):
    def forward(self, x, rois, boxes, scores, idxs, inverted):
        from fastdet import ops

        none = ops.remove_small_boxes(boxes, 1000.0)
        return (
            ops.roi_align(x, rois, (5, 4), 0.5, -1, True),  # adaptive sampling, aligned
            ops.roi_align(x, rois, 3, 0.25, 2, False),
            ops.nms(boxes, scores, 0.5),
            ops.batched_nms(boxes, scores, idxs, 0.3),
            # none left (an image without findings): empty outputs, no failure
            ops.batched_nms(boxes[none], scores[none], idxs[none], 0.3),
            ops.roi_align(x, rois[none], 3, 0.25, 2, False),
            ops.nms(inverted, scores[:2], 0.5),  # the documented difference
        )


def test_ops_translate_to_onnx_operators(tmp_path, rng):
    """roi_align (both coordinate modes, adaptive and fixed sampling), nms and batched_nms on
    boxes with negative coordinates (distinct scores: no ties) give fastdet's results; no boxes
    give empty outputs; inverted boxes differ as documented."""
    x = torch.as_tensor(rng.random((2, 3, 20, 24)), dtype=torch.float32)
    n = 30  # crowded: NMS drops some
    xy = rng.random((n, 2)) * 20 - 10
    wh = rng.random((n, 2)) * 20 + 5
    rois = np.concatenate([rng.integers(0, 2, (n, 1)), xy + 10, xy + 10 + wh], 1)
    boxes = torch.as_tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
    scores = torch.as_tensor(rng.permutation(100)[:n] / 100 + 0.005, dtype=torch.float32)
    idxs = torch.as_tensor(rng.integers(0, 3, n))
    inverted = torch.tensor([[0.0, 0, 10, 10], [10, 10, 0, 0]])  # the second x2 < x1, y2 < y1
    args = (x, torch.as_tensor(rois, dtype=torch.float32), boxes, scores, idxs, inverted)
    with torch.no_grad():
        want = _Ops()(*args)
        program = torch.export.export(_Ops(), args, strict=False)
    names = ("x", "rois", "boxes", "scores", "idxs", "inverted")
    outputs = ("a1", "a2", "keep", "bkeep", "none", "a3", "inv")
    path = write_onnx(program, tmp_path / "ops.onnx", names, outputs)
    got = _session(path).run(None, {n: a.numpy() for n, a in zip(names, args)})
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=0)
    assert got[2].tolist() == want[2].tolist() and len(want[2]) < n
    assert got[3].tolist() == want[3].tolist() and len(want[3]) < n
    assert got[4].shape == tuple(want[4].shape) == (0,) and got[4].dtype == np.int64
    assert got[5].shape == tuple(want[5].shape) == (0, 3, 3, 3)
    # an inverted box: fastdet gives it area 0 (IoU 0, both kept); NonMaxSuppression normalises
    # it to the first box: the higher-scoring of the two suppresses the other
    assert sorted(want[6].tolist()) == [0, 1]
    assert got[6].tolist() == [int(scores[:2].argmax())]


# ---------------------------------------------------------------------- classification


def test_classifier_onnx_and_pt2(tmp_path, rng):
    """A cls checkpoint exports as a tensor-in, `logits`-out graph; batch dynamic."""
    from fastdet.engine.tasks.cls.task import CHECKPOINT_FORMAT as CLS_FORMAT
    from fastdet.engine.tasks.cls.task import ClsConfig
    from fastdet.engine.tasks.cls.task import build_model as build_cls

    torch.manual_seed(2)
    config = ClsConfig(model="resnet18", classes=["a", "b", "c"], in_channels=1, size=64)
    ckpt = _save(tmp_path / "cls.pt", CLS_FORMAT, config, build_cls(config, pretrained=False))
    model, _ = load_model(ckpt)
    session = _session(_export(ckpt, tmp_path / "cls.onnx", "onnx"))
    assert [o.name for o in session.get_outputs()] == ["logits"]
    program = torch.export.load(_export(ckpt, tmp_path / "cls.pt2", "pt2"))
    for n in (1, 3):
        x = torch.as_tensor(rng.standard_normal((n, 1, 64, 64)), dtype=torch.float32)
        with torch.no_grad():
            want = model(x)
            got = program.module()(x)
        assert want.shape == (n, 3)
        (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        np.testing.assert_allclose(onnx_out, want.numpy(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
