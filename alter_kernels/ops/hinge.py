"""The bounded hinge forget loss (docs/method.md, "Forget loss").

Validates the input, then runs the autograd function over the Triton (CUDA) or C++ (CPU) launcher,
or the PyTorch reference; ``hinge_forget_rows`` returns the same kernel's per-row output.
"""

from __future__ import annotations

import torch

from alter_kernels import _checks
from alter_kernels._backend import select
from alter_kernels.reference import hinge_forget_loss_reference, hinge_forget_rows_reference


def hinge_forget_loss(logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0, *,
                      ignore_index: int = -100) -> torch.Tensor:
    """Mean over non-ignored rows of ``max(0, z_y - z_y' + margin)``, y' the best other token.

    One pass over each row (no softmax); the gradient is +1/M at z_y and -1/M at z_y' on the
    active rows. ``logits`` ``[N, V]`` (V >= 2), ``labels`` ``[N]`` int64/int32, already aligned
    with the rows (the caller shifts). Returns a 0-dim fp32 tensor (0 when every row is ignored).
    """
    margin = _checked(logits, labels, margin, ignore_index, True)
    launcher = _launcher(logits)
    if launcher is None:
        return hinge_forget_loss_reference(logits, labels, margin, ignore_index=ignore_index)
    from alter_kernels.autograd.hinge import HingeForgetLossFunction
    rows = logits if logits.stride(-1) == 1 else logits.contiguous()
    return HingeForgetLossFunction.apply(rows, labels, margin, int(ignore_index), launcher)


def hinge_forget_rows(logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0, *,
                      ignore_index: int = -100, check_range: bool = True):
    """The same kernel's per-row output, no autograd: ``(per_row fp32 [N], other_index int64 [N])``,
    ``per_row = max(0, z_y - z_y' + margin)`` and y' the runner-up (first index on ties); 0 and -1
    on ignored rows. For callers that build the gradient themselves (ALTER's fused phase II loss,
    ``alter/train/fused_loss.py``): ``+c`` at y and ``-c`` at y' on the rows with ``per_row > 0``.
    Inputs as in :func:`hinge_forget_loss`. ``check_range=False`` skips the check that every label
    lies in ``[0, V)``, the one step here that reads tensor values on the host (a sync on GPU): for
    callers that checked the labels already (ALTER's trainer checks every example once, before
    training). The C++ kernel checks them anyway.
    """
    margin = _checked(logits, labels, margin, ignore_index, check_range)
    launcher = _launcher(logits)
    with torch.no_grad():
        if launcher is None:
            return hinge_forget_rows_reference(logits, labels, margin, ignore_index=ignore_index)
        rows = logits if logits.stride(-1) == 1 else logits.contiguous()
        return launcher(rows, labels, margin, int(ignore_index))


def _checked(logits, labels, margin, ignore_index: int, check_range: bool) -> float:
    _checks.check_tensor("logits", logits, ndim=2)
    N, V = logits.shape
    if V < 2:
        raise ValueError(f"logits need at least 2 classes for a runner-up, got shape {tuple(logits.shape)}")
    _checks.check_labels(labels, N, logits.device)
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        raise TypeError(f"margin must be a number, got {type(margin).__name__}") from None
    valid = labels != ignore_index
    if check_range and bool(((labels[valid] < 0) | (labels[valid] >= V)).any()):
        bad = labels[valid][(labels[valid] < 0) | (labels[valid] >= V)][:5].tolist()
        raise ValueError(f"labels must be in [0, {V}) or equal ignore_index={ignore_index}; found {bad}")
    return margin


def _launcher(logits: torch.Tensor):
    """The forward launcher for ``logits``' device and dtype, or None for the PyTorch reference."""
    if logits.dtype == torch.float64 or logits.shape[0] == 0:
        return None
    backend = select(logits.device, has_cpp=True)
    if backend == "triton":
        from alter_kernels.triton.hinge import hinge_forward_triton
        return hinge_forward_triton
    if backend == "cpp":
        from alter_kernels.cpu.hinge import hinge_forward_cpp
        return hinge_forward_cpp
    return None
