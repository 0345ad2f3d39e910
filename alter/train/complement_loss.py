"""An option of phase II (off by default; docs/method.md §4): where the forgotten token's mass goes.

The hinge pushes a forget token's probability below the margin and says nothing about where that mass
goes. On memorised text it goes wherever is cheapest, and a forget expert learns to write around content
words (MUSE-News: "is the first person to be the 24th in a two- at the end of his three-"). This term
asks the model, at the hinge positions only, to keep the starting model's distribution *without* the
forgotten token: what the model would have said had it not known that token.

    KL( p0(. | v != y) || p(. | v != y) )

over the starting model's kept top-k tokens other than the label ``y`` and one bucket for the rest of the
vocabulary (the top-k targets of :mod:`alter.train.kl_targets`), each side renormalised without ``y``.
A label outside the kept top-k (rare for a low-entropy token) cannot be taken out of the starting model's
rest bucket, which keeps its mass there. Both sides are computed in log space (``log(1 - p(y))`` as a
log-sum-exp over every other token), so a memorised token at probability ~1 gives no cancellation.
Shapes: logits ``[N, V]`` of the N hinge positions, labels ``[N]``, target ids ``[N, k]`` (int), target
log-probabilities ``[N, k+1]`` (the last: the rest).
"""

from __future__ import annotations

import torch


def complement_kl(logits: torch.Tensor, labels: torch.Tensor, target_ids: torch.Tensor,
                  target_log_p: torch.Tensor) -> torch.Tensor:
    """Mean over the N positions of ``KL(p0(. | v != y) || p(. | v != y))`` (0 for N = 0); module docstring."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    k = target_ids.shape[1]
    ids, y = target_ids.long(), labels.long()
    lp = torch.log_softmax(logits.float(), dim=-1)                                     # [N, V]
    is_y = ids == y[:, None]                                                           # [N, k]
    not_y = lp.scatter(1, y[:, None], float("-inf"))
    log_not_y = torch.logsumexp(not_y, dim=-1)                                         # log(1 - p(y))
    rest = torch.logsumexp(not_y.scatter(1, ids, float("-inf")), dim=-1)                # outside top-k and y
    model = torch.cat([lp.gather(1, ids), rest[:, None]], dim=1) - log_not_y[:, None]   # [N, k+1]
    target = target_log_p.float().clone()
    target[:, :k] = target[:, :k].masked_fill(is_y, float("-inf"))
    target = target - torch.logsumexp(target, dim=-1, keepdim=True)
    keep = torch.isfinite(target)
    model = model.clamp(min=-1e4)                       # a bucket the model gives no mass: large, finite
    safe = torch.where(keep, target, torch.zeros_like(target))
    terms = torch.where(keep, safe.exp() * (safe - model), torch.zeros_like(target))
    return terms.sum(dim=-1).mean()
