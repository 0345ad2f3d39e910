"""Forward pass of the bounded hinge forget loss (docs/method.md §4).

Kernel: :func:`_hinge_forward_kernel`; launcher: :func:`hinge_forward_triton`, used by
:class:`alter_kernels.autograd.hinge.HingeForgetLossFunction` (which forms the mean and the
sparse backward from the per-row values and runner-up indices returned here).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

_IDX_NONE = tl.constexpr(2147483647)      # int32 max: "no candidate seen in this lane yet"


@triton.jit
def _hinge_forward_kernel(logits_ptr, labels_ptr, per_row_ptr, other_ptr, V, stride_row, margin, ignore_index,
                          BLOCK: tl.constexpr):
    """Per-row hinge ``max(0, z_y - z_y' + margin)`` and the index y' (docs/method.md §4).

    Math, for row n with logits z and label y (y != ignore_index):
        y'  = argmax_{i != y} z_i          (first index on ties)
        out = max(0, z_y - z_y' + margin)
    Rows whose label equals ``ignore_index`` give out = 0 and y' = -1 and read no logits.
    If every other logit is -inf, y' is the first index != y and out = +inf (as the reference).

    Shapes / dtypes:
        logits_ptr: [N, V] fp32 | bf16 | fp16, unit stride along V, row stride ``stride_row``.
        labels_ptr: [N] int64 | int32, in [0, V) or ``ignore_index`` (checked by the caller).
        per_row_ptr: [N] fp32. other_ptr: [N] int64. Arithmetic in fp32.
        Grid: (N,), one program per row, one pass over the row in tiles of BLOCK.

    Each lane keeps the best value and its first index seen in its column of the tiles; the
    lanes are reduced once at the end, so the loop has no cross-thread reduction.
    """
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    label = tl.load(labels_ptr + row).to(tl.int64)
    valid = label != ignore_index
    y = tl.where(valid, label, 0).to(tl.int32)      # in [0, V), V < 2^31
    v_lim = tl.where(valid, V, 0)                    # an ignored row reads nothing
    offs = tl.arange(0, BLOCK)

    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.full([BLOCK], _IDX_NONE, tl.int32)
    for start in range(0, V, BLOCK):
        cols = start + offs
        z = tl.load(base + cols, mask=cols < v_lim, other=float("-inf")).to(tl.float32)
        z = tl.where(cols == y, float("-inf"), z)
        gt = z > best
        best = tl.where(gt, z, best)
        best_idx = tl.where(gt, cols, best_idx)

    z_other = tl.max(best, axis=0)
    other = tl.min(tl.where(best == z_other, best_idx, _IDX_NONE), axis=0)
    # no finite competitor: the first index that is not the label
    other = tl.where(other == _IDX_NONE, tl.where(y == 0, 1, 0), other).to(tl.int64)
    z_y = tl.load(base + y, mask=valid, other=0.0).to(tl.float32)
    per_row = tl.maximum(z_y - z_other + margin, 0.0)
    tl.store(per_row_ptr + row, tl.where(valid, per_row, 0.0))
    tl.store(other_ptr + row, tl.where(valid, other, -1))


def _default_block(V: int) -> int:
    return max(16, min(triton.next_power_of_2(V), 4096))


def hinge_forward_triton(logits: torch.Tensor, labels: torch.Tensor, margin: float, ignore_index: int, *,
                         block: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row hinge values and runner-up indices (docs/method.md §4), one pass per row.

    Args:
        logits: ``[N, V]`` (V >= 2) fp32, bf16 or fp16 with unit stride along V.
        labels: ``[N]`` int64 or int32, each in ``[0, V)`` or equal to ``ignore_index``.
        margin: hinge margin.
        ignore_index: label value of rows that do not count.
        block: logits per tile (power of two >= 16); default ``min(next_pow2(V), 4096)``.

    Returns:
        ``(per_row fp32 [N], other_index int64 [N])``: ``max(0, z_y - z_y' + margin)`` and y'
        per row; ignored rows give 0 and -1.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a 2-D tensor [N, V], got {getattr(logits, 'shape', type(logits).__name__)}")
    if logits.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"logits must be fp32, bf16 or fp16, got {logits.dtype}")
    N, V = logits.shape
    if V < 2:
        raise ValueError(f"logits need at least 2 classes, got shape {tuple(logits.shape)}")
    if logits.stride(1) != 1:
        raise ValueError(f"logits must have unit stride along V, got strides {logits.stride()}")
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError("labels must be an int64 or int32 tensor")
    if labels.shape != (N,):
        raise ValueError(f"labels must have shape [{N}], got {tuple(labels.shape)}")
    if labels.device != logits.device:
        raise ValueError(f"labels are on {labels.device} but logits are on {logits.device}")
    if block is not None and (int(block) < 16 or int(block) & (int(block) - 1)):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    block = _default_block(V) if block is None else int(block)

    per_row = torch.empty(N, dtype=torch.float32, device=logits.device)
    other = torch.empty(N, dtype=torch.int64, device=logits.device)
    if N == 0:
        return per_row, other
    labels = labels.contiguous()
    _hinge_forward_kernel[(N,)](logits, labels, per_row, other, V, logits.stride(0) if N > 1 else V,
                                float(margin), int(ignore_index), BLOCK=block,
                                num_warps=max(4, min(16, block // 512)), num_stages=1)
    return per_row, other
