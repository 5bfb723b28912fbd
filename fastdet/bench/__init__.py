"""Benchmark cases and runner behind `fastdet bench` and benchmarks/ (pytest-benchmark)."""

from .cases import CASES, Case, cases_for
from .runner import run_cases, write_json

__all__ = ["CASES", "Case", "cases_for", "run_cases", "write_json"]
