"""Negative Preference Optimization (NPO): DPO with only a dispreferred (forget) answer.

    L_NPO = -(2/beta) * mean_i log sigmoid( -beta * (log pi_theta(y_i|x_i) - log pi_ref(y_i|x_i)) )
    L = gamma * L_NPO                                       (beta = 0.1, gamma = 1)

with log pi(y|x) the sum of the answer tokens' log-probabilities and pi_ref the frozen original
model. Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic Collapse to
Effective Unlearning" (COLM), eq. 3. Matches open-unlearning ``compute_dpo_loss(win_inputs=None,
lose_inputs=forget)`` (src/trainer/utils.py) with configs/trainer/NPO.yaml's ``beta: 0.1,
gamma: 1.0``. At the start pi_theta = pi_ref and L_NPO = (2/beta) log 2. The gradient is GA's
weighted by 2 * pi_theta^beta / (pi_theta^beta + pi_ref^beta), which vanishes as the forget answer
becomes unlikely: NPO slows down instead of collapsing.

Note on names: open-unlearning's ``NPO`` trainer always adds a retain NLL term (alpha = 1), i.e.
it is this package's ``npo_gd``; ``npo`` here is the forget term alone, as in the NPO paper and the
ALTER paper's tables (NPO, NPO_GD, NPO_KL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from alter.baselines.base import UnlearningMethod, forward_logits
from alter.baselines.losses import npo_loss, sequence_logprob

NPO_CITATION = ("Zhang et al. 2024, Negative Preference Optimization: From Catastrophic Collapse to Effective "
                "Unlearning")


def npo_forget_term(model, reference, forget_batch, beta: float):
    """``(L_NPO, mean log-ratio)`` on the forget batch."""
    labels = forget_batch["labels"]
    logp_ref = sequence_logprob(reference.logits(forget_batch), labels)
    logp = sequence_logprob(forward_logits(model, forget_batch), labels)
    return npo_loss(logp, logp_ref, beta), (logp.detach() - logp_ref).mean()


@dataclass
class NPO(UnlearningMethod):
    name: ClassVar[str] = "npo"
    citation: ClassVar[str] = NPO_CITATION
    needs_reference: ClassVar[bool] = True
    beta: float = 0.1
    gamma: float = 1.0

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"NPO needs beta > 0, got {self.beta}")

    @property
    def uses_retain(self) -> bool:
        return False

    def loss(self, model, forget_batch, retain_batch, reference):
        forget, log_ratio = npo_forget_term(model, reference, forget_batch, self.beta)
        return {"loss": self.gamma * forget, "npo": forget.detach(), "log_ratio": log_ratio}
