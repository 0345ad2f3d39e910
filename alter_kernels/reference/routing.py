"""Reference entropy-dispatched routing (docs/method.md §1 and §3).

mode="infer" (section 4), per token n with router logits u[n] over E experts:
  - H[n] <  theta (knowledge token): one-hot on argmax u[n] (ties: lowest index).
  - H[n] >= theta (structural token): w = softmax(u[n] / tau_high); keep the retain expert and
    the top_k forget experts by w (all of them when fewer exist), zero the rest, renormalise
    (computed as a softmax over the kept logits, which cannot divide 0 by 0).
mode="train" (section 1): dense w = softmax(u[n] / tau), tau = tau_high if H[n] >= theta else
  tau_low; every expert keeps its weight.
NaN entropies are not allowed; +inf counts as high (the first position of a sequence).
"""

from __future__ import annotations

import torch


def route_reference(entropy: torch.Tensor, router_logits: torch.Tensor, theta: float, *, tau_high: float = 2.0,
                    tau_low: float = 0.5, top_k: int = 3, retain_index: int = 0, mode: str = "infer") -> torch.Tensor:
    u = router_logits.to(torch.float32)
    high = entropy >= theta
    E = u.shape[-1]
    if mode == "train":
        tau = torch.where(high, torch.full_like(entropy, tau_high, dtype=torch.float32),
                          torch.full_like(entropy, tau_low, dtype=torch.float32))
        gates = torch.softmax(u / tau[:, None], dim=-1)
        return torch.where(torch.isnan(entropy)[:, None], float("nan"), gates)
    low_gates = torch.nn.functional.one_hot(u.argmax(-1), E).to(torch.float32)
    x = u / tau_high
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[:, retain_index] = True
    n_forget = E - 1
    k = min(top_k, n_forget)
    if k > 0:
        forget_x = x.clone()
        forget_x[:, retain_index] = float("-inf")
        top = forget_x.topk(k, dim=-1).indices
        keep.scatter_(1, top, True)
    # renormalising the kept softmax weights == a softmax over the kept logits (no 0 / 0 possible)
    high_gates = torch.softmax(x.masked_fill(~keep, float("-inf")), dim=-1)
    gates = torch.where(high[:, None], high_gates, low_gates)
    return torch.where(torch.isnan(entropy)[:, None], float("nan"), gates)     # NaN in, NaN out
