"""Reference Tsallis entropy of softmax(logits) (docs/method.md §2).

    p = softmax(z),  S_q(p) = (1 - sum_i p_i^q) / (q - 1)   for q != 1,
    S_1(p) = -sum_i p_i log p_i                             (Shannon, the q -> 1 limit).

Written as ``S_q = -sum_i p_i * expm1((q - 1) log p_i) / (q - 1)``, which equals the formula
above (because sum_i p_i = 1) and keeps its accuracy as q approaches 1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class EntropyStats(NamedTuple):
    """What one pass over a row of logits yields (docs/method.md §2).

    entropy: ``[...]`` fp32, S_q of softmax(logits).
    lse: ``[...]`` fp32, log-sum-exp of the row.
    argmax: ``[...]`` int64, index of the largest logit (first one on ties).
    runner_up: ``[...]`` fp32, the second-largest logit *value* (equal to the largest when the
        maximum is attained twice; -inf when the row has a single finite entry or V = 1).
    """

    entropy: torch.Tensor
    lse: torch.Tensor
    argmax: torch.Tensor
    runner_up: torch.Tensor


def _entropy_from_logp(logp: torch.Tensor, q: float) -> torch.Tensor:
    p = logp.exp()
    if q == 1.0:
        terms = torch.where(p > 0, p * logp, torch.zeros_like(p))
        return -terms.sum(-1)
    terms = torch.where(p > 0, p * torch.expm1((q - 1.0) * logp), torch.zeros_like(p))
    return -terms.sum(-1) / (q - 1.0)


def tsallis_entropy_reference(logits: torch.Tensor, q: float = 1.5, *, return_stats: bool = False):
    """S_q of softmax over the last dimension; fp32 result (fp64 in, fp64 out).

    Rows that are entirely -inf have no distribution: their entropy is 0 and their lse -inf.
    A row holding a NaN gives NaN entropy, lse and runner-up (NaN in, NaN out; its arg-max is
    unspecified); the model layer turns that into an error naming the position.
    """
    work_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.to(work_dtype)
    row_max = z.amax(-1, keepdim=True)
    empty = torch.isneginf(row_max)
    z_safe = torch.where(empty, torch.zeros_like(z), z)
    logp = torch.log_softmax(z_safe, dim=-1)
    logp = torch.where(empty, torch.full_like(logp, float("-inf")), logp)
    entropy = _entropy_from_logp(logp, q)
    has_nan = torch.isnan(z).any(-1)
    nan = torch.full_like(entropy, float("nan"))
    entropy = torch.where(has_nan, nan, entropy)
    if not return_stats:
        return entropy
    lse = torch.logsumexp(z, dim=-1)
    argmax = z.argmax(-1)
    if z.shape[-1] >= 2:
        # the runner-up value: the max after removing exactly one occurrence of the arg-max
        without_top = z.scatter(-1, argmax.unsqueeze(-1), float("-inf"))
        runner_up = without_top.amax(-1)
    else:
        runner_up = torch.full(z.shape[:-1], float("-inf"), dtype=work_dtype, device=z.device)
    lse = torch.where(has_nan, nan, lse)
    runner_up = torch.where(has_nan, nan, runner_up)
    return EntropyStats(entropy, lse, argmax, runner_up)


def linear_tsallis_entropy_reference(hidden: torch.Tensor, lm_head_weight: torch.Tensor, q: float = 1.5):
    """S_q of softmax(hidden @ W^T), materialising the full logits (the memory the chunked kernel avoids)."""
    logits = hidden.to(torch.float32) @ lm_head_weight.to(torch.float32).t()
    return tsallis_entropy_reference(logits, q)
