"""NPO_KL: NPO on the forget set plus KL(p_ref || p_theta) on the retain set.

    L = gamma * L_NPO(forget) + alpha * mean_t KL(p_ref || p_theta)(retain)   (beta = 0.1, gamma = alpha = 1)

Zhang et al. 2024, "Negative Preference Optimization" (COLM), section 4 (KL variant). Matches
open-unlearning's ``NPO`` trainer with ``retain_loss_type: KL``. L_NPO: :mod:`alter.baselines.npo`;
the KL term and its positions (``kl_tokens``): :mod:`alter.baselines.kl`. Both terms share the one
frozen reference model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from alter.baselines.kl import retain_kl
from alter.baselines.npo import NPO, npo_forget_term


@dataclass
class NPOKL(NPO):
    name: ClassVar[str] = "npo_kl"
    alpha: float = 1.0
    kl_tokens: str = "sequence"

    def __post_init__(self):
        super().__post_init__()
        if self.kl_tokens not in ("sequence", "answer"):
            raise ValueError(f"kl_tokens must be 'sequence' or 'answer', got {self.kl_tokens!r}")

    @property
    def uses_retain(self) -> bool:
        return True

    def loss(self, model, forget_batch, retain_batch, reference):
        forget, log_ratio = npo_forget_term(model, reference, forget_batch, self.beta)
        kl = retain_kl(model, reference, retain_batch, self.kl_tokens)
        return {"loss": self.gamma * forget + self.alpha * kl, "npo": forget.detach(), "retain_kl": kl.detach(),
                "log_ratio": log_ratio}
