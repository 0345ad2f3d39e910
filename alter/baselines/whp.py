"""Who's Harry Potter (``whp``), without anchored terms: fine-tune on the model's own "generic" predictions.

WHP without anchored terms, logit-based generic labels only:

    theta_r   = theta_0 trained further on the forget set: descent on its answer NLL, every parameter,
                reinforce_epochs over the forget set at reinforce_lr                (the "reinforced" model)
    v_generic = v_0 - alpha * ReLU(v_r - v_0)              at every answer position of a forget example
    y_t       = argmax_v v_generic[t - 1]                  (one fixed label per answer token, computed once)
    L         = CE(y | x, true answer prefix)              mean over the forget batch's answer tokens

``v_0`` / ``v_r`` are the next-token logits of the starting model (the runner's frozen reference) and of
the reinforced model, both reading the forget example as it is (its prompt and true answer, teacher
forcing). A token whose logit the reinforcement raised loses alpha times that rise, so where the
reinforcement sharpened what is specific to the forget set the label becomes the start's best
*other* continuation; where it did not, the label is the start's own greedy token (often the true
one, which the fine-tune then keeps). The unlearned model is the starting model fine-tuned (every
parameter, the shared runner: AdamW at the run's ``lr``, the learning rate a sweep tunes) on the
forget examples' inputs with those labels; no retain term.

Eldan & Russinovich 2023, "Who's Harry Potter? Approximate Unlearning in LLMs" (arXiv 2310.02238):
the reinforced model and the formula above (the paper's "reinforcement bootstrapping").
The paper's second ingredient, anchored terms (another language model lists the forget text's
idiosyncratic expressions and writes generic translations; the labels are then read on the translated
text), is NOT built: it needs that external model. MUSE (Shi et al. 2024) runs WHP as a baseline by
combining the two models' logits at inference with alpha as its knob, not by fine-tuning; this module
follows the paper and fine-tunes, so the result is one ordinary model.

How it fits the runner (:mod:`alter.baselines.runner`): :meth:`WHP.before_training`, which the runner
calls once before the first step (its time counts in the run's time and its memory in the peak),
copies the starting model, reinforces the copy on the encoded forget items (the run's batch size,
seed, optimiser, weight decay and clipping; its own epochs and learning rate), computes the generic
labels of every forget example, frees the copy, and hands the relabelled items back. Each step is
then plain cross-entropy on those fixed labels. Peak memory: the model, the reference, the
reinforced copy and the copy's gradients and AdamW state, during the reinforcement only.

Defaults and why (none tuned yet):

- ``alpha = 5``: around the coefficient the paper reports for its Harry Potter run (not re-checked
  against the paper's text when this was written; MUSE's code defaults to 1 and sweeps it). ``alpha = 0`` gives the start's own greedy tokens as labels
  (self-distillation, no unlearning signal).
- ``reinforce_epochs = 3``: the runner's default schedule length, as ``task_vector``'s reinforcement.
- ``reinforce_lr = 5e-5``: the middle of ``task_vector``'s TOFU grid, the rate at which that same
  reinforcement (3 epochs from the taught model) moved the weights enough for its negation to take
  forget ROUGE-L half way to the never-taught level (0.52) while retain ROUGE-L stayed at 0.88
  (docs/benchmarks/tofu.md): a clear change of what a model that already knows the forget set
  predicts there, short of wrecking it (2e-4 wrecked it). The reinforced model is only ever read on
  forget examples, so what it loses elsewhere does not matter.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, List, Optional

import torch
import torch.nn.functional as F

from alter.baselines.base import ForgetItems, UnlearningMethod, adamw, forward_logits, set_all_trainable
from alter.data.prompts import IGNORE_INDEX
from alter.train.batches import phase2_plan
from alter.train.losses import answer_nll, token_nll


def generic_labels(base_logits: torch.Tensor, reinforced_logits: torch.Tensor, labels: torch.Tensor,
                   alpha: float) -> torch.Tensor:
    """``labels`` ``[B, T]`` with each answer token (label != -100) replaced by the argmax of
    ``v_b - alpha * relu(v_r - v_b)`` at the position that predicts it (``logits[:, t]`` -> ``labels[:, t+1]``);
    every other position stays as it is. Computed in float32, on the answer positions only."""
    labels = labels.to(base_logits.device)
    answer = labels[:, 1:] != IGNORE_INDEX                              # [B, T-1]: position t predicts t+1
    v_b = base_logits[:, :-1][answer].float()
    v_r = reinforced_logits.to(base_logits.device)[:, :-1][answer].float()
    out = labels.clone()
    out[:, 1:][answer] = (v_b - alpha * F.relu(v_r - v_b)).argmax(dim=-1)
    return out


def _relabelled(item, labels: List[int]):
    return dataclasses.replace(item, encoded=dataclasses.replace(item.encoded, labels=labels))


@dataclass
class WHP(UnlearningMethod):
    name: ClassVar[str] = "whp"
    citation: ClassVar[str] = ("Eldan & Russinovich 2023, Who's Harry Potter? Approximate Unlearning in LLMs "
                               "(without anchored terms); a MUSE baseline (Shi et al. 2024)")
    needs_reference: ClassVar[bool] = True
    alpha: float = 5.0
    reinforce_epochs: float = 3.0
    reinforce_lr: float = 5e-5

    def __post_init__(self):
        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        if not (number(self.alpha) and self.alpha >= 0):
            raise ValueError(f"whp: alpha must be a number >= 0, got {self.alpha!r}")
        if not (number(self.reinforce_epochs) and self.reinforce_epochs > 0):
            raise ValueError(f"whp: reinforce_epochs must be > 0, got {self.reinforce_epochs!r}")
        if not (number(self.reinforce_lr) and self.reinforce_lr > 0):
            raise ValueError(f"whp: reinforce_lr must be > 0, got {self.reinforce_lr!r}")
        self._stats: dict = {}

    @property
    def uses_retain(self) -> bool:
        return False

    def hyperparameters(self) -> dict:
        out = super().hyperparameters()
        out.update(self._stats)
        return out

    # ------------------------------------------------------------------ before the first step
    def reinforce(self, model, forget: ForgetItems):
        """A copy of ``model`` trained further on the forget items (answer NLL descent, every parameter),
        frozen and in eval mode. ``model`` itself is not changed."""
        reinforced = copy.deepcopy(model)
        set_all_trainable(reinforced, True)
        reinforced.train()
        params = list(reinforced.parameters())
        optimizer = adamw(params, self.reinforce_lr, forget.weight_decay)
        plan = phase2_plan(list(range(len(forget.items))), [], forget.batch_size, self.reinforce_epochs, 0.0,
                           forget.seed, tag="whp_reinforce")
        for step, chunk in enumerate(plan):
            batch = forget.collate([forget.items[i] for i in chunk])
            loss = answer_nll(forward_logits(reinforced, batch), batch["labels"])
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(f"whp: non-finite loss at reinforcement step {step + 1}")
            loss.backward()
            if forget.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, forget.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        del optimizer
        set_all_trainable(reinforced, False)
        reinforced.eval()
        self._stats["reinforce_steps_used"] = len(plan)
        return reinforced

    def relabel(self, reference, reinforced, forget: ForgetItems) -> List:
        """The forget items with every answer token replaced by its generic label (:func:`generic_labels`)."""
        out, nll_start, nll_reinforced, changed, tokens = [], 0.0, 0.0, 0, 0
        for i in range(0, len(forget.items), forget.batch_size):
            chunk = forget.items[i:i + forget.batch_size]
            batch = forget.collate(chunk)
            labels = batch["labels"]
            v_b = reference.logits(batch)
            with torch.no_grad():
                v_r = forward_logits(reinforced, batch)
            new = generic_labels(v_b, v_r, labels, self.alpha)
            answer = labels != IGNORE_INDEX
            nll_start += float(token_nll(v_b, labels).sum())
            nll_reinforced += float(token_nll(v_r, labels).sum())
            changed += int((new != labels)[answer].sum())
            tokens += int(answer[:, 1:].sum())
            new = new.cpu()
            for j, item in enumerate(chunk):
                out.append(_relabelled(item, new[j, :len(item.encoded.labels)].tolist()))
        self._stats.update(forget_nll_start=nll_start / max(tokens, 1),
                           forget_nll_reinforced=nll_reinforced / max(tokens, 1),
                           generic_labels_changed=changed / max(tokens, 1))
        return out

    def before_training(self, model, reference, forget: ForgetItems) -> Optional[List]:
        """Reinforce a copy of the starting model, relabel every forget example once, free the copy."""
        if reference is None:
            raise RuntimeError("whp needs the runner's frozen reference (the starting model)")
        reinforced = self.reinforce(model, forget)
        try:
            return self.relabel(reference, reinforced, forget)
        finally:
            del reinforced
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ each step
    def loss(self, model, forget_batch, retain_batch, reference):
        generic = answer_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        return {"loss": generic, "generic_nll": generic.detach()}
