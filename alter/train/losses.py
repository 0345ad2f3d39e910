"""The hierarchical loss of docs/method.md §4, from one batch's logits.

Positions are aligned the usual way: ``logits[:, t]`` predicts ``labels[:, t+1]``. A predicted
token is *low entropy* when the base model's distribution that predicts it, S_q(base
logits[:, t]), is below theta (docs/method.md §2; the same value the adapted layers route
the token by). Only answer tokens (labels != -100) count.

    phase I :  L = CE on the high-entropy answer tokens of D_R ∪ D_F
    phase II:  L = lambda_f * hinge(low-entropy answer tokens of D_F)
                 + lambda_r * CE(answer tokens of D_R)
                 + lambda_s * KL(p_base || p_model)(the positions of struct_tokens; by default every
                   position with a real next token the hinge does not push; top-k form by default)
                 + lambda_g * router CE (added by the layers, see AlterLinear)
                 + lambda_c * KL(p_base || p_model), both without the hinge's token (an option, off by default;
                   alter/train/complement_loss.py)

Every term is a mean over its own positions, computed over all ``B * T`` positions of the batch
with a 0/1 weight per position: no boolean-mask indexing, no ``nonzero`` and no tensor-to-Python
conversion, so a step makes no host sync on a GPU (tests/test_no_host_sync.py), and the logits
are read in place (``[B * T, V]`` is a view; ``logits[:, :-1]`` would be a copy). A term whose
positions are all absent is 0. The hinge, the retain CE and the top-k KL are one function with a
closed-form backward (:mod:`alter.train.fused_loss`), which also gives each position's NLL for
the stop on the forget answers' probability.

Both phases take either the logits ``[B, T, V]`` or, as the trainer gives them for a model whose logits
are a plain linear head, a :class:`HeadInput` (the final hidden states ``[B, T, d]`` and the head):
then the logits are computed chunk by chunk inside the loss and never held whole
(:class:`alter.train.fused_loss.Phase2LinearLoss`; docs/method.md §4, "Cost").
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from alter.data.prompts import IGNORE_INDEX
from alter.modeling.entropy import is_high
from alter.train.fused_loss import phase2_model_loss


class HeadInput(NamedTuple):
    """The final hidden states ``[B, T, d]`` and the plain LM head ``weight [V, d]`` / ``bias [V]`` (or None)
    whose product would be the logits: what the losses take instead of the logits to never hold them."""
    hidden: torch.Tensor
    weight: torch.Tensor
    bias: Optional[torch.Tensor] = None


Outputs = Union[torch.Tensor, HeadInput]


def _flat(outputs: Outputs):
    """``(B, T, V, logits [B*T, V] or None, hidden [B*T, d] or None)``."""
    if isinstance(outputs, HeadInput):
        B, T, d = outputs.hidden.shape
        return B, T, outputs.weight.shape[0], None, outputs.hidden.reshape(B * T, d)
    B, T, V = outputs.shape
    return B, T, V, outputs.reshape(B * T, V), None


def next_labels(labels: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` -> ``[B * T]``: the token position t predicts (``labels[:, t+1]``), -100 at t = T-1."""
    nxt = torch.full_like(labels, IGNORE_INDEX)
    nxt[:, :-1] = labels[:, 1:]
    return nxt.reshape(-1)


def next_flags(flags: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` -> ``[B * T]`` bool: ``flags[:, t+1]`` at position t, False at t = T-1."""
    out = torch.zeros(flags.shape, dtype=torch.bool, device=flags.device)
    out[:, :-1] = flags[:, 1:].bool()
    return out.reshape(-1)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` float32 negative log-likelihood of the next token at each position (``logits[:, t]``
    against ``labels[:, t+1]``); 0 where that label is -100 and at t = T-1. The logits are read in place."""
    B, T, V = logits.shape
    z = logits.reshape(B * T, V)
    lb = next_labels(labels).to(z.device)
    return F.cross_entropy(z.float(), lb, ignore_index=IGNORE_INDEX, reduction="none").view(B, T)


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over every answer token of the batch (a causal LM's ``loss``; 0 for a batch without
    one, which :func:`alter.train.batches.encode_items` never makes), with no host sync."""
    labels = labels.to(logits.device)
    count = (labels[:, 1:] != IGNORE_INDEX).sum()
    return token_nll(logits, labels).sum() / count.clamp_min(1)


def masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``weight`` is True (0 when there are none); NaN or
    inf at a position outside the weight never leaks in."""
    w = weight.to(values.dtype)
    return torch.where(weight, values, torch.zeros_like(values)).sum() / w.sum().clamp_min(1)


def phase1_loss(logits: Outputs, labels, position_entropy, theta: float) -> Dict[str, torch.Tensor]:
    """Mean CE over the high-entropy answer tokens; ``logits`` may be a :class:`HeadInput`."""
    B, T, V, z, hidden = _flat(logits)
    dev = (z if z is not None else hidden).device
    lb = next_labels(labels).to(dev)
    sel = (lb != IGNORE_INDEX) & is_high(position_entropy.reshape(-1).to(dev), theta)
    count = sel.sum()
    if hidden is not None:                  # the same mean CE, as the fused loss's retain term over ``sel``
        none = torch.zeros_like(sel)
        ce = phase2_model_loss(None, lb, none, sel, none, None, None, margin=0.0, lambda_forget=0.0,
                               lambda_retain=1.0, lambda_struct=0.0, hidden=hidden, head_weight=logits.weight,
                               head_bias=logits.bias)["loss"]
    else:
        target = torch.where(sel, lb, torch.full_like(lb, IGNORE_INDEX))
        ce = F.cross_entropy(z.float(), target, ignore_index=IGNORE_INDEX, reduction="sum") / count.clamp_min(1)
    return {"loss": ce, "ce_high": ce.detach(), "tokens": count}


def phase2_losses(logits: Outputs, base_logits: Optional[torch.Tensor], labels, position_entropy, theta: float,
                  is_forget_row: torch.Tensor, *, margin: float, lambda_forget: float, lambda_retain: float,
                  lambda_struct: float, route_loss: Optional[torch.Tensor] = None,
                  lambda_route: float = 0.0, attention_mask: Optional[torch.Tensor] = None,
                  struct_tokens: str = "all", content: Optional[torch.Tensor] = None,
                  kl_targets: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                  lambda_complement: float = 0.0) -> Dict[str, torch.Tensor]:
    """The phase II terms; ``struct_tokens="all"`` (needs ``attention_mask``) puts the structural KL on
    every high-entropy position with a real next token, prompt included, not only answer positions.

    The KL's base side is ``base_logits [B, T, V]`` (the exact KL) or ``kl_targets``, the base's
    top-k targets ``([B, T, k] ids, [B, T, k+1] log p)`` kept per example (the top-k KL of
    :mod:`alter.train.kl_targets`, the default; docs/method.md §4). ``labels`` must lie in
    ``[0, V)`` or be -100 (the trainer checks every example once, before training). ``lambda_complement``
    (an option, off by default) adds :func:`alter.train.complement_loss.complement_kl` at the hinge positions;
    it needs ``kl_targets`` and indexes the hinge positions (one host sync per step). ``logits`` may be a
    :class:`HeadInput`, except with the exact KL or ``lambda_complement``, which read the whole logits."""
    B, T, V, z, hidden = _flat(logits)
    if hidden is not None and ((lambda_struct and kl_targets is None) or lambda_complement):
        raise ValueError("the exact structural KL (no kl_targets) and lambda_complement need the whole logits, "
                         "not a HeadInput")
    dev = (z if z is not None else hidden).device
    lb = next_labels(labels).to(dev)
    answer = lb != IGNORE_INDEX
    use_mask = attention_mask is not None and struct_tokens in ("all", "non_hinge")
    real = next_flags(attention_mask.to(dev)) if use_mask else answer     # the positions the losses read
    high = is_high(position_entropy.reshape(-1).to(dev), theta) & real
    forget = is_forget_row.to(dev).bool().repeat_interleave(T)
    hinge_rows = answer if content is None else answer & next_flags(content.to(dev))
    hinge_sel = forget & ~high & hinge_rows
    retain_sel = ~forget & answer
    kl_sel = (real & ~hinge_sel) if struct_tokens == "non_hinge" else high

    kl_ids = kl_log_p = None
    if lambda_struct and kl_targets is not None:
        kl_ids, kl_log_p = (t.reshape(B * T, t.shape[-1]).to(dev) for t in kl_targets)
    head = {} if hidden is None else {"hidden": hidden, "head_weight": logits.weight, "head_bias": logits.bias}
    fused = phase2_model_loss(z, lb, hinge_sel, retain_sel, kl_sel, kl_ids, kl_log_p, margin=margin,
                              lambda_forget=lambda_forget, lambda_retain=lambda_retain, lambda_struct=lambda_struct,
                              **head)
    total = fused["loss"]
    parts: Dict[str, torch.Tensor] = {k: fused[k] for k in ("forget", "retain", "struct") if k in fused}
    if lambda_struct and kl_targets is None and base_logits is not None:     # the exact KL (struct_kl_top_k=0)
        log_p_model = torch.log_softmax(z.float(), dim=-1)
        log_p_base = F.log_softmax(base_logits.reshape(B * T, V).float(), dim=-1)
        kl = (log_p_base.exp() * (log_p_base - log_p_model)).sum(-1)
        parts["struct"] = masked_mean(kl, kl_sel)
        total = total + lambda_struct * parts["struct"]
    if lambda_complement:
        if kl_ids is None:
            raise ValueError("lambda_complement needs the kept top-k targets (struct_kl_top_k > 0, lambda_struct > 0 "
                             "and token_entropy)")
        from alter.train.complement_loss import complement_kl
        at = hinge_sel.nonzero().squeeze(1)
        parts["complement"] = complement_kl(z[at], lb[at], kl_ids[at], kl_log_p[at])
        total = total + lambda_complement * parts["complement"]
    if lambda_route and route_loss is not None:
        parts["route"] = route_loss
        total = total + lambda_route * route_loss
    out = {k: v.detach() for k, v in parts.items()}
    out["forget_answer_nll"] = _row_answer_nll(fused["nll"], forget & answer, B)
    out["loss"] = total
    out["forget_tokens"] = hinge_sel.sum()
    out["forget_violating"] = fused["forget_violating"]
    out["high_tokens"] = high.sum()
    return out


def _row_answer_nll(nll: torch.Tensor, sel: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Per row, the summed NLL of its answer tokens among ``sel`` and their count, ``[2, n_rows]``
    float32, no grad, from the per-position NLL ``[n_rows * T]``: ``exp(-sum / count)`` is TOFU's
    per-item probability (teacher-forced, EOS included), which the phase II stop on the forget
    answers' probability reads (docs/method.md §4). Rows with no selected token have count 0."""
    T = nll.shape[0] // n_rows
    w = sel.to(torch.float32).reshape(n_rows, T)
    picked = torch.where(sel, nll.float(), torch.zeros_like(nll, dtype=torch.float32)).reshape(n_rows, T)
    return torch.stack([picked.sum(1), w.sum(1)])
