"""Shared benchmark helpers: ratios against a reference measured in the same process.

Run with ``pytest benchmarks/ --benchmark-only``; files named ``bench_*.py`` are collected here.
Benchmarks never assert on timing: they record ratios (reference / measured, so > 1 means the
measured function is faster or smaller), which pytest-benchmark saves in ``extra_info`` and
which the terminal summary prints as one table at the end of the run.

Fixtures:
    compare(benchmark, fn, reference_fn, label=..., rounds=5): times ``fn`` with
        pytest-benchmark, then ``fn`` and ``reference_fn`` in alternating rounds (after one
        warm-up round each), records the ratio of those medians and returns it.
    record_ratio(label, measured, reference, unit): records any other ratio (e.g. peak memory).
Helpers:
    synchronized(fn, device): ``fn`` followed by a CUDA synchronize when device is CUDA.
    peak_memory(fn, device): extra bytes allocated at the peak while ``fn`` runs — on CUDA from
        torch.cuda.max_memory_allocated, on CPU from the allocation events of torch's profiler.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, List

import pytest
import torch


@dataclass
class Ratio:
    test: str
    label: str
    measured: float
    reference: float
    unit: str

    @property
    def ratio(self) -> float:
        return self.reference / self.measured if self.measured else float("inf")


RESULTS: List[Ratio] = []


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def synchronized(fn: Callable[[], object], device) -> Callable[[], object]:
    """``fn`` that waits for the GPU before returning (timings of CUDA work need it)."""
    if torch.device(device).type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of the running sum of CPU allocations (+) and frees (-) torch reports while fn runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()) == "DeviceType.CPU"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def peak_memory(fn: Callable[[], object], device) -> int:
    """Bytes allocated above the starting point at the peak while ``fn`` runs (its result freed after)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - base
    return _cpu_peak_bytes(fn)


def interleaved_medians(fn: Callable[[], object], reference_fn: Callable[[], object], rounds: int,
                        warmup_rounds: int = 1):
    """Median seconds of ``fn`` and ``reference_fn`` timed in alternating rounds.

    Alternating cancels slow drifts of a shared machine (frequency, a neighbour's load) that
    would otherwise fall on whichever function happened to be timed second.
    """
    for _ in range(warmup_rounds):
        fn()
        reference_fn()
    a, b = [], []
    for i in range(rounds):
        pair = ((fn, a), (reference_fn, b)) if i % 2 == 0 else ((reference_fn, b), (fn, a))
        for f, sink in pair:
            start = time.perf_counter()
            f()
            sink.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


@pytest.fixture
def compare(request):
    """Record ``reference / fn`` from interleaved timings; pytest-benchmark also times ``fn`` alone."""
    def run(benchmark, fn, reference_fn, *, label: str, rounds: int = 5, warmup_rounds: int = 1) -> float:
        benchmark.extra_info["label"] = label
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
        measured, reference = interleaved_medians(fn, reference_fn, rounds, warmup_rounds)
        row = Ratio(request.node.name, label, measured * 1e3, reference * 1e3, "ms")
        RESULTS.append(row)
        benchmark.extra_info.update(ratio=row.ratio, median_ms=row.measured, reference_median_ms=row.reference)
        return row.ratio

    return run


@pytest.fixture
def record_ratio(request):
    def run(label: str, measured: float, reference: float, unit: str) -> float:
        row = Ratio(request.node.name, label, measured, reference, unit)
        RESULTS.append(row)
        return row.ratio

    return run


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("ratios: reference / measured (> 1: measured is faster or smaller)")
    width = max(len(r.test) for r in RESULTS)
    lwidth = max(len(r.label) for r in RESULTS)
    tr.write_line(f"{'benchmark':<{width}}  {'label':<{lwidth}}  {'measured':>12}  {'reference':>12}  {'ratio':>8}")
    for r in RESULTS:
        tr.write_line(f"{r.test:<{width}}  {r.label:<{lwidth}}  {r.measured:>9.2f} {r.unit:<2}  "
                      f"{r.reference:>9.2f} {r.unit:<2}  {r.ratio:>7.2f}x")
