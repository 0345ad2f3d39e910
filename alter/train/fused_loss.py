"""Phase II's model-side loss in one function: hinge, retain CE and top-k structural KL (docs/method.md §4).

The three terms read the same logits ``z [N, V]`` (N = every position of the batch). Written with
autograd, each keeps its own ``[N, V]`` temporaries and gives its own ``[N, V]`` gradient, which
autograd then adds up: measured on a SmolLM2-sized batch ([8 x 130, 49152]) that was 1.3-1.9 s of
a ~4 s step on 2 CPU cores. Here the forward walks the rows in chunks of ~16 MB of logits and
keeps per-row numbers only, and the backward writes the whole gradient once, chunk by chunk,
from the closed form (q = softmax(z), lse = logsumexp(z), and for the top-k KL S the base's
top-k ids, p their base probabilities, p_T the base's tail mass, lse_T = logsumexp(z_j, j not in S)):

    d/dz_j  CE(y)         = q_j - [j = y]
    d/dz_j  KL_k(p || q)  = q_j (sum_S p_i + t p_T) - [j in S] p_j - t [j not in S] p_T exp(z_j - lse_T)
    d/dz_j  hinge(y, y')  = [active] ([j = y] - [j = y'])

with t = 0 where the model's tail log-mass is under the floor the KL clamps it at (the clamp then
passes no gradient, as in :func:`alter.train.kl_targets.top_k_kl`). Each term is a mean over its
own rows (0 when it has none), weighted by its lambda. The hinge's per-row values and runner-up
come from the fused hinge kernel (:func:`alter_kernels.hinge_forget_rows`: Triton on CUDA, C++ on
CPU). No host sync: the row sets are bool masks, never indices. ``tests/test_fused_loss.py``
checks values and gradients against the autograd composition in float64.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

import alter_kernels
from alter.data.prompts import IGNORE_INDEX
from alter.train.kl_targets import TAIL_FLOOR

CHUNK_BYTES = 1 << 24          # ~16 MB of float32 logits per chunk


def _rows_per_chunk(V: int) -> int:
    return max(1, CHUNK_BYTES // (4 * V))


class Phase2Loss(torch.autograd.Function):
    """``total = lf * mean_h(hinge) + lr * mean_r(nll) + ls * mean_s(KL_k)``; see the module docstring.

    Inputs: ``z [N, V]`` (float32/bf16/fp16; read in place), ``labels [N]`` int64 (-100 allowed),
    bool masks ``hinge_w``, ``retain_w``, ``kl_w`` ``[N]``, ``kl_ids [N, k]`` / ``kl_log_p [N, k + 1]``
    (or None with ``ls = 0``), ``margin``, the three lambdas. Outputs: ``total`` (0-dim, the only
    differentiable one), ``terms [3]`` (the three means, no grad), ``nll [N]`` (each row's NLL of its
    label, no grad; 0 where the label is -100) and ``violating`` (hinge rows with a positive hinge).
    """

    @staticmethod
    def forward(ctx, z, labels, hinge_w, retain_w, kl_w, kl_ids, kl_log_p, margin: float, lf: float, lr: float,
                ls: float):
        N, V = z.shape
        dev = z.device
        y = labels.clamp_min(0)
        use_kl = kl_ids is not None and ls != 0.0
        lse = torch.empty(N, dtype=torch.float32, device=dev)
        z_y = torch.empty(N, dtype=torch.float32, device=dev)
        lse_t = torch.zeros(N, dtype=torch.float32, device=dev)
        z_s = torch.empty(N, kl_ids.shape[1], dtype=torch.float32, device=dev) if use_kl else None
        step = _rows_per_chunk(V)
        for s in range(0, N, step):        # one pass over the logits, chunk by chunk
            zc = z[s:s + step].float()
            lse[s:s + step] = torch.logsumexp(zc, dim=-1)
            z_y[s:s + step] = zc.gather(1, y[s:s + step, None]).squeeze(1)
            if use_kl:
                z_s[s:s + step] = zc.gather(1, kl_ids[s:s + step])
                lse_t[s:s + step] = torch.logsumexp(zc.scatter(1, kl_ids[s:s + step], float("-inf")), dim=-1)
        nll = lse - z_y
        zero = torch.zeros((), dtype=torch.float32, device=dev)
        n_h, n_r, n_s = (w.sum().clamp_min(1).float() for w in (hinge_w, retain_w, kl_w))

        hinge_labels = torch.where(hinge_w, labels, torch.full_like(labels, IGNORE_INDEX))
        if lf != 0.0:
            per_row, other = alter_kernels.hinge_forget_rows(z, hinge_labels, margin, check_range=False)
            per_row = per_row.float()
        else:
            per_row, other = torch.zeros(N, dtype=torch.float32, device=dev), torch.zeros_like(labels)
        active = hinge_w & (per_row > 0)
        hinge = torch.where(hinge_w, per_row, zero).sum() / n_h
        retain = torch.where(retain_w, nll, zero).sum() / n_r

        if use_kl:
            lp = kl_log_p.float()
            p = lp.exp()
            log_q = z_s - lse[:, None]
            log_q_t = lse_t - lse
            tail_ok = log_q_t >= TAIL_FLOOR
            kl_row = (p[:, :-1] * (lp[:, :-1] - log_q)).sum(1) + p[:, -1] * (lp[:, -1] - log_q_t.clamp_min(TAIL_FLOOR))
            struct = torch.where(kl_w, kl_row, zero).sum() / n_s
        else:
            p = log_q = tail_ok = None
            struct = zero
        total = lf * hinge + lr * retain + ls * struct

        ctx.save_for_backward(z, y, lse, lse_t, other, active, retain_w, kl_w, kl_ids, p, log_q, tail_ok,
                              n_h, n_r, n_s)
        ctx.coefficients = (lf, lr, ls, use_kl)
        terms = torch.stack([hinge, retain, struct]).detach()
        nll_out = torch.where(labels != IGNORE_INDEX, nll, zero).detach()
        violating = active.sum()
        ctx.mark_non_differentiable(terms, nll_out, violating)
        return total, terms, nll_out, violating

    @staticmethod
    def backward(ctx, grad_total, _terms, _nll, _violating):
        z, y, lse, lse_t, other, active, retain_w, kl_w, kl_ids, p, log_q, tail_ok, n_h, n_r, n_s = ctx.saved_tensors
        lf, lr, ls, use_kl = ctx.coefficients
        N, V = z.shape
        g_out = grad_total.float()
        zero = torch.zeros((), dtype=torch.float32, device=z.device)
        c_r = torch.where(retain_w, g_out * lr / n_r, zero)                     # [N] per-row weights
        c_h = torch.where(active, g_out * lf / n_h, zero)
        if use_kl:
            c_s = torch.where(kl_w, g_out * ls / n_s, zero)
            tail = torch.where(tail_ok, p[:, -1], zero)
            coef_q = c_r + c_s * (p[:, :-1].sum(1) + tail)                      # multiplies q_j everywhere
            coef_t = c_s * tail                                         # multiplies exp(z_j - lse_T), j not in S
            at_s = log_q.exp() * coef_q[:, None] - c_s[:, None] * p[:, :-1]     # the columns of S, exactly
        else:
            coef_q = c_r
        grad = torch.empty_like(z)
        step = _rows_per_chunk(V)
        for s in range(0, N, step):
            e = min(N, s + step)
            zc = z[s:e].float()
            g = torch.exp(zc - lse[s:e, None]) * coef_q[s:e, None]
            if use_kl:
                # exp(z_j - lse_T) <= 1 off S; on S it may overflow, and those columns are overwritten below
                g -= coef_t[s:e, None] * torch.exp(zc - lse_t[s:e, None])
                g.scatter_(1, kl_ids[s:e], at_s[s:e])
            g.scatter_add_(1, y[s:e, None], (c_h[s:e] - c_r[s:e])[:, None])
            g.scatter_add_(1, other[s:e, None].clamp_min(0), -c_h[s:e, None])
            grad[s:e] = g
        return grad, None, None, None, None, None, None, None, None, None, None


def phase2_model_loss(z: torch.Tensor, labels: torch.Tensor, hinge_w: torch.Tensor, retain_w: torch.Tensor,
                      kl_w: torch.Tensor, kl_ids: Optional[torch.Tensor], kl_log_p: Optional[torch.Tensor], *,
                      margin: float, lambda_forget: float, lambda_retain: float,
                      lambda_struct: float) -> Dict[str, torch.Tensor]:
    """The fused terms as a dict: ``loss`` (differentiable), ``forget`` / ``retain`` / ``struct`` (the
    means; each only when its lambda is non-zero), ``nll [N]`` and ``forget_violating``."""
    if kl_ids is None:
        lambda_struct_used = 0.0
    else:
        lambda_struct_used = float(lambda_struct)
        kl_ids = kl_ids.long()
    total, terms, nll, violating = Phase2Loss.apply(z, labels, hinge_w, retain_w, kl_w, kl_ids, kl_log_p,
                                                    float(margin), float(lambda_forget), float(lambda_retain),
                                                    lambda_struct_used)
    out = {"loss": total, "nll": nll, "forget_violating": violating}
    for name, lam, value in (("forget", lambda_forget, terms[0]), ("retain", lambda_retain, terms[1]),
                             ("struct", lambda_struct_used, terms[2])):
        if lam:
            out[name] = value
    return out
