"""Gradient difference (GradDiff): ascend the forget NLL, descend the retain NLL.

    L = -gamma * NLL_forget + alpha * NLL_retain          (gamma = alpha = 1)

Liu et al. 2022, "Continual Learning and Private Unlearning" (CoLLAs). Matches open-unlearning
``GradDiff`` with ``retain_loss_type: NLL`` and its defaults ``gamma: 1.0, alpha: 1.0``
(configs/trainer/GradDiff.yaml). NLL as in :func:`alter.train.losses.answer_nll`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from alter.baselines.base import UnlearningMethod, forward_logits
from alter.train.losses import answer_nll


@dataclass
class GradDiff(UnlearningMethod):
    name: ClassVar[str] = "graddiff"
    citation: ClassVar[str] = "Liu et al. 2022, Continual Learning and Private Unlearning"
    gamma: float = 1.0
    alpha: float = 1.0

    def loss(self, model, forget_batch, retain_batch, reference):
        forget = answer_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        retain = answer_nll(forward_logits(model, retain_batch), retain_batch["labels"])
        return {"loss": -self.gamma * forget + self.alpha * retain,
                "forget_nll": forget.detach(), "retain_nll": retain.detach()}
