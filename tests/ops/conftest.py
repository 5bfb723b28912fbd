"""The ops tests' `device` fixture: a test that takes it runs on the CPU and, gpu-marked
(skipped without CUDA by tests/conftest.py), on CUDA."""

import pytest


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    return request.param
