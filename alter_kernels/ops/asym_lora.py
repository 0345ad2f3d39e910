"""The gated shared-A / multi-B LoRA delta and the fused base + adapter linear (docs/method.md,
"Asymmetric LoRA" and "Gradient isolation").

Validates the input, then runs the autograd function over the Triton kernels (CUDA) or the
composite PyTorch ops (CPU).
"""

from __future__ import annotations

from typing import Optional

import torch

from alter_kernels import _checks
from alter_kernels._backend import select
from alter_kernels.ops._common import needs_autograd as _needs_autograd


def _check_asym_lora_inputs(x, A, B, gates, scaling, a_grad_mask, b_grad_mask):
    _checks.check_tensor("x", x, ndim=2)
    _checks.check_tensor("A", A, ndim=2)
    _checks.check_tensor("B", B, ndim=3)
    _checks.check_tensor("gates", gates, ndim=2)
    N, d_in = x.shape
    r, a_in = A.shape
    E, d_out, b_r = B.shape
    if r <= 0:
        raise ValueError(f"rank r must be >= 1, got A of shape {tuple(A.shape)}")
    if E <= 0:
        raise ValueError(f"B must hold at least one expert (E >= 1), got B of shape {tuple(B.shape)}")
    if a_in != d_in:
        raise ValueError(f"A must have shape [r, d_in={d_in}] to match x {tuple(x.shape)}, got {tuple(A.shape)}")
    if b_r != r:
        raise ValueError(f"B must have shape [E, d_out, r={r}] to match A {tuple(A.shape)}, got {tuple(B.shape)}")
    if gates.shape != (N, E):
        raise ValueError(f"gates must have shape [N={N}, E={E}] to match x {tuple(x.shape)} and B {tuple(B.shape)}, "
                         f"got {tuple(gates.shape)}")
    try:
        s = float(scaling)
    except (TypeError, ValueError):
        raise TypeError(f"scaling must be a number, got {type(scaling).__name__}") from None
    _checks.check_same_device(x=x, A=A, B=B, gates=gates)
    _checks.check_same_dtype(x=x, A=A, B=B)
    a_grad_mask = _checks.check_mask("a_grad_mask", a_grad_mask, N, x.device)
    b_grad_mask = _checks.check_mask("b_grad_mask", b_grad_mask, N, x.device)
    return s, a_grad_mask, b_grad_mask


def _asym_lora_ops(device: torch.device):
    if select(device, has_cpp=False) == "triton":
        from alter_kernels.triton import asym_lora as ops
    else:
        from alter_kernels.composite import asym_lora as ops
    return ops


def asym_lora(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gates: torch.Tensor, scaling: float, *,
              a_grad_mask: Optional[torch.Tensor] = None, b_grad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The adapter delta ``s * sum_e gates[:, e] * (x A^T) B_e^T`` — one shrink, one stacked expand.

    Args:
        x: ``[N, d_in]``; A: ``[r, d_in]`` (shared); B: ``[E, d_out, r]`` (experts, retain first by
            convention); all one float dtype and device.
        gates: ``[N, E]`` expert weights per row (cast to x's dtype).
        scaling: s = alpha / r.
        a_grad_mask: ``[N]`` bool; rows set False contribute nothing to dL/dA (docs/method.md §4: A learns only from high-entropy tokens). None: every row contributes.
        b_grad_mask: ``[N]`` bool; likewise for dL/dB.

    Returns ``[N, d_out]`` in x's dtype, differentiable in x, A, B and gates. Gradients to x and
    gates are never masked.
    """
    s, a_grad_mask, b_grad_mask = _check_asym_lora_inputs(x, A, B, gates, scaling, a_grad_mask, b_grad_mask)
    from alter_kernels.autograd.asym_lora import AsymLoRAFunction, asym_lora_forward
    x, A, B = x.contiguous(), A.contiguous(), B.contiguous()
    gates = gates.to(x.dtype).contiguous()
    if not _needs_autograd(x, A, B, gates):            # inference: the same math without autograd's bookkeeping
        return asym_lora_forward(x, A, B, gates, s, None, None, _asym_lora_ops(x.device))[0]
    return AsymLoRAFunction.apply(x, A, B, gates, s, a_grad_mask, b_grad_mask, None, None, _asym_lora_ops(x.device))


def fused_alter_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], A: torch.Tensor,
                       B: torch.Tensor, gates: torch.Tensor, scaling: float, *,
                       a_grad_mask: Optional[torch.Tensor] = None,
                       b_grad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x W^T + bias + asym_lora(x, A, B, gates, scaling)`` as one autograd node.

    The expand accumulates into the base output in place and the backward adds ``dh A`` into
    ``G W`` in place, so the adapter costs no extra ``[N, d_out]`` or ``[N, d_in]`` buffer.
    ``weight`` ``[d_out, d_in]`` (usually frozen) and ``bias`` ``[d_out]`` get gradients only if
    they require them.
    """
    s, a_grad_mask, b_grad_mask = _check_asym_lora_inputs(x, A, B, gates, scaling, a_grad_mask, b_grad_mask)
    _checks.check_tensor("weight", weight, ndim=2)
    if weight.shape != (B.shape[1], x.shape[1]):
        raise ValueError(f"weight must have shape [d_out={B.shape[1]}, d_in={x.shape[1]}], got {tuple(weight.shape)}")
    if bias is not None:
        _checks.check_tensor("bias", bias, ndim=1)
        if bias.shape != (B.shape[1],):
            raise ValueError(f"bias must have shape [{B.shape[1]}], got {tuple(bias.shape)}")
    _checks.check_same_device(x=x, weight=weight, bias=bias)
    _checks.check_same_dtype(x=x, weight=weight, bias=bias)
    from alter_kernels.autograd.asym_lora import AsymLoRAFunction, asym_lora_forward
    x, A, B = x.contiguous(), A.contiguous(), B.contiguous()
    gates = gates.to(x.dtype).contiguous()
    if not _needs_autograd(x, A, B, gates, weight, bias):
        return asym_lora_forward(x, A, B, gates, s, weight, bias, _asym_lora_ops(x.device))[0]
    return AsymLoRAFunction.apply(x, A, B, gates, s, a_grad_mask, b_grad_mask, weight, bias, _asym_lora_ops(x.device))


def alter_linear_inference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], A: torch.Tensor,
                           B_cat: torch.Tensor, gates: torch.Tensor, scaling: float) -> torch.Tensor:
    """The no-grad forward of :func:`fused_alter_linear`, with the experts already in their expand
    layout ``B_cat [d_out, E*r]`` (``B_cat[:, e*r:(e+1)*r] = B_e``).

    For a caller that owns the shapes and keeps ``B_cat`` between calls (``AlterLinear`` at
    inference): a decoded token costs one base GEMM, one shrink and one expand, without re-stacking
    the experts or re-validating parameters that cannot have changed shape. Only what the caller
    passes per call is checked (x's width and the gates' shape). Same result as
    :func:`fused_alter_linear`.
    """
    if x.dim() != 2 or x.shape[1] != A.shape[1]:
        raise ValueError(f"x must be [N, {A.shape[1]}], got {tuple(x.shape)}")
    if gates.shape != (x.shape[0], B_cat.shape[1] // A.shape[0]):
        raise ValueError(f"gates must be [N={x.shape[0]}, E={B_cat.shape[1] // A.shape[0]}], got {tuple(gates.shape)}")
    from alter_kernels.autograd.asym_lora import asym_lora_forward
    with torch.no_grad():
        return asym_lora_forward(x.contiguous(), A, None, gates.to(x.dtype).contiguous(), float(scaling), weight, bias,
                                 _asym_lora_ops(x.device), B_cat=B_cat)[0]
