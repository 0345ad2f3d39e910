"""Launcher of the one-pass Tsallis entropy kernel, csrc/entropy.cpp (docs/method.md §2)."""

from __future__ import annotations

import torch

from alter_kernels._backend import num_threads
from alter_kernels._checks import check_q
from alter_kernels.cpu._common import KERNEL_FLOATS, check_rows, dtype_code, extension, row_stride


def tsallis_entropy_cpp(rows: torch.Tensor, q: float, return_stats: bool = False):
    """Tsallis entropy of ``softmax(rows)`` per row, in one pass over each row (C++, CPU).

    ``S_q(p) = (1 - sum_i p_i^q) / (q - 1)`` for q != 1 and ``H = -sum_i p_i log p_i`` for
    q == 1, from an online softmax: with the running maximum m, ``s1 = sum exp(z - m)`` and
    ``sq = sum exp(q (z - m))`` (both rescaled when m grows), ``sum p^q = sq / s1^q``; for
    q == 1, ``t = sum exp(z - m) (z - m)`` (rescaled as ``t' = e^d (t + d s1)``,
    d = m_old - m_new) and ``H = log s1 - t / s1``.

    Args:
        rows: ``[N, V]`` fp32, bf16 or fp16 on the CPU, ``stride(-1) == 1`` (the row stride may be
            anything). Entries may be -inf; a row that is entirely -inf gives entropy 0.
        q: Tsallis parameter, > 0.
        return_stats: also return, from the same pass, lse = m + log s1, the arg-max (first
            index on ties) and the runner-up logit value (the second largest, equal to the
            largest when it is attained twice, -inf when V == 1).

    Returns:
        fp32 ``[N]`` entropies, or the tuple (entropy fp32 ``[N]``, lse fp32 ``[N]``,
        argmax int64 ``[N]``, runner_up fp32 ``[N]``). An all -inf row gives (0, -inf, 0, -inf).
    """
    ext = extension()
    check_rows("rows", rows)
    code = dtype_code(ext, "rows", rows, KERNEL_FLOATS)
    q = check_q(q)
    n, vocab = rows.shape
    if vocab == 0:
        raise ValueError(f"rows must have a non-empty last (vocabulary) dimension, got shape {tuple(rows.shape)}")
    entropy = torch.empty(n, dtype=torch.float32)
    if return_stats:
        lse = torch.empty(n, dtype=torch.float32)
        argmax = torch.empty(n, dtype=torch.int64)
        runner_up = torch.empty(n, dtype=torch.float32)
        addresses = (lse.data_ptr(), argmax.data_ptr(), runner_up.data_ptr())
    else:
        addresses = (0, 0, 0)
    ext.tsallis_entropy(rows.data_ptr(), code, n, vocab, row_stride(rows), q, entropy.data_ptr(), *addresses,
                        num_threads())
    if return_stats:
        return entropy, lse, argmax, runner_up
    return entropy
