"""A benchmark case: what `make(device)` returns is timed by the runner (bench.runner)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Case:
    name: str
    group: str  # the op: nms, batched_nms, box_iou, roi_align, anchors, ...
    params: dict
    make: Callable  # (device) -> (list of input dicts, {impl: fn(inputs)})
    quick: bool = True  # in `fastdet bench` without --full
    devices: tuple = ("cpu", "cuda")
    floor: str | None = None
    graph: bool = False  # on the GPU, also time CUDA-graph replays (device time, no overhead)
    min_runs: int = 5  # timed runs at least (models: fewer, each takes seconds on the CPU)
    notes: dict = field(default_factory=dict)
    # (impl fn, input sets, device) -> {stage: ms, "total_ms": ms}: where a model's time goes,
    # from a profiled pass run after the timing (detection cases only)
    stages: Callable | None = None
    # {impl: items one call processes}: the runner reports milliseconds per item, so a slow peer
    # can be timed on fewer items than fastdet (e.g. images for weighted boxes fusion)
    per_call: dict | None = None
