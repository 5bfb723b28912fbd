"""The detection benchmark's per-stage times (proposal filtering, NMS, RoIAlign): the profiler
events are found in both implementations and fit in the profiled pass. Times nothing."""

import pytest

from fastdet.bench.cases import _det_case, cases_for
from fastdet.bench.runner import _stages, stages_line


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
    assert not any("filter_proposals" in vars(f.net.rpn) for f in fns.values())  # restored
    assert stages_line(stages).count("proposal filtering") == len(impls)


def test_resnet101_fpn_latency_cases_are_full_mode_only():
    names = ["fasterrcnn_resnet101_fpn_600_inference", "fasterrcnn_resnet101_fpn_600_train_step"]
    for device in ("cpu", "cuda"):
        assert set(names) <= {c.name for c in cases_for(device, full=True)}
    assert not set(names) & {c.name for c in cases_for("cpu")}
