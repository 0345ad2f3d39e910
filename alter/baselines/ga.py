"""Gradient ascent (GA): maximise the forget set's negative log-likelihood.

    L = -gamma * NLL_forget,     NLL = mean over the forget batch's answer tokens of -log p(y_t | y_<t, x)

Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy Risks in Language Models" (ACL);
Thudi et al. 2022, "Unrolling SGD: Understanding Factors Influencing Machine Unlearning" (EuroS&P),
as the ALTER paper cites it. Matches open-unlearning ``GradAscent`` (``loss = -outputs.loss``).
Unbounded: the NLL grows without limit, which is why GA collapses fluency in the paper's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from alter.baselines.base import UnlearningMethod, forward_logits
from alter.train.losses import answer_nll


@dataclass
class GradientAscent(UnlearningMethod):
    name: ClassVar[str] = "ga"
    citation: ClassVar[str] = ("Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks in Language "
                               "Models; Thudi et al. 2022, Unrolling SGD")
    gamma: float = 1.0

    @property
    def uses_retain(self) -> bool:
        return False

    def loss(self, model, forget_batch, retain_batch, reference):
        nll = answer_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        return {"loss": -self.gamma * nll, "forget_nll": nll.detach()}
