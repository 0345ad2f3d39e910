"""``retain``: every parameter trained on the retain set only — the gold standard.

TOFU's retain model (Maini et al. 2024): a model that never saw the forget set; forget quality is
the KS test of the unlearned model's truth ratios against this one's. It must start from the same
base model and use the same recipe as ``finetune`` (:mod:`alter.baselines.finetune`), which the
shared defaults ensure: :func:`alter.train.supervised.finetune`, lr 2e-4 x 5 epochs, batch 8,
10% warm-up and linear decay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Sequence

from alter.baselines.base import SupervisedMethod


@dataclass
class RetainOnly(SupervisedMethod):
    name: ClassVar[str] = "retain"
    citation: ClassVar[str] = ("Maini et al. 2024, TOFU: A Task of Fictitious Unlearning for LLMs (the retain model, "
                               "gold standard of forget quality)")

    def training_examples(self, forget: Sequence, retain: Sequence) -> List:
        if not retain:
            raise ValueError("the 'retain' model needs a non-empty retain set")
        return list(retain)
