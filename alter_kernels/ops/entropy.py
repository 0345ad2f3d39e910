"""Tsallis entropy of softmax(logits), one pass, and fused with the LM head (docs/method.md, "Token entropy").

Validates the input, then dispatches: Triton (CUDA), the C++ kernel (CPU), or the PyTorch reference.
"""

from __future__ import annotations

from typing import Optional

import torch

from alter_kernels import _checks
from alter_kernels._backend import select
from alter_kernels.ops._common import needs_autograd as _needs_autograd
from alter_kernels.reference import EntropyStats, tsallis_entropy_reference

_DEFAULT_CHUNK_BYTES = 128 * 1024 * 1024


def tsallis_entropy(logits: torch.Tensor, q: float = 1.5, *, return_stats: bool = False):
    """Tsallis entropy S_q of softmax(logits) over the last dimension, in one pass.

    ``S_q(p) = (1 - sum_i p_i^q) / (q - 1)``; q = 1 is Shannon ``-sum p log p``.

    Args:
        logits: ``[..., V]`` fp32, bf16 or fp16 (fp64 runs the reference). Entries may be -inf
            (a masked vocabulary); a row that is entirely -inf has entropy 0. Any strides.
        q: deformation parameter, > 0.
        return_stats: also return log-sum-exp, arg-max and the runner-up logit value of every
            row, computed in the same pass (an :class:`EntropyStats`).

    Returns:
        ``[...]`` fp32 entropies (fp64 for fp64 input), or an :class:`EntropyStats`.

    Not differentiable through the fused kernels: when ``logits`` requires grad (and grad is
    enabled) the differentiable reference runs instead.
    """
    _checks.check_tensor("logits", logits, min_ndim=1)
    q = _checks.check_q(q)
    V = logits.shape[-1]
    if V == 0:
        raise ValueError(f"logits must have a non-empty last (vocabulary) dimension, got shape {tuple(logits.shape)}")
    if logits.dtype == torch.float64 or _needs_autograd(logits):
        return tsallis_entropy_reference(logits, q, return_stats=return_stats)
    lead = logits.shape[:-1]
    rows = logits.reshape(-1, V)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    backend = select(rows.device, has_cpp=True)
    if rows.shape[0] == 0:
        backend = "torch"
    if backend == "triton":
        from alter_kernels.triton.entropy import tsallis_entropy_triton as run
    elif backend == "cpp":
        from alter_kernels.cpu.entropy import tsallis_entropy_cpp as run
    else:
        return tsallis_entropy_reference(logits, q, return_stats=return_stats)
    result = run(rows, q, return_stats)
    if not return_stats:
        return result.view(lead)
    return EntropyStats(*(t.view(lead) for t in result))


def linear_tsallis_entropy(hidden: torch.Tensor, lm_head_weight: torch.Tensor, q: float = 1.5, *,
                           chunk_size: Optional[int] = None, bias: Optional[torch.Tensor] = None,
                           return_stats: bool = False):
    """Entropy of ``softmax(hidden @ W^T + bias)`` without ever holding the full ``[N, V]`` logits.

    Rows of ``hidden`` are processed ``chunk_size`` at a time: one GEMM makes that chunk's
    logits, the one-pass entropy kernel reduces them, and the chunk is freed before the next.
    Peak extra memory is ``chunk_size * V`` logits instead of ``N * V`` (docs/method.md §2).

    Args:
        hidden: ``[..., d]`` final hidden states (fp32, bf16, fp16).
        lm_head_weight: ``[V, d]``, same dtype and device as ``hidden``.
        q: Tsallis parameter, > 0.
        chunk_size: rows per chunk; default keeps each chunk's logits near 128 MiB.
        bias: optional ``[V]`` LM-head bias.
        return_stats: as in :func:`tsallis_entropy`.

    Returns ``[...]`` fp32 entropies (or :class:`EntropyStats`). Runs without gradient.
    """
    _checks.check_tensor("hidden", hidden, min_ndim=1)
    _checks.check_tensor("lm_head_weight", lm_head_weight, ndim=2)
    q = _checks.check_q(q)
    if hidden.shape[-1] != lm_head_weight.shape[1]:
        raise ValueError(f"hidden's last dimension ({hidden.shape[-1]}) must equal lm_head_weight's second "
                         f"dimension; got hidden {tuple(hidden.shape)} and lm_head_weight {tuple(lm_head_weight.shape)}")
    if bias is not None:
        _checks.check_tensor("bias", bias, ndim=1)
        if bias.shape[0] != lm_head_weight.shape[0]:
            raise ValueError(f"bias must have shape [{lm_head_weight.shape[0]}], got {tuple(bias.shape)}")
    _checks.check_same_device(hidden=hidden, lm_head_weight=lm_head_weight, bias=bias)
    _checks.check_same_dtype(hidden=hidden, lm_head_weight=lm_head_weight, bias=bias)
    V = lm_head_weight.shape[0]
    if chunk_size is None:
        chunk_size = max(1, _DEFAULT_CHUNK_BYTES // (V * 4))
    elif int(chunk_size) <= 0:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    chunk_size = int(chunk_size)
    lead = hidden.shape[:-1]
    rows = hidden.reshape(-1, hidden.shape[-1])
    outs = []
    with torch.no_grad():
        for start in range(0, rows.shape[0], chunk_size):
            logits = torch.nn.functional.linear(rows[start:start + chunk_size], lm_head_weight, bias)
            outs.append(tsallis_entropy(logits, q, return_stats=return_stats))
            del logits
    if not outs:
        empty = torch.empty(lead, dtype=torch.float32, device=hidden.device)
        if not return_stats:
            return empty
        return EntropyStats(empty, empty.clone(), empty.to(torch.int64), empty.clone())
    if not return_stats:
        return torch.cat(outs).view(lead)
    return EntropyStats(*(torch.cat(parts).view(lead) for parts in zip(*outs)))
