"""Each case times fastdet and its peers on the same inputs; pytest-benchmark groups them by case,
so its table shows the ratios side by side. Timings live here, never in tests/."""

import itertools
import statistics
import time

import pytest
import torch

from fastdet.bench import cases_for


def _params(config):
    device = config.getoption("--device")
    out = []
    for case in cases_for(device, full=config.getoption("--full")):
        out.append(pytest.param(case, device, id=case.name))
    return out


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case,device", _params(metafunc.config))


def test_case(case, device, benchmark):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda without a GPU")
    sets, impls = case.make(device)
    benchmark.group = case.name
    rot = itertools.cycle(sets)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run(fn):
        def once():
            fn(next(rot))
            sync()

        return once

    # pytest-benchmark times one callable per test: fastdet; the peers are recorded in extra_info.
    # A case with per_call (items one call of each impl processes) compares per item.
    per = case.per_call or {}
    if per:
        benchmark.extra_info["per_call"] = per
    for name, fn in impls.items():
        if name != "fastdet":
            fn(sets[0])
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                run(fn)()
                ts.append(time.perf_counter() - t0)
            benchmark.extra_info[f"{name}_median_s"] = statistics.median(ts) / per.get(name, 1)
    benchmark.pedantic(run(impls["fastdet"]), rounds=5, warmup_rounds=1)
    for name in impls:
        if name != "fastdet":
            benchmark.extra_info[f"speedup_vs_{name}"] = benchmark.extra_info[
                f"{name}_median_s"
            ] / (benchmark.stats.stats.median / per.get("fastdet", 1))
