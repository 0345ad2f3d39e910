"""When phase II may stop early: the hinge's forget tokens still above the margin over the last steps."""

from __future__ import annotations

from typing import List, Optional


class ForgetWindow:
    """The last ``size`` phase II steps' hinge counts: forget tokens still above the margin, and all.

    ``size`` is ``AlterConfig.stop_window_steps`` (or, at 0, one epoch of steps, so that a full
    window has seen every forget example once); the counts are taken before each step's update. A
    bounded hinge gives no gradient once a token is past the margin, but Adam's normalised steps keep
    moving the experts as far on the few that are not, so phase II can end once at most
    ``AlterConfig.stop_when_forgotten`` of them are still above it.
    """

    def __init__(self, size: int):
        self.size = int(size)
        self.counts: List[List[int]] = []

    def add(self, violating: int, tokens: int) -> None:
        self.counts = (self.counts + [[violating, tokens]])[-self.size:]

    def full(self) -> bool:
        return len(self.counts) == self.size

    def fraction(self) -> float:
        tokens = sum(t for _, t in self.counts)
        return sum(v for v, _ in self.counts) / tokens if tokens else 0.0

    def state(self) -> dict:
        return {"size": self.size, "counts": self.counts}

    def load(self, state: Optional[dict]) -> None:
        if state and int(state.get("size", -1)) == self.size:
            self.counts = [list(map(int, c)) for c in state["counts"]][-self.size:]
