"""KL minimisation (KL): ascend the forget NLL while staying close to the original model on retain data.

    L = -gamma * NLL_forget + alpha * mean_t KL( p_ref(. | x_<t) || p_theta(. | x_<t) )   on retain sequences

TOFU's "KL" baseline (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"); the
ALTER paper cites Nguyen et al. 2020, "Variational Bayesian Unlearning" for it. Matches
open-unlearning ``GradDiff`` with ``retain_loss_type: KL`` (``compute_kl_divergence``: KL from the
frozen reference's next-token distribution to the model's, averaged over positions). Positions:
``kl_tokens="sequence"`` (default) every real token of the retain sequence, prompt and answer, as
TOFU and open-unlearning do (they also average over padding positions, which we drop);
``"answer"`` only the positions that predict answer tokens. The term is 0 at the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from alter.baselines.base import UnlearningMethod, forward_logits
from alter.baselines.losses import kl_positions, kl_to_reference
from alter.train.losses import answer_nll


def retain_kl(model, reference, retain_batch, which: str):
    """KL(p_ref || p_theta) on the retain batch at the positions ``which`` selects."""
    ref_logits = reference.logits(retain_batch)
    logits = forward_logits(model, retain_batch)
    return kl_to_reference(logits, ref_logits, kl_positions(retain_batch, which))


@dataclass
class KLMin(UnlearningMethod):
    name: ClassVar[str] = "kl"
    citation: ClassVar[str] = ("Maini et al. 2024, TOFU (KL baseline); Nguyen et al. 2020, Variational Bayesian "
                               "Unlearning")
    needs_reference: ClassVar[bool] = True
    gamma: float = 1.0
    alpha: float = 1.0
    kl_tokens: str = "sequence"

    def __post_init__(self):
        if self.kl_tokens not in ("sequence", "answer"):
            raise ValueError(f"kl_tokens must be 'sequence' or 'answer', got {self.kl_tokens!r}")

    def loss(self, model, forget_batch, retain_batch, reference):
        forget = answer_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        kl = retain_kl(model, reference, retain_batch, self.kl_tokens)
        return {"loss": -self.gamma * forget + self.alpha * kl, "forget_nll": forget.detach(), "retain_kl": kl.detach()}
