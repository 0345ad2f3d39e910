"""Phase II's model-side loss in one function: hinge, retain CE and top-k structural KL (docs/method.md §4).

The three terms read the same logits ``z [N, V]`` (N = every position of the batch). Written with
autograd, each keeps its own ``[N, V]`` temporaries and gives its own ``[N, V]`` gradient, which
autograd then adds up: measured on a SmolLM2-sized batch ([8 x 130, 49152]) that was 1.3-1.9 s of
a ~4 s step on 2 CPU cores. Here the forward walks the rows in chunks and keeps per-row numbers
only, and the backward builds the gradient chunk by chunk from the closed form (q = softmax(z),
lse = logsumexp(z), and for the top-k KL S the base's top-k ids, p their base probabilities, p_T
the base's tail mass, lse_T = logsumexp(z_j, j not in S)):

    d/dz_j  CE(y)         = q_j - [j = y]
    d/dz_j  KL_k(p || q)  = q_j (sum_S p_i + t p_T) - [j in S] p_j - t [j not in S] p_T exp(z_j - lse_T)
    d/dz_j  hinge(y, y')  = [active] ([j = y] - [j = y'])

with t = 0 where the model's tail log-mass is under the floor the KL clamps it at (the clamp then
passes no gradient, as in :func:`alter.train.kl_targets.top_k_kl`). Each term is a mean over its
own rows (0 when it has none), weighted by its lambda. The hinge's per-row values and runner-up
come from the fused hinge kernel (:func:`alter_kernels.hinge_forget_rows`: Triton on CUDA, C++ on
CPU). No host sync: the row sets are bool masks, never indices. ``tests/test_fused_loss.py``
checks values and gradients against the autograd composition in float64.

Two forms:

- :class:`Phase2Loss` reads given logits ``z [N, V]`` and writes their whole gradient ``[N, V]``.
- :class:`Phase2LinearLoss` takes the final hidden states ``h [N, d]`` and the LM head ``W [V, d]``
  (``b [V]``) instead, and computes ``z = h W^T + b`` one chunk of rows at a time; as the loss is a
  scalar, each chunk's gradient ``g`` is built right there and only ``g W`` (``[rows, d]``) is kept for
  the backward: neither the logits nor their gradient ever exist whole, with the same two
  ``[N, d] x [d, V]`` products as the head and its backward outside the loss (docs/method.md §4,
  "Cost"). The trainer uses it whenever the model's logits are a plain linear head of its last hidden
  state.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

import alter_kernels
from alter.data.prompts import IGNORE_INDEX
from alter.train.kl_targets import TAIL_FLOOR

CHUNK_BYTES = 1 << 24          # ~16 MB of float32 logits per chunk (given logits)
LINEAR_CHUNK_BYTES = 1 << 25   # ~32 MB per chunk when the chunk's logits are computed here (a bigger matmul)

Chunks = Callable[[], Iterator[Tuple[int, int, torch.Tensor]]]


def _rows_per_chunk(V: int, chunk_bytes: Optional[int] = None) -> int:
    return max(1, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (4 * V))


def _row_stats(chunks: Chunks, N: int, labels, hinge_w, kl_ids, margin: float, lf: float, dev):
    """One pass over the logits: per row ``lse``, ``z_y``, ``lse_T`` (0 without KL), ``z_S [N, k]`` (or
    None), the hinge value and its runner-up (0 and 0 without the hinge)."""
    y = labels.clamp_min(0)
    use_kl = kl_ids is not None
    lse = torch.empty(N, dtype=torch.float32, device=dev)
    z_y = torch.empty(N, dtype=torch.float32, device=dev)
    lse_t = torch.zeros(N, dtype=torch.float32, device=dev)
    z_s = torch.empty(N, kl_ids.shape[1], dtype=torch.float32, device=dev) if use_kl else None
    per_row = torch.zeros(N, dtype=torch.float32, device=dev)
    other = torch.zeros_like(labels)
    hinge_labels = torch.where(hinge_w, labels, torch.full_like(labels, IGNORE_INDEX))
    for s, e, zc in chunks():
        lse[s:e] = torch.logsumexp(zc, dim=-1)
        z_y[s:e] = zc.gather(1, y[s:e, None]).squeeze(1)
        if use_kl:
            z_s[s:e] = zc.gather(1, kl_ids[s:e])
            lse_t[s:e] = torch.logsumexp(zc.scatter(1, kl_ids[s:e], float("-inf")), dim=-1)
        if lf != 0.0:
            pr, ot = alter_kernels.hinge_forget_rows(zc, hinge_labels[s:e], margin, check_range=False)
            per_row[s:e] = pr.float()
            other[s:e] = ot
    return lse, z_y, lse_t, z_s, per_row, other


def _terms(stats, labels, hinge_w, retain_w, kl_w, kl_ids, kl_log_p, lf: float, lr: float, ls: float,
           counts=None):
    """From the rows' stats (:func:`_row_stats`): ``(total, terms [3], nll [N], violating, row_values)``, the
    row values being what :func:`_gradient_chunks` reads. ``counts``: the three terms' row counts, when
    ``stats`` cover a chunk of the rows (default: counted here)."""
    lse, z_y, lse_t, z_s, per_row, other = stats
    use_kl = kl_ids is not None
    dev = lse.device
    nll = lse - z_y
    zero = torch.zeros((), dtype=torch.float32, device=dev)
    n_h, n_r, n_s = counts if counts is not None else (w.sum().clamp_min(1).float() for w in (hinge_w, retain_w, kl_w))
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
    terms = torch.stack([hinge, retain, struct]).detach()
    nll_out = torch.where(labels != IGNORE_INDEX, nll, zero).detach()
    row_values = (labels.clamp_min(0), lse, lse_t, other, active, retain_w, kl_w, kl_ids, p, log_q, tail_ok,
                  n_h, n_r, n_s)
    return total, terms, nll_out, active.sum(), row_values


def _finish_forward(ctx, saved: tuple, outputs, use_kl: bool, lf: float, lr: float, ls: float):
    total, terms, nll_out, violating, row_values = outputs
    ctx.save_for_backward(*saved, *row_values)
    ctx.coefficients = (lf, lr, ls, use_kl)
    ctx.mark_non_differentiable(terms, nll_out, violating)
    return total, terms, nll_out, violating


def _gradient_chunks(row_values, coefficients, grad_total, chunks: Chunks):
    """``(s, e, dL/dz[s:e])`` for every chunk, from the closed form of the module docstring."""
    y, lse, lse_t, other, active, retain_w, kl_w, kl_ids, p, log_q, tail_ok, n_h, n_r, n_s = row_values
    lf, lr, ls, use_kl = coefficients
    g_out = grad_total.float()
    zero = torch.zeros((), dtype=torch.float32, device=lse.device)
    c_r = torch.where(retain_w, g_out * lr / n_r, zero)                     # [N] per-row weights
    c_h = torch.where(active, g_out * lf / n_h, zero)
    if use_kl:
        c_s = torch.where(kl_w, g_out * ls / n_s, zero)
        tail = torch.where(tail_ok, p[:, -1], zero)
        coef_q = c_r + c_s * (p[:, :-1].sum(1) + tail)                      # multiplies q_j everywhere
        coef_t = c_s * tail                                                 # multiplies exp(z_j - lse_T), j not in S
        at_s = log_q.exp() * coef_q[:, None] - c_s[:, None] * p[:, :-1]     # the columns of S, exactly
    else:
        coef_q = c_r
    for s, e, zc in chunks():
        g = torch.exp(zc - lse[s:e, None]) * coef_q[s:e, None]
        if use_kl:
            # exp(z_j - lse_T) <= 1 off S; on S it may overflow, and those columns are overwritten below
            g -= coef_t[s:e, None] * torch.exp(zc - lse_t[s:e, None])
            g.scatter_(1, kl_ids[s:e], at_s[s:e])
        g.scatter_add_(1, y[s:e, None], (c_h[s:e] - c_r[s:e])[:, None])
        g.scatter_add_(1, other[s:e, None].clamp_min(0), -c_h[s:e, None])
        yield s, e, g


def _logit_chunks(z: torch.Tensor) -> Chunks:
    N, V = z.shape
    step = _rows_per_chunk(V)
    return lambda: ((s, min(N, s + step), z[s:s + step].float()) for s in range(0, N, step))


def _head_chunks(h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Chunks:
    N = h.shape[0]
    step = _rows_per_chunk(weight.shape[0], LINEAR_CHUNK_BYTES)
    return lambda: ((s, min(N, s + step), F.linear(h[s:s + step], weight, bias).float()) for s in range(0, N, step))


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
        kl_ids = kl_ids if kl_ids is not None and ls != 0.0 else None
        stats = _row_stats(_logit_chunks(z), z.shape[0], labels, hinge_w, kl_ids, margin, lf, z.device)
        outputs = _terms(stats, labels, hinge_w, retain_w, kl_w, kl_ids, kl_log_p, lf, lr, ls)
        return _finish_forward(ctx, (z,), outputs, kl_ids is not None, lf, lr, ls)

    @staticmethod
    def backward(ctx, grad_total, _terms, _nll, _violating):
        z, *row_values = ctx.saved_tensors
        grad = torch.empty_like(z)
        for s, e, g in _gradient_chunks(row_values, ctx.coefficients, grad_total, _logit_chunks(z)):
            grad[s:e] = g
        return grad, None, None, None, None, None, None, None, None, None, None


class Phase2LinearLoss(torch.autograd.Function):
    """:class:`Phase2Loss` of ``z = h W^T + b``, computed chunk by chunk (the module docstring).

    The loss is a scalar, so its gradient is known up to the upstream scalar once a chunk's rows are: the
    forward computes each chunk's logits once, its rows' stats and its gradient ``g``, and keeps ``g W``
    (``[rows, d]``); the backward only scales that. Two ``[N, d] x [d, V]`` products in all, as the head
    and its backward outside the loss would be, and no ``[N, V]`` tensor.

    Inputs: ``h [N, d]`` (float32/bf16/fp16), ``weight [V, d]`` and ``bias [V]`` or None (h's dtype), then
    as :class:`Phase2Loss`. Gradients: ``h`` always; ``weight`` / ``bias`` only when they require one (an
    LM head ALTER trains never does; the frozen head costs no ``[V, d]`` gradient). Outputs as
    :class:`Phase2Loss`.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, labels, hinge_w, retain_w, kl_w, kl_ids, kl_log_p, margin: float, lf: float,
                lr: float, ls: float):
        N, dev = h.shape[0], h.device
        kl_ids = kl_ids if kl_ids is not None and ls != 0.0 else None
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        counts = tuple(w.sum().clamp_min(1).float() for w in (hinge_w, retain_w, kl_w))
        coefficients = (lf, lr, ls, kl_ids is not None)
        one = torch.ones((), dtype=torch.float32, device=dev)
        grad_h = torch.zeros_like(h) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=dev) if need_b else None
        parts = []
        for s, e, zc in _head_chunks(h, weight, bias)():
            rows = slice(s, e)
            pick = lambda t: None if t is None else t[rows]
            chunk = lambda: iter([(0, e - s, zc)])
            stats = _row_stats(chunk, e - s, labels[rows], hinge_w[rows], pick(kl_ids), margin, lf, dev)
            parts.append(stats)
            if not (need_h or need_w or need_b):
                continue
            *_, row_values = _terms(stats, labels[rows], hinge_w[rows], retain_w[rows], kl_w[rows], pick(kl_ids),
                                    pick(kl_log_p), lf, lr, ls, counts=counts)
            _, _, g = next(_gradient_chunks(row_values, coefficients, one, chunk))
            if need_h:
                grad_h[rows] = g.to(weight.dtype) @ weight
            if need_w:
                grad_w += g.T @ h[rows].float()
            if need_b:
                grad_b += g.sum(0)
        stats = tuple(None if parts[0][i] is None else torch.cat([p[i] for p in parts]) for i in range(6))
        total, terms, nll_out, violating, _ = _terms(stats, labels, hinge_w, retain_w, kl_w, kl_ids, kl_log_p,
                                                     lf, lr, ls, counts=counts)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(terms, nll_out, violating)
        return total, terms, nll_out, violating

    @staticmethod
    def backward(ctx, grad_total, _terms, _nll, _violating):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        g = grad_total.float()
        w_dtype, b_dtype = ctx.dtypes
        return (None if grad_h is None else (grad_h * g).to(grad_h.dtype),
                None if grad_w is None else (grad_w * g).to(w_dtype),
                None if grad_b is None else (grad_b * g).to(b_dtype),
                None, None, None, None, None, None, None, None, None, None)


def phase2_model_loss(z: Optional[torch.Tensor], labels: torch.Tensor, hinge_w: torch.Tensor,
                      retain_w: torch.Tensor, kl_w: torch.Tensor, kl_ids: Optional[torch.Tensor],
                      kl_log_p: Optional[torch.Tensor], *, margin: float, lambda_forget: float, lambda_retain: float,
                      lambda_struct: float, hidden: Optional[torch.Tensor] = None,
                      head_weight: Optional[torch.Tensor] = None,
                      head_bias: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """The fused terms as a dict: ``loss`` (differentiable), ``forget`` / ``retain`` / ``struct`` (the
    means; each only when its lambda is non-zero), ``nll [N]`` and ``forget_violating``.

    Either the logits ``z [N, V]``, or ``z=None`` with ``hidden [N, d]`` and the LM head ``head_weight
    [V, d]`` (``head_bias [V]``): then :class:`Phase2LinearLoss` never holds the whole logits."""
    if kl_ids is None:
        lambda_struct_used = 0.0
    else:
        lambda_struct_used = float(lambda_struct)
        kl_ids = kl_ids.long()
    scalars = (float(margin), float(lambda_forget), float(lambda_retain), lambda_struct_used)
    rows = (labels, hinge_w, retain_w, kl_w, kl_ids, kl_log_p)
    if z is not None:
        if hidden is not None:
            raise ValueError("phase2_model_loss takes either logits or hidden states with the head, not both")
        total, terms, nll, violating = Phase2Loss.apply(z, *rows, *scalars)
    else:
        if hidden is None or head_weight is None:
            raise ValueError("phase2_model_loss needs logits, or hidden states and head_weight")
        if hidden.dim() != 2 or head_weight.dim() != 2 or hidden.shape[1] != head_weight.shape[1]:
            raise ValueError(f"hidden [N, d] and head_weight [V, d] must agree on d, got {tuple(hidden.shape)} and "
                             f"{tuple(head_weight.shape)}")
        total, terms, nll, violating = Phase2LinearLoss.apply(hidden, head_weight, head_bias, *rows, *scalars)
    out = {"loss": total, "nll": nll, "forget_violating": violating}
    for name, lam, value in (("forget", lambda_forget, terms[0]), ("retain", lambda_retain, terms[1]),
                             ("struct", lambda_struct_used, terms[2])):
        if lam:
            out[name] = value
    return out
