"""The ops tests' fixtures: `device`, a test that takes it runs on the CPU and, gpu-marked
(skipped without CUDA by tests/conftest.py), on CUDA; `bad_eps`, one test per value that the IoU
ops' eps= refuses."""

import pytest


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    return request.param


@pytest.fixture(
    params=[
        (None, TypeError),
        ("0.5", TypeError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (-1.0, ValueError),
    ],
    ids=lambda p: f"{p[0]}-{p[1].__name__}",
)
def bad_eps(request):
    """(eps, the error it raises)."""
    return request.param
