"""The detection benchmark's per-stage times (proposal filtering, NMS, RoIAlign): the profiler
events are found in both implementations and fit in the profiled pass; the model cases' bf16 and
compiled variants are listed and run what they say. Times nothing."""

import pytest
import torch

from fastdet.bench.cases import _det_case, _seg_case, cases_for
from fastdet.bench.runner import _stages, run_case, stages_line


@pytest.mark.parametrize(
    "model,impls",
    [
        pytest.param("resnet18_fpn", {"fastdet"}, id="resnet18_fpn"),  # ~6 s for both modes
        pytest.param(
            "resnet50_fpn", {"fastdet", "torchvision"}, id="resnet50_fpn", marks=pytest.mark.slow
        ),
        # no torchvision preset of ResNet-101 + FPN exists: fastdet alone
        pytest.param("resnet101_fpn", {"fastdet"}, id="resnet101_fpn", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("train", [False, True], ids=["inference", "train_step"])
def test_detection_stages(model, impls, train):
    """The profiled pass finds all three stages in each implementation and they fit in it (a
    small image: this checks the stage matcher, it times nothing)."""
    if "torchvision" in impls:
        pytest.importorskip("torchvision")
    case = _det_case(model, train, size=128)
    sets, fns = case.make("cpu")
    stages = _stages(case, sets, fns, "cpu")
    assert set(stages) == impls
    for st in stages.values():
        assert "error" not in st, st  # _stages records a profiler failure instead of raising
        parts = [st["filter_proposals_ms"], st["nms_ms"], st["roi_align_ms"]]
        assert all(p > 0 for p in parts), st
        assert sum(parts) <= st["total_ms"], st
    assert all(st["host_syncs"] > 0 for st in stages.values())  # (counted by the dispatch mode)
    nets = [f.net for f in fns.values() if hasattr(f, "net")]  # (the backbone floor has none)
    assert not any("filter_proposals" in vars(n.rpn) for n in nets)  # restored
    assert stages_line(stages).count("proposal filtering") == len(impls)


def test_resnet101_fpn_latency_cases_are_full_mode_only():
    names = ["fasterrcnn_resnet101_fpn_600_inference", "fasterrcnn_resnet101_fpn_600_train_step"]
    for device in ("cpu", "cuda"):
        assert set(names) <= {c.name for c in cases_for(device, full=True)}
    assert not set(names) & {c.name for c in cases_for("cpu")}


def test_bf16_variant_times_fastdet_under_autocast_against_the_float32_peer_and_the_floor():
    pytest.importorskip("torchvision")
    case = _det_case("resnet50_fpn", False, size=128, variant="bf16")
    assert case.name == "fasterrcnn_resnet50_fpn_128_inference_bf16"
    res = run_case(case, "cpu", min_runs=1, budget_s=0.0)
    assert set(res["impls"]) == {"fastdet", "torchvision", "torchvision bf16", "backbone (floor)"}
    assert res["floor"] == "backbone (floor)" and res["fastdet_over_floor"] > 0
    assert "fastdet" in res["stages"] and "backbone (floor)" not in res["stages"]


def test_variant_cases_are_listed_for_both_devices():
    for device in ("cpu", "cuda"):
        names = {c.name for c in cases_for(device, full=True, kind="models")}
        for v in ("bf16", "compiled", "channels_last"):
            for what in ("inference", "train_step"):
                assert f"fasterrcnn_resnet50_fpn_600_{what}_{v}" in names
                assert f"maskrcnn_resnet50_fpn_600_{what}_{v}" in names


@pytest.mark.parametrize("model", ["unet", "fpn_resnet18"])
def test_segmentation_variants_run_as_named_beside_float32(model):
    case = _seg_case(model, 64, False, 1, "bf16")
    assert case.name == f"{model}_64_inference_batch1_bf16"
    sets, fns = case.make("cpu")
    assert set(fns) == {"fastdet", "float32 eager"}
    assert fns["fastdet"](sets[0]).dtype == torch.bfloat16
    assert fns["float32 eager"](sets[0]).dtype == torch.float32
    res = run_case(_seg_case(model, 64, True, 1, "bf16"), "cpu", min_runs=1, budget_s=0.0)
    assert set(res["impls"]) == {"fastdet", "float32 eager"}
    case = _seg_case(model, 64, False, 1, "channels_last")
    sets, fns = case.make("cpu")
    for impl, nhwc in (("fastdet", True), ("float32 eager", False)):
        w = fns[impl].net.state_dict()
        w = next(v for v in w.values() if v.ndim == 4 and v.shape[1] > 1 < v.shape[3])
        assert w.is_contiguous(memory_format=torch.channels_last) == nhwc != w.is_contiguous()
        assert fns[impl](sets[0]).shape == (1, 1, 64, 64)


def test_segmentation_variant_cases_are_listed_for_both_devices():
    for device in ("cpu", "cuda"):
        names = {c.name for c in cases_for(device, full=True, kind="models")}
        for model in ("unet", "fpn_resnet18"):
            for v in ("bf16", "compiled", "channels_last"):
                for what in ("inference", "train_step"):
                    assert f"{model}_256_{what}_batch2_{v}" in names
