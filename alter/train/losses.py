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
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

import alter_kernels
from alter.data.prompts import IGNORE_INDEX
from alter.entropy import is_high
from alter.train.kl_targets import top_k_kl


def selected_positions(labels: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Flat indices into ``[B * (T-1)]`` of the positions the losses read: answer positions
    (labels != -100) without ``attention_mask``, every position with a real next token with it."""
    lb = labels[:, 1:].reshape(-1)
    keep = lb != IGNORE_INDEX if attention_mask is None else attention_mask[:, 1:].reshape(-1).bool()
    return keep.to(labels.device).nonzero().squeeze(1)


def aligned(logits: torch.Tensor, labels: torch.Tensor, position_entropy: torch.Tensor, theta: float,
            attention_mask: Optional[torch.Tensor] = None):
    """Flattened ``(logits [M, V], labels [M], high [M], row [M], answer [M])``.

    Without ``attention_mask`` the M positions are the answer positions (labels != -100); with
    it, every position whose next token is real (prompt and answer), ``answer`` telling which.
    """
    B, T, V = logits.shape
    idx = selected_positions(labels, attention_mask).to(logits.device)
    lg = logits[:, :-1].reshape(-1, V)
    lb = labels[:, 1:].reshape(-1).to(lg.device)
    ent = position_entropy[:, :-1].reshape(-1).to(lg.device)
    row = torch.arange(B, device=lg.device).repeat_interleave(T - 1)
    answer = lb != IGNORE_INDEX
    return lg.index_select(0, idx), lb[idx], is_high(ent[idx], theta), row[idx], answer[idx]


def hinge_violations(logits: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """How many rows still have a positive hinge, z_y - max_{j != y} z_j + margin > 0 (no grad)."""
    z = logits.float()
    z_y = z.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = z.scatter(1, labels.unsqueeze(1), float("-inf"))
    return (z_y - others.amax(dim=1) + margin > 0).sum()


def phase1_loss(logits, labels, position_entropy, theta: float) -> Dict[str, torch.Tensor]:
    lg, lb, high, _, _ = aligned(logits, labels, position_entropy, theta)
    if not bool(high.any()):
        return {"loss": logits.sum() * 0.0, "tokens": torch.tensor(0)}
    ce = F.cross_entropy(lg[high].float(), lb[high])
    return {"loss": ce, "ce_high": ce.detach(), "tokens": high.sum()}


def phase2_losses(logits, base_logits: Optional[torch.Tensor], labels, position_entropy, theta: float,
                  is_forget_row: torch.Tensor, *, margin: float, lambda_forget: float, lambda_retain: float,
                  lambda_struct: float, route_loss: Optional[torch.Tensor] = None,
                  lambda_route: float = 0.0, attention_mask: Optional[torch.Tensor] = None,
                  struct_tokens: str = "all", content: Optional[torch.Tensor] = None,
                  kl_targets: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """The phase II terms; ``struct_tokens="all"`` (needs ``attention_mask``) puts the structural KL on
    every high-entropy position with a real next token, prompt included, not only answer positions.

    The KL's base side is ``base_logits [B, T, V]`` (the exact KL) or ``kl_targets``, the base's
    top-k targets ``([B, T, k] ids, [B, T, k+1] log p)`` kept per example (the top-k KL of
    :mod:`alter.train.kl_targets`, the default; docs/method.md §4)."""
    mask = attention_mask if struct_tokens in ("all", "non_hinge") else None
    lg, lb, high, row, answer = aligned(logits, labels, position_entropy, theta, mask)
    forget = is_forget_row.to(lg.device)[row]
    hinge_rows = answer
    if content is not None:     # the hinge only on content tokens (AlterConfig.hinge_tokens)
        flat = content[:, 1:].reshape(-1).to(lg.device)
        hinge_rows = answer & flat[selected_positions(labels, mask).to(lg.device)]
    zero = logits.sum() * 0.0
    parts: Dict[str, torch.Tensor] = {}
    total = zero

    sel = forget & ~high & hinge_rows
    violating = torch.zeros((), dtype=torch.long)
    if lambda_forget and bool(sel.any()):
        lg_sel, lb_sel = lg[sel], lb[sel]                 # one gather of the hinge rows, for the loss and the count
        parts["forget"] = alter_kernels.hinge_forget_loss(lg_sel, lb_sel, margin)
        total = total + lambda_forget * parts["forget"]
        violating = hinge_violations(lg_sel.detach(), lb_sel, margin)
    sel = ~forget & answer
    if lambda_retain and bool(sel.any()):
        parts["retain"] = F.cross_entropy(lg[sel].float(), lb[sel])
        total = total + lambda_retain * parts["retain"]
    # the structural KL: on high-entropy positions, or (non_hinge) on every position the hinge does not push
    kl_rows = ~(forget & ~high & hinge_rows) if struct_tokens == "non_hinge" else high
    if lambda_struct and kl_targets is not None and bool(kl_rows.any()):
        idx = selected_positions(labels, mask).to(lg.device)
        t_ids, t_log_p = (t[:, :-1].reshape(-1, t.shape[-1]).to(lg.device).index_select(0, idx)[kl_rows]
                          for t in kl_targets)
        parts["struct"] = top_k_kl(lg[kl_rows], t_ids, t_log_p)
        total = total + lambda_struct * parts["struct"]
    elif lambda_struct and base_logits is not None and bool(kl_rows.any()):
        blg = aligned(base_logits, labels, position_entropy, theta, mask)[0]
        log_p_model = F.log_softmax(lg[kl_rows].float(), dim=-1)
        log_p_base = F.log_softmax(blg[kl_rows].float(), dim=-1)
        parts["struct"] = F.kl_div(log_p_model, log_p_base, log_target=True, reduction="batchmean")
        total = total + lambda_struct * parts["struct"]
    if lambda_route and route_loss is not None:
        parts["route"] = route_loss
        total = total + lambda_route * route_loss
    out = {k: v.detach() for k, v in parts.items()}
    out["forget_answer_nll"] = _row_answer_nll(lg.detach(), lb, row, forget & answer, logits.shape[0])
    out["loss"] = total
    out["forget_tokens"] = (forget & ~high & hinge_rows).sum()
    out["forget_violating"] = violating
    out["high_tokens"] = high.sum()
    return out


def _row_answer_nll(lg: torch.Tensor, lb: torch.Tensor, row: torch.Tensor, sel: torch.Tensor,
                    n_rows: int) -> torch.Tensor:
    """Per row, the summed NLL of its answer tokens among ``sel`` and their count, ``[2, n_rows]``
    float32, no grad: ``exp(-sum / count)`` is TOFU's per-item probability (teacher-forced, EOS
    included), which the phase II stop on the forget answers' probability reads (docs/method.md §4).
    Rows with no selected token have count 0. No host sync."""
    z = lg.float()
    nll = torch.logsumexp(z, dim=-1) - z.gather(1, lb.clamp_min(0)[:, None]).squeeze(1)
    w = sel.to(nll.dtype)
    out = nll.new_zeros(2, n_rows)
    out[0].index_add_(0, row, nll * w)   # every position, weighted: no boolean indexing, no sync
    out[1].index_add_(0, row, w)
    return out
