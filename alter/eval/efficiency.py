"""Wall time and peak memory of a block of code (the paper's efficiency comparison, Fig. 6).

Usage::

    with measure() as rec:
        train(...)
    rec.to_dict()   # {"wall_s": ..., "peak_rss_bytes": ..., "cuda_peak_allocated_bytes": ..., ...}

CPU memory is the process's resident set size (RSS). ``ru_maxrss`` (``resource.getrusage``) is
the peak over the whole process lifetime, so a block that stays below an earlier peak would
report the earlier one; a background thread therefore samples the current RSS every
``interval_s`` seconds during the block (psutil when installed, else ``/proc/self/statm``), and
``peak_rss_bytes`` is the largest sample (a spike shorter than the interval can be missed).
``process_max_rss_bytes`` (the lifetime peak) is reported alongside. On CUDA,
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` gives the block's exact
peak of tensor memory; kernels are synchronised before the clock is read.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Optional, Union

import torch

try:  # psutil is optional: /proc is used without it
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None


def current_rss_bytes() -> Optional[int]:
    """The process's resident set size now, in bytes (``None`` where it cannot be read)."""
    if psutil is not None:
        return int(psutil.Process(os.getpid()).memory_info().rss)
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def process_max_rss_bytes() -> int:
    """Lifetime peak RSS of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


@dataclass
class EfficiencyRecord:
    """What ``measure`` found; plain numbers, ``to_dict()`` for JSON."""
    device: str = "cpu"
    wall_s: Optional[float] = None
    rss_start_bytes: Optional[int] = None
    peak_rss_bytes: Optional[int] = None
    peak_rss_delta_bytes: Optional[int] = None
    process_max_rss_bytes: Optional[int] = None
    cuda_peak_allocated_bytes: Optional[int] = None

    def to_dict(self) -> dict:
        return asdict(self)


class _RssSampler(threading.Thread):
    def __init__(self, interval_s: float):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak = current_rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        v = current_rss_bytes()
        if v is not None and (self.peak is None or v > self.peak):
            self.peak = v

    def stop(self) -> Optional[int]:
        self._stop_event.set()
        self.join()
        self._sample()
        return self.peak


@contextlib.contextmanager
def measure(device: Union[str, torch.device, None] = None, interval_s: float = 0.005) -> Iterator[EfficiencyRecord]:
    """Measure the enclosed block: wall time, peak RSS, and peak CUDA memory when ``device`` is
    a CUDA device (default: ``"cpu"``). The record is filled in when the block exits (also when
    it raises)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    rec = EfficiencyRecord(device=str(dev))
    cuda = dev.type == "cuda" and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    rec.rss_start_bytes = current_rss_bytes()
    sampler = _RssSampler(interval_s)
    sampler.start()
    t0 = time.perf_counter()
    try:
        yield rec
    finally:
        if cuda:
            torch.cuda.synchronize(dev)
        rec.wall_s = time.perf_counter() - t0
        rec.peak_rss_bytes = sampler.stop()
        if rec.peak_rss_bytes is not None and rec.rss_start_bytes is not None:
            rec.peak_rss_delta_bytes = rec.peak_rss_bytes - rec.rss_start_bytes
        rec.process_max_rss_bytes = process_max_rss_bytes()
        if cuda:
            rec.cuda_peak_allocated_bytes = int(torch.cuda.max_memory_allocated(dev))
