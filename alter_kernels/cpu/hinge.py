"""Launcher of the fused hinge forward kernel, csrc/hinge.cpp (docs/method.md §4)."""

from __future__ import annotations

import torch

from alter_kernels._backend import num_threads
from alter_kernels.cpu._common import KERNEL_FLOATS, check_cpu, check_rows, dtype_code, extension, row_stride


def hinge_forward_cpp(logits: torch.Tensor, labels: torch.Tensor, margin: float, ignore_index: int):
    """Per-row hinge ``max(0, z_y - z_y' + margin)`` and the index y', one pass per row (C++, CPU).

    y = ``labels[n]`` and y' is the highest-scoring index other than y (first index on ties);
    the hinge is computed in fp32. Rows with ``labels[n] == ignore_index`` give 0 and
    ``other_index`` -1. :class:`alter_kernels.autograd.hinge.HingeForgetLossFunction` turns
    the result into the mean loss and its sparse gradient (+1/M at y, -1/M at y').

    Args:
        logits: ``[N, V]`` (V >= 2) fp32, bf16 or fp16 on the CPU, ``stride(-1) == 1``.
        labels: ``[N]`` int64 or int32; each in ``[0, V)`` or equal to ``ignore_index``.
        margin: the hinge margin (default 1.0 in the public API).
        ignore_index: label value of rows to skip.

    Returns:
        (per_row fp32 ``[N]``, other_index int64 ``[N]``). ValueError names the first label out
        of range.
    """
    ext = extension()
    check_rows("logits", logits)
    code = dtype_code(ext, "logits", logits, KERNEL_FLOATS)
    check_cpu("labels", labels)
    label_code = dtype_code(ext, "labels", labels, (torch.int64, torch.int32))
    n, vocab = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape [{n}] (one per row of logits), got {tuple(labels.shape)}")
    if vocab < 2:
        raise ValueError(f"logits need at least 2 classes for a runner-up, got shape {tuple(logits.shape)}")
    labels = labels.contiguous()
    per_row = torch.empty(n, dtype=torch.float32)
    other_index = torch.empty(n, dtype=torch.int64)
    ext.hinge_forward(logits.data_ptr(), code, n, vocab, row_stride(logits), labels.data_ptr(), label_code,
                      float(margin), int(ignore_index), per_row.data_ptr(), other_index.data_ptr(), num_threads())
    return per_row, other_index
