"""pytest-benchmark over fastdet.bench's cases: `python -m pytest benchmarks [--device cuda]`."""


def pytest_addoption(parser):
    parser.addoption(
        "--device", default="cpu", choices=["cpu", "cuda"], help="device to benchmark on"
    )
    parser.addoption("--full", action="store_true", help="every case, not the quick set")
