"""The structural KL's base-model targets, computed once per example and kept (docs/method.md §4).

The structural KL(p_base || p_model) needs the base model's distribution at every position it
covers. The base never changes, so running it again at every phase II step (3 epochs: 3 base
passes per example) repeats the same work: measured on SmolLM2-135M, that pass and its
full-vocabulary log-softmax were 45% of a phase II step. Here each example's base distribution
is reduced once to its ``k`` most likely tokens plus one tail bucket holding the rest of the mass,
and kept with the example (``k + 1`` numbers per position: ``(8k + 4)`` bytes). The trainer does it
in the base pass that computes the routing entropies (:func:`linear_top_k_targets`, chunked through
the LM head); :func:`ensure_targets` fills in any example that pass did not cover.

The KL is then taken between the two distributions coarsened onto the same ``k + 1`` outcomes
(the base's top-k tokens and "any other token"):

    KL_k(p || q) = sum_{i in S} p_i (log p_i - log q_i) + p_T (log p_T - log q_T),
    p_T = 1 - sum_{i in S} p_i,   log q_T = logsumexp(z_j, j not in S) - logsumexp(z)

It never exceeds the full KL (coarsening loses information), is exactly 0 when the model's
distribution equals the base's, and its gradient moves the top-k tokens and the tail mass back
to the base's values. The tail terms are computed from log-sum-exps, never as ``log(1 - sum)``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

TAIL_FLOOR = -1e4        # log-mass of an empty tail (the top-k hold everything): contributes 0 to the KL


def _top_k_rows(z: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """float32 logits ``[n, V]`` -> ``(ids [n, k], log_p [n, k + 1])`` (no grad)."""
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    top, idx = z.topk(k, dim=-1)
    rest = torch.logsumexp(z.scatter(1, idx, float("-inf")), dim=-1, keepdim=True)
    return idx, torch.cat([top - lse, (rest - lse).clamp_min(TAIL_FLOOR)], dim=1)


def top_k_targets(logits: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``logits [..., V]`` -> ``(ids [..., k] int64, log_p [..., k + 1] float32)``: the k most likely
    tokens' log-probabilities and, last, the log of the remaining mass. Row by row over the
    leading dims, so at most one ``[T, V]`` float32 copy is alive."""
    flat = logits.reshape(-1, logits.shape[-1])
    return _chunked_targets(logits.shape[:-1], logits.shape[-1], k, lambda s, e: flat[s:e], logits.device)


def linear_top_k_targets(hidden: torch.Tensor, weight: torch.Tensor, k: int,
                         bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same targets from final hidden states ``[..., d]`` through a linear LM head ``weight [V, d]``
    (``bias [V]``), chunk by chunk, so the ``[..., V]`` logits are never held: the base pass that
    computes the routing entropies (chunked the same way) gives the KL targets too, with no second
    base pass per example."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    return _chunked_targets(hidden.shape[:-1], weight.shape[0], k,
                            lambda s, e: torch.nn.functional.linear(flat[s:e], weight, bias), hidden.device)


def _chunked_targets(lead, V: int, k: int, rows, device) -> Tuple[torch.Tensor, torch.Tensor]:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, V - 1)
    n = math.prod(lead)
    ids = torch.empty(n, k, dtype=torch.long, device=device)
    log_p = torch.empty(n, k + 1, dtype=torch.float32, device=device)
    step = max(1, (1 << 22) // V)                     # ~16 MB of float32 logits at a time
    with torch.no_grad():
        for s in range(0, n, step):
            ids[s:s + step], log_p[s:s + step] = _top_k_rows(rows(s, s + step).float(), k)
    return ids.reshape(*lead, k), log_p.reshape(*lead, k + 1)


def top_k_kl(logits: torch.Tensor, ids: torch.Tensor, log_p: torch.Tensor, *,
             weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over the M rows (or over the rows where the bool ``weight [M]`` is True; 0 if none) of
    KL_k(p_base || p_model), from the model's ``logits [M, V]`` and the base targets ``ids [M, k]``,
    ``log_p [M, k + 1]`` (see the module docstring). Differentiable in ``logits``; no host sync.
    Through autograd: the trainer takes the same KL in :mod:`alter.train.fused_loss`, and this is its
    reference in the tests."""
    if logits.dim() != 2 or ids.shape != (logits.shape[0], log_p.shape[1] - 1):
        raise ValueError(f"top_k_kl: logits [M, V], ids [M, k] and log_p [M, k + 1] must agree, got "
                         f"{tuple(logits.shape)}, {tuple(ids.shape)}, {tuple(log_p.shape)}")
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)
    log_q = z.gather(1, ids) - lse.unsqueeze(1)
    log_q_tail = torch.logsumexp(z.scatter(1, ids, float("-inf")), dim=-1) - lse
    lp = log_p.float()
    p = lp.exp()
    kl = (p[:, :-1] * (lp[:, :-1] - log_q)).sum(1) + p[:, -1] * (lp[:, -1] - log_q_tail.clamp_min(TAIL_FLOOR))
    if weight is None:
        return kl.mean()
    return torch.where(weight, kl, torch.zeros_like(kl)).sum() / weight.sum().clamp_min(1).to(kl.dtype)


def ensure_targets(model, items: Sequence, pad_token_id: int, k: int, batch_size: int,
                   progress: bool = False) -> None:
    """Give every item without ``kl_targets`` its base top-k targets: no-grad base passes over those
    items, shortest first in batches of ``batch_size``. The batches depend only on the set of items,
    so a resumed run computes the same values as an uninterrupted one."""
    from tqdm.auto import tqdm

    from alter.train.batches import collate_items

    todo = sorted({id(it): it for it in items if it.kl_targets is None}.values(),
                  key=lambda it: (len(it.encoded.input_ids), list(it.encoded.input_ids)))
    for s in tqdm(range(0, len(todo), batch_size), desc="KL targets", disable=not progress, leave=False):
        chunk = todo[s:s + batch_size]
        batch = collate_items(chunk, pad_token_id)
        logits = model.base_forward(batch["input_ids"].to(model.device),
                                    batch["attention_mask"].to(model.device)).logits
        ids, log_p = top_k_targets(logits, k)
        for j, it in enumerate(chunk):
            n = len(it.encoded.input_ids)
            it.kl_targets = (ids[j, :n].to(torch.int32).cpu(), log_p[j, :n].cpu())
