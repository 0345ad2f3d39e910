"""``finetune``: every parameter trained on forget + retain (no forget loss).

The model that knows the forget set, i.e. the starting point of every unlearning method (TOFU's
"full" model, Maini et al. 2024; the ALTER paper's "Fine-tune"/"Original" rows). Runs
:func:`alter.train.supervised.finetune`: next-token cross-entropy on the answer tokens, AdamW,
linear warm-up (10%) then linear decay to 0; defaults lr 2e-4 x 5 epochs, batch 8 (measured
on 2 CPU cores: the recipe memorised author QA to ROUGE-L 0.97 on SmolLM2-135M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Sequence

from alter.baselines.base import SupervisedMethod


@dataclass
class FineTune(SupervisedMethod):
    name: ClassVar[str] = "finetune"
    citation: ClassVar[str] = "Maini et al. 2024, TOFU: A Task of Fictitious Unlearning for LLMs (the full model)"

    def training_examples(self, forget: Sequence, retain: Sequence) -> List:
        return list(forget) + list(retain)
