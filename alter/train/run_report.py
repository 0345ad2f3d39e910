"""What a training run reports: :class:`TrainReport` and the peak memory it reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch


@dataclass
class TrainReport:
    """What a run did: theta, per-phase steps / time / peak memory, the logged losses."""

    theta: float
    domains: List[str]
    phases: Dict[str, dict] = field(default_factory=dict)
    log: List[dict] = field(default_factory=list)
    entropy_summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"theta": self.theta, "domains": self.domains, "phases": self.phases,
                "entropy_summary": self.entropy_summary}


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated CUDA memory on a GPU; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
