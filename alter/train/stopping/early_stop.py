"""Phase II's early stop: the rules of docs/method.md section 4, combined for the trainer.

- forget level (``stop_level_scale``, on by default): a sample of forget answers, scored as generation
  would, falls to a level estimated from the data (mismatched answers under the starting model;
  :mod:`alter.train.stopping.level`), checked every ``stop_check_every`` steps;
- forget probability (``stop_forget_probability``, off by default, the default before): the mean
  teacher-forced probability of the forget answers the last ``stop_probability_steps`` steps trained
  on, read from the training forward itself (no extra pass), against an absolute level;
- hinge count (``stop_when_forgotten``, off by default, the default before): the forget tokens still
  above the margin over the last ``stop_window_steps`` steps, one epoch by default
  (:mod:`alter.train.stopping.window`);
- answer overlap (``stop_answer_overlap``, off by default): greedy answers to a sample of forget
  questions, checked every ``stop_check_every`` steps (:mod:`alter.train.stopping.answer_overlap`).

Phase II ends at the first step where any rule fires, never before ``phase2_min_steps``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from alter.config import AlterConfig
from alter.train.stopping.answer_overlap import AnswerOverlapStop
from alter.train.stopping.window import ForgetWindow
from alter.train.stopping.level import ForgetLevelStop


class EarlyStop:
    """The rules for one phase II run; :meth:`build` returns None when all are off."""

    def __init__(self, config: AlterConfig, window: Optional[ForgetWindow], answers: Optional[AnswerOverlapStop],
                 probability: Optional[ForgetWindow] = None, level: Optional[ForgetLevelStop] = None):
        self.config, self.window, self.answers, self.probability = config, window, answers, probability
        self.level = level

    @classmethod
    def build(cls, config: AlterConfig, tokenizer, forget_examples: Sequence[Any], plan: List[List[int]],
              is_forget, window_state: Optional[dict] = None,
              reference: Optional[Sequence[str]] = None) -> Optional["EarlyStop"]:
        """``plan``: phase II's batches of item indices; ``is_forget(i)`` tells a forget item, whose
        example is ``forget_examples[i]``; ``window_state``: the windows saved in a checkpoint."""
        if not config.lambda_forget:
            return None
        trained = sorted({i for chunk in plan for i in chunk if is_forget(i)})
        window = answers = probability = level = None
        state = window_state or {}
        if config.stop_when_forgotten >= 0:
            size = int(config.stop_window_steps)
            if size == 0:  # one epoch of forget batches
                per_step = max(1, sum(1 for i in plan[0] if is_forget(i))) if plan else 1
                size = max(1, math.ceil(len(trained) / per_step))
            window = ForgetWindow(size)
            window.load(state.get("hinge", state))   # checkpoints before the probability rule saved the hinge's alone
        if config.stop_forget_probability >= 0:
            probability = ForgetWindow(int(config.stop_probability_steps))
            probability.load(state.get("probability"))
        if config.stop_answer_overlap >= 0 and trained:
            answers = AnswerOverlapStop(tokenizer, [forget_examples[i] for i in trained],
                                        n=config.stop_check_questions, threshold=config.stop_answer_overlap,
                                        every=config.stop_check_every, min_step=max(1, config.phase2_min_steps),
                                        seed=config.seed, system_prompt=config.system_prompt)
        if config.stop_level_scale >= 0 and len(trained) >= 2:
            level = ForgetLevelStop(tokenizer, [forget_examples[i] for i in trained], n=config.stop_check_questions,
                                    scale=config.stop_level_scale, every=config.stop_check_every,
                                    min_step=max(1, config.phase2_min_steps), seed=config.seed,
                                    system_prompt=config.system_prompt, max_length=config.max_length,
                                    batch_size=config.batch_size,   # a training batch's memory, not more
                                    level=(state.get("level") or {}).get("level"), reference=reference,
                                    every_passages=config.stop_check_every_passages,
                                    stall_scale=config.stop_stall_scale if config.stop_stall_scale >= 0 else None,
                                    passage_scale=config.stop_passage_level_scale,
                                    stall_level=(state.get("level") or {}).get("stall_level"))
            level.last = (state.get("level") or {}).get("last")
        if window is None and answers is None and probability is None and level is None:
            return None
        return cls(config, window, answers, probability, level)

    def start(self, model) -> None:
        """Before phase II's first update: what the rules read from the starting model (the level)."""
        if self.level is not None:
            self.level.calibrate(model)

    def update(self, step: int, values: Dict[str, float], model) -> bool:
        """After optimiser step ``step`` (1-based), with that step's host values ``values`` (from
        :func:`alter.train.step_values.step_values`, summed over processes): stop now?"""
        hinge = self.window is not None and self._hinge_forgotten(values)
        probable = self.probability is not None and self._probability_low(values)
        if step < self.config.phase2_min_steps:
            return False
        if hinge or probable:
            return True
        if self.level is not None and self.level.due(step) and self.level.forgotten(model):
            return True
        return self.answers is not None and self.answers.due(step) and self.answers.forgotten(model)

    def _hinge_forgotten(self, values: Dict[str, float]) -> bool:
        self.window.add(int(values["forget_violating"]), int(values["forget_tokens"]))
        return self.window.full() and self.window.fraction() <= self.config.stop_when_forgotten

    def _probability_low(self, values: Dict[str, float]) -> bool:
        self.probability.add(float(values["forget_probability_sum"]), int(values["forget_rows"]))
        seen = sum(n for _, n in self.probability.counts)    # a window without forget answers decides nothing
        low = self.probability.fraction() <= self.config.stop_forget_probability
        return self.probability.full() and seen > 0 and low

    def log_values(self) -> Dict[str, float]:
        values = {}
        if self.window is not None:
            values["violating"] = self.window.fraction()
        if self.probability is not None:
            values["forget_probability"] = self.probability.fraction()
        if self.answers is not None and self.answers.last is not None:
            values["answer_overlap"] = self.answers.last
        if self.level is not None and self.level.last is not None:
            values["forget_level_reading"], values["forget_level"] = self.level.last, self.level.level
            values["forget_level_scored"] = self.level.scored
            if self.level.stall_level is not None:
                values["forget_stall_level"] = self.level.stall_level
            if self.level.stalled:
                values["forget_level_stalled"] = 1.0
        return values

    def state(self) -> Optional[dict]:
        """What a checkpoint keeps (the windows; the answer check needs nothing)."""
        state = {}
        if self.window is not None:
            state["hinge"] = self.window.state()
        if self.probability is not None:
            state["probability"] = self.probability.state()
        if self.level is not None:
            state["level"] = self.level.state()
        return state or None
