"""Loss terms shared by the baselines, computed from a batch's logits.

Alignment is the usual causal one: ``logits[:, t]`` predicts ``labels[:, t+1]``; positions whose
label is -100 (the prompt, padding) do not count. Everything is computed in float32.

- ``answer_nll`` (:func:`alter.train.losses.answer_nll`, shared with ALTER's trainer): mean negative
  log-likelihood over every answer token of the batch, ``NLL = -(1/N) sum_{i,t} log p(y_{i,t} | y_{i,<t},
  x_i)`` — the value of a Hugging Face causal LM's ``loss`` (the term GA ascends and GradDiff / RL descend).
- ``sequence_logprob``: ``log pi(y_i | x_i) = sum_t log p(y_{i,t} | ...)`` per sequence, summed
  over its answer tokens (NPO's sequence likelihood; open-unlearning ``compute_batch_nll``
  returns its negative).
- ``npo_loss``: ``-(2/beta) * mean_i log sigmoid(-beta * (log pi_theta(y_i|x_i) - log pi_ref(y_i|x_i)))``
  (Zhang et al. 2024, eq. 3; open-unlearning ``compute_dpo_loss`` with only a "lose" response).
  At ``pi_theta = pi_ref`` it equals ``(2/beta) log 2``.
- ``kl_to_reference``: ``mean over positions of KL(p_ref || p_theta) = sum_v p_ref(v) (log p_ref(v) - log p_theta(v))``
  (TOFU's KL baseline and open-unlearning ``compute_kl_divergence``, ``kl_div(log p_theta, log p_ref,
  log_target=True, reduction="batchmean")``), over the positions selected by a mask.
- ``masked_activation_mse``: RMU's per-token squared error, mean over the hidden dimension, averaged
  over each sequence's selected tokens and then over the batch (open-unlearning
  ``RMU.compute_activation_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alter.data.prompts import IGNORE_INDEX
from alter.train.losses import next_labels, token_nll


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B]`` log pi(y | x): the sum of each sequence's answer-token log-probabilities
    (:func:`alter.train.losses.token_nll`, the per-token NLL with the causal shift)."""
    return -token_nll(logits, labels).sum(dim=-1)


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO forget loss ``-(2/beta) mean log sigmoid(-beta (logp - logp_ref))`` over sequences."""
    if beta <= 0:
        raise ValueError(f"NPO needs beta > 0, got {beta}")
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref.to(logp.device))).mean()


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Mean over the True ``positions`` ``[B, T]`` of KL(p_ref || p_theta) of the next-token distributions."""
    sel = positions.to(logits.device).bool()
    if not bool(sel.any()):
        raise ValueError("KL term: no position selected")
    log_p = F.log_softmax(logits[sel].float(), dim=-1)
    log_q = F.log_softmax(ref_logits.to(logits.device)[sel].float(), dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")


def kl_positions(batch: dict, which: str) -> torch.Tensor:
    """``[B, T]`` positions whose next-token distribution the KL term covers.

    ``"sequence"``: every real (non-padding) position, prompt and answer — TOFU's and
    open-unlearning's KL (they also include padding positions, which carry no data and are dropped
    here). ``"answer"``: only the positions that predict an answer token.
    """
    if which == "sequence":
        return batch["attention_mask"].bool()
    if which == "answer":
        labels = batch["labels"]
        return (next_labels(labels) != IGNORE_INDEX).view(labels.shape)
    raise ValueError(f"kl_tokens must be 'sequence' or 'answer', got {which!r}")


def masked_activation_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU distance: ``mean_i [ (1/|M_i|) sum_{t in M_i} (1/d) ||h_{i,t} - target_{i,t}||^2 ]``.

    ``hidden`` is ``[B, T, d]``; ``target`` broadcasts to it; ``mask`` ``[B, T]`` selects tokens.
    Rows without a selected token are left out of the batch mean.
    """
    sq = (hidden.float() - target.to(hidden.device).float()).pow(2).mean(dim=-1)
    m = mask.to(hidden.device).float()
    counts = m.sum(dim=-1)
    keep = counts > 0
    if not bool(keep.any()):
        raise ValueError("RMU loss: no token selected in the batch")
    per_row = (sq * m).sum(dim=-1)[keep] / counts[keep]
    return per_row.mean()
