"""Task-vector negation (``task_vector``): learn the forget set further, then subtract what that learnt.

    theta_r  = theta_0 trained on the forget set (descent on its answer NLL: the "reinforced" model)
    theta    = theta_0 - alpha * (theta_r - theta_0)                                   (alpha = 1)

Ilharco et al. 2023, "Editing Models with Task Arithmetic" (ICLR), forgetting by negation; MUSE (Shi et
al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models") runs it as its "Task Vector"
baseline on the forget corpus. Every parameter trains during the reinforcement, on forget batches only,
through the shared runner (constant learning rate, AdamW, clipping at 1.0: :mod:`alter.baselines.runner`);
the negation is applied once, after the last step (:meth:`TaskVector.finalize`), against the frozen copy
of the starting model the runner keeps as the reference. ``alpha`` is the task vector's scale; the
learning rate sets how far the reinforcement goes, and that is what a sweep tunes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from alter.baselines.base import UnlearningMethod, forward_logits
from alter.train.losses import answer_nll


@dataclass
class TaskVector(UnlearningMethod):
    name: ClassVar[str] = "task_vector"
    citation: ClassVar[str] = ("Ilharco et al. 2023, Editing Models with Task Arithmetic (negation); "
                               "MUSE's Task Vector baseline (Shi et al. 2024)")
    needs_reference: ClassVar[bool] = True
    alpha: float = 1.0

    @property
    def uses_retain(self) -> bool:
        return False

    def loss(self, model, forget_batch, retain_batch, reference):
        forget = answer_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        return {"loss": forget, "forget_nll": forget.detach()}

    def finalize(self, model, reference) -> None:
        """``theta <- theta_0 - alpha * (theta - theta_0)`` for every parameter, in place."""
        with torch.no_grad(), reference.use() as start:
            ref = dict(start.named_parameters())
            for name, p in model.named_parameters():
                if name not in ref:
                    raise ValueError(f"task_vector: the reference has no parameter {name!r}")
                p0 = ref[name].to(device=p.device, dtype=p.dtype)
                p.copy_(p0 - self.alpha * (p - p0))
