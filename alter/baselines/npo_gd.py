"""NPO_GD (the NPO paper's "NPO+RT"): NPO on the forget set plus NLL on the retain set.

    L = gamma * L_NPO(forget) + alpha * NLL_retain          (beta = 0.1, gamma = alpha = 1)

Zhang et al. 2024, "Negative Preference Optimization" (COLM), section 4 (retain-loss variant).
This is exactly open-unlearning's ``NPO`` trainer with ``retain_loss_type: NLL`` and
configs/trainer/NPO.yaml's ``beta: 0.1, gamma: 1.0, alpha: 1.0``. L_NPO: see :mod:`alter.baselines.npo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from alter.baselines.base import forward_logits
from alter.train.losses import answer_nll
from alter.baselines.npo import NPO, npo_forget_term


@dataclass
class NPOGradDiff(NPO):
    name: ClassVar[str] = "npo_gd"
    alpha: float = 1.0

    @property
    def uses_retain(self) -> bool:
        return True

    def loss(self, model, forget_batch, retain_batch, reference):
        forget, log_ratio = npo_forget_term(model, reference, forget_batch, self.beta)
        retain = answer_nll(forward_logits(model, retain_batch), retain_batch["labels"])
        return {"loss": self.gamma * forget + self.alpha * retain, "npo": forget.detach(),
                "retain_nll": retain.detach(), "log_ratio": log_ratio}
