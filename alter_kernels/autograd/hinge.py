"""Autograd wrapper of the fused hinge forget loss (docs/method.md §4).

The forward launcher (Triton or C++) makes one pass over each row of logits and returns the
per-row hinge ``max(0, z_y - z_y' + margin)`` and the index of y'. The gradient is sparse — at
most two non-zeros per row, +1/M at the true token and -1/M at the runner-up of each active
row (M = rows not ignored) — so the backward writes those into a zero tensor instead of
differentiating a softmax. A row exactly at the hinge (value 0) gets no gradient.
"""

from __future__ import annotations

import torch


class HingeForgetLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, margin: float, ignore_index: int, forward_launcher):
        per_row, other_index = forward_launcher(logits, labels, margin, ignore_index)
        count = (labels != ignore_index).sum().clamp(min=1)
        loss = per_row.sum() / count.to(per_row.dtype)
        ctx.save_for_backward(labels, other_index, per_row > 0, count)
        ctx.logits_shape = logits.shape
        ctx.logits_dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        labels, other_index, active, count = ctx.saved_tensors
        grad = torch.zeros(ctx.logits_shape, dtype=ctx.logits_dtype, device=labels.device)
        # dense writes weighted by the active flag: no nonzero() and no host sync; an inactive or
        # ignored row writes 0 at column 0 (its other_index may be -1), which leaves it zero
        step = (grad_loss / count.to(grad_loss.dtype)).to(ctx.logits_dtype)
        value = torch.where(active, step, torch.zeros((), dtype=ctx.logits_dtype, device=labels.device))
        at_true = torch.where(active, labels.long(), torch.zeros_like(labels, dtype=torch.long))
        at_other = torch.where(active, other_index, torch.zeros_like(other_index))
        grad.scatter_(1, at_true[:, None], value[:, None])
        grad.scatter_(1, at_other[:, None], -value[:, None])
        return grad, None, None, None, None
