"""Phase II's early stop: the two rules of docs/method.md section 4, combined for the trainer.

- hinge count (``stop_when_forgotten``, on by default): the forget tokens still above the margin
  over the last ``stop_window_steps`` steps, one epoch by default (:mod:`alter.train.forget_window`);
- answer overlap (``stop_answer_overlap``, off by default): greedy answers to a sample of forget
  questions, checked every ``stop_check_every`` steps (:mod:`alter.train.answer_stop`).

Phase II ends at the first step where either rule fires, never before ``phase2_min_steps``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch

from alter.config import AlterConfig
from alter.train.answer_stop import AnswerOverlapStop
from alter.train.forget_window import ForgetWindow


class EarlyStop:
    """Both rules for one phase II run; :meth:`build` returns None when both are off."""

    def __init__(self, config: AlterConfig, window: Optional[ForgetWindow], answers: Optional[AnswerOverlapStop],
                 accelerator=None):
        self.config, self.window, self.answers, self.accelerator = config, window, answers, accelerator

    @classmethod
    def build(cls, config: AlterConfig, tokenizer, forget_examples: Sequence[Any], plan: List[List[int]],
              is_forget, window_state: Optional[dict] = None, accelerator=None) -> Optional["EarlyStop"]:
        """``plan``: phase II's batches of item indices; ``is_forget(i)`` tells a forget item, whose
        example is ``forget_examples[i]``; ``window_state``: the hinge window saved in a checkpoint."""
        if not config.lambda_forget:
            return None
        trained = sorted({i for chunk in plan for i in chunk if is_forget(i)})
        window = answers = None
        if config.stop_when_forgotten >= 0:
            size = int(config.stop_window_steps)
            if size == 0:  # one epoch of forget batches
                per_step = max(1, sum(1 for i in plan[0] if is_forget(i))) if plan else 1
                size = max(1, math.ceil(len(trained) / per_step))
            window = ForgetWindow(size)
            window.load(window_state)
        if config.stop_answer_overlap >= 0 and trained:
            answers = AnswerOverlapStop(tokenizer, [forget_examples[i] for i in trained],
                                        n=config.stop_check_questions, threshold=config.stop_answer_overlap,
                                        every=config.stop_check_every, min_step=max(1, config.phase2_min_steps),
                                        seed=config.seed, system_prompt=config.system_prompt)
        if window is None and answers is None:
            return None
        return cls(config, window, answers, accelerator)

    def update(self, step: int, out: Dict[str, torch.Tensor], model) -> bool:
        """After optimiser step ``step`` (1-based) with that step's loss dict ``out``: stop now?"""
        hinge = self.window is not None and self._hinge_forgotten(out)
        if step < self.config.phase2_min_steps:
            return False
        if hinge:
            return True
        return self.answers is not None and self.answers.due(step) and self.answers.forgotten(model)

    def _hinge_forgotten(self, out: Dict[str, torch.Tensor]) -> bool:
        counts = torch.stack([out["forget_violating"].detach().long().cpu(),
                              out["forget_tokens"].detach().long().cpu()])
        acc = self.accelerator
        if acc is not None and acc.num_processes > 1:  # every process must take the same decision
            counts = acc.reduce(counts.to(acc.device), reduction="sum").cpu()
        self.window.add(int(counts[0]), int(counts[1]))
        return self.window.full() and self.window.fraction() <= self.config.stop_when_forgotten

    def log_values(self) -> Dict[str, float]:
        values = {}
        if self.window is not None:
            values["violating"] = self.window.fraction()
        if self.answers is not None and self.answers.last is not None:
            values["answer_overlap"] = self.answers.last
        return values

    def state(self) -> Optional[dict]:
        """What a checkpoint keeps (the hinge window; the answer check needs nothing)."""
        return self.window.state() if self.window is not None else None
