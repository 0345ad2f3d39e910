"""Benchmarks (pytest-benchmark): run with ``pytest benchmarks/ --benchmark-only``."""
