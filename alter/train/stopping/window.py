"""When phase II may stop early: a ratio of sums over the last phase II steps.

Two rules use it (alter/train/stopping/early_stop.py): the hinge's forget tokens still above the margin
over all of them, and the forget answers' summed probability over their count."""

from __future__ import annotations

from typing import List, Optional, Union

Number = Union[int, float]


class ForgetWindow:
    """The last ``size`` phase II steps' (numerator, denominator) pairs; :meth:`fraction` is their ratio of sums.

    Hinge count (``AlterConfig.stop_when_forgotten``): forget tokens still above the margin, and all;
    ``size`` is ``stop_window_steps`` (or, at 0, one epoch of steps, so that a full window has seen
    every forget example once). A bounded hinge gives no gradient once a token is past the margin, but
    Adam's normalised steps keep moving the experts as far on the few that are not. Forget probability
    (``stop_forget_probability``): the summed ``exp(-mean NLL)`` of the forget answers trained, and
    their number; ``size`` is ``stop_probability_steps``. Values are taken before each step's update.
    """

    def __init__(self, size: int):
        self.size = int(size)
        self.counts: List[List[Number]] = []

    def add(self, violating: Number, tokens: Number) -> None:
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
            self.counts = [[v if isinstance(v, int) else float(v) for v in c]
                           for c in state["counts"]][-self.size:]
