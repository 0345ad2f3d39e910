"""What a baseline run returns: the trained model and a report of what it did and what it cost.

Efficiency (ALTER paper, "Unlearning Time Efficiency"; docs/method.md §9) is measured the same
way for every method: wall time of the whole run (``seconds``, including the reference copy and
tokenisation) and of the optimisation loop alone (``train_seconds``); peak memory from
``torch.cuda.max_memory_allocated`` on CUDA (reset at the start of the run) or, on CPU, the
process's peak resident set size ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` — a lifetime peak
of the process, so run one method per process to compare CPU memory (``peak_memory_source`` says
which was used); and the number of trainable parameters.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> Tuple[int, str]:
    """``(bytes, source)``: CUDA peak allocated tensor memory, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda.max_memory_allocated"
    rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    # Linux reports KiB, macOS bytes.
    return (rss if sys.platform == "darwin" else rss * 1024), "ru_maxrss (process peak RSS)"


@dataclass
class UnlearningReport:
    method: str
    citation: str
    hyperparameters: Dict[str, Any]
    steps: int
    seconds: float
    train_seconds: float
    peak_memory_bytes: int
    peak_memory_source: str
    trainable_parameters: int
    total_parameters: int
    forget_examples: int
    retain_examples: int
    device: str
    log: List[dict] = field(default_factory=list)
    saved_to: Optional[str] = None

    def to_dict(self, include_log: bool = True) -> dict:
        out = asdict(self)
        if not include_log:
            out.pop("log")
        return out


@dataclass
class UnlearningResult:
    model: Any
    report: UnlearningReport
