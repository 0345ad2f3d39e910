"""The bounded hinge forget loss (docs/method.md, "Forget loss").

Validates the input, then runs the autograd function over the Triton (CUDA) or C++ (CPU) launcher,
or the PyTorch reference.
"""

from __future__ import annotations

from typing import Optional

import torch

from alter_kernels import _checks
from alter_kernels._backend import select
from alter_kernels.reference import hinge_forget_loss_reference


def hinge_forget_loss(logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0, *,
                      ignore_index: int = -100) -> torch.Tensor:
    """Mean over non-ignored rows of ``max(0, z_y - z_y' + margin)``, y' the best other token.

    One pass over each row (no softmax); the gradient is +1/M at z_y and -1/M at z_y' on the
    active rows. ``logits`` ``[N, V]`` (V >= 2), ``labels`` ``[N]`` int64/int32, already aligned
    with the rows (the caller shifts). Returns a 0-dim fp32 tensor (0 when every row is ignored).
    """
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
    if bool(((labels[valid] < 0) | (labels[valid] >= V)).any()):
        bad = labels[valid][(labels[valid] < 0) | (labels[valid] >= V)][:5].tolist()
        raise ValueError(f"labels must be in [0, {V}) or equal ignore_index={ignore_index}; found {bad}")
    if logits.dtype == torch.float64 or N == 0:
        return hinge_forget_loss_reference(logits, labels, margin, ignore_index=ignore_index)
    backend = select(logits.device, has_cpp=True)
    if backend == "triton":
        from alter_kernels.triton.hinge import hinge_forward_triton as launcher
    elif backend == "cpp":
        from alter_kernels.cpu.hinge import hinge_forward_cpp as launcher
    else:
        return hinge_forget_loss_reference(logits, labels, margin, ignore_index=ignore_index)
    from alter_kernels.autograd.hinge import HingeForgetLossFunction
    rows = logits if logits.stride(-1) == 1 else logits.contiguous()
    return HingeForgetLossFunction.apply(rows, labels, margin, int(ignore_index), launcher)
