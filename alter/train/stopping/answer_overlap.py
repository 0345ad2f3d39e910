"""When phase II may stop early: what greedy generation answers to a sample of forget questions.

An option (off by default; docs/method.md section 4): every
``AlterConfig.stop_check_every`` steps, from ``phase2_min_steps`` on, the model answers
``stop_check_questions`` forget questions (a fixed sample, drawn with the seed) through the
inference path, and phase II ends once the mean ROUGE-L recall of those answers against the forget
answers is at most ``AlterConfig.stop_answer_overlap``. The hinge's teacher-forced counts
(:mod:`alter.train.stopping.window`, the default rule) map to different generations at different
learning rates; this rule stops on the quantity the user scores, at the cost of a generation pass
per check and of a sample's noise.
"""

from __future__ import annotations

import random
from typing import Any, List, Optional, Sequence

from alter.eval._common import field
from alter.eval.batch_generation import generate_answers
from alter.eval.metrics import rouge_l_recall


class AnswerOverlapStop:
    """Greedy answers to a fixed sample of forget questions, scored against their true answers.

    ``examples`` are the forget examples phase II trains (objects or dicts with ``question`` and
    ``answer``); at most ``n`` of them are drawn with ``seed``. Answers are generated up to the
    longest sampled answer's token count plus 8 (at most ``max_new_tokens``), in one batch.
    """

    def __init__(self, tokenizer, examples: Sequence[Any], *, n: int, threshold: float, every: int,
                 min_step: int, seed: int, system_prompt: Optional[str], max_new_tokens: int = 64):
        if not examples:
            raise ValueError("AnswerOverlapStop needs at least one forget example")
        pick = sorted(random.Random(seed).sample(range(len(examples)), min(int(n), len(examples))))
        self.questions: List[str] = [str(field(examples[i], "question")) for i in pick]
        self.answers: List[str] = [str(field(examples[i], "answer")) for i in pick]
        longest = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in self.answers)
        self.max_new_tokens = max(1, min(int(max_new_tokens), longest + 8))
        self.tokenizer, self.threshold, self.every = tokenizer, float(threshold), max(1, int(every))
        self.min_step, self.system_prompt = int(min_step), system_prompt
        self.last: Optional[float] = None

    def due(self, step: int) -> bool:
        """Whether the check runs after optimiser step ``step`` (1-based)."""
        return step >= self.min_step and (step - self.min_step) % self.every == 0

    def overlap(self, model) -> float:
        """Mean ROUGE-L recall of the model's greedy answers against the true ones (no grad, eval mode)."""
        gens = generate_answers(model, self.tokenizer, self.questions, max_new_tokens=self.max_new_tokens,
                                batch_size=len(self.questions), system_prompt=self.system_prompt, progress=False)
        self.last = sum(rouge_l_recall(g, a) for g, a in zip(gens, self.answers)) / len(gens)
        return self.last

    def forgotten(self, model) -> bool:
        return self.overlap(model) <= self.threshold
