"""The classifier bench cases time the same computation on both sides: fastdet's and
torchvision's models hold the same weights and give the same logits (no timing here)."""

import pytest
import torch

from fastdet.bench import cases_for

pytest.importorskip("torchvision")


def test_classifier_case_compares_equal_models():
    names = [c.name for c in cases_for("cpu", full=True, only="cls_")]
    assert "cls_densenet121_512_train_step_batch4" in names
    quick = [c.name for c in cases_for("cpu", only="cls_")]
    assert quick == ["cls_resnet50_224_inference_batch1"]
    case = cases_for("cpu", only="cls_resnet50_224_inference_batch1")[0]
    sets, impls = case.make("cpu")
    assert set(impls) == {"fastdet", "torchvision"} and sets[0]["x"].shape == (1, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = impls["fastdet"](sets[0]), impls["torchvision"](sets[0])
    assert ours.shape == (1, 3)
    torch.testing.assert_close(ours, theirs)
