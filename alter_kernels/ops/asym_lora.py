"""The gated shared-A / multi-B LoRA delta and the fused base + adapter linear (docs/method.md,
"Asymmetric LoRA" and "Gradient isolation").

Validates the input, then runs the autograd function over the Triton kernels (CUDA) or the
composite PyTorch ops (CPU).
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from alter_kernels import _checks
from alter_kernels._backend import select
from alter_kernels.autograd.asym_lora import AsymLoRAFunction, asym_lora_forward
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


_ops_modules = {}                                    # uses Triton? -> launcher module, imported on first use


def _asym_lora_ops(device: torch.device):
    """The launcher module for ``device``: the backend is resolved per call (it can be forced per
    block or by the environment); only the import is done once."""
    triton = select(device, has_cpp=False) == "triton"
    ops = _ops_modules.get(triton)
    if ops is None:
        ops = _ops_modules[triton] = importlib.import_module(
            "alter_kernels.triton.asym_lora" if triton else "alter_kernels.composite.asym_lora")
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
    x, A, B = x.contiguous(), A.contiguous(), B.contiguous()
    gates = gates.to(x.dtype).contiguous()
    if not _needs_autograd(x, A, B, gates, weight, bias):
        return asym_lora_forward(x, A, B, gates, s, weight, bias, _asym_lora_ops(x.device))[0]
    return AsymLoRAFunction.apply(x, A, B, gates, s, a_grad_mask, b_grad_mask, weight, bias, _asym_lora_ops(x.device))


def alter_linear_inference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], A: torch.Tensor,
                           B_cat: torch.Tensor, gates: torch.Tensor, scaling: float) -> torch.Tensor:
    """The no-grad forward of :func:`fused_alter_linear`, with the experts already in their expand
    layout ``B_cat [d_out, E*r]`` (``B_cat[:, e*r:(e+1)*r] = B_e``): one base GEMM, one shrink and
    one expand. Same result as :func:`fused_alter_linear`; no autograd (runs under ``no_grad``).

    A caller that runs the same weights many times (``AlterLinear`` while it generates) prepares
    them once with :func:`alter_linear_inference_fn` instead.
    """
    run = alter_linear_inference_fn(weight, bias, A, B_cat, scaling)
    if torch.is_grad_enabled():
        with torch.no_grad():
            return run(x, gates)
    return run(x, gates)


def alter_linear_inference_fn(weight: torch.Tensor, bias: Optional[torch.Tensor], A: torch.Tensor,
                              B_cat: torch.Tensor, scaling: float):
    """:func:`alter_linear_inference` with the weights bound: returns ``run(x, gates) -> [N, d_out]``.

    The weights (``weight [d_out, d_in]``, ``bias [d_out]`` or None, ``A [r, d_in]``,
    ``B_cat [d_out, E*r]``, one float dtype and device) are validated and the backend chosen here,
    once; ``run`` checks only what changes per call (x ``[N, d_in]`` in the weights' dtype, gates
    ``[N, E]``) and launches base GEMM + shrink/gate + expand. At one decoded token per call the
    Python around the launches costs as much as the adapter's GEMMs, so this is the path a
    generating model takes per layer and token.

    ``gates`` may also be a tuple of E Python floats: one row of gates that every row of x takes (a
    decoded token of a one-sequence batch). Then the experts are folded once per distinct tuple,
    ``B_f = s * sum_e g_e B_e`` (``[d_out, r]``), and a call is base GEMM + shrink + one expand,
    ``x W^T + b + (x A^T) B_f^T``: the same value up to float rounding (the sum over experts is
    taken before the expand instead of after). A folded expand is remade when B_cat changes in place.

    ``run`` refuses to run with grad enabled (it records no graph): call it under
    ``torch.no_grad()``. The bound tensors are read at each call, so an in-place update of them is
    seen; a change of shape, dtype or device needs a new ``run``.
    """
    _checks.check_tensor("A", A, ndim=2)
    _checks.check_tensor("B_cat", B_cat, ndim=2)
    _checks.check_tensor("weight", weight, ndim=2)
    r, d_in = A.shape
    d_out, k = B_cat.shape
    if r <= 0 or k <= 0 or k % r:
        raise ValueError(f"B_cat must be [d_out, E*r] with r={r} from A {tuple(A.shape)}, got {tuple(B_cat.shape)}")
    if weight.shape != (d_out, d_in):
        raise ValueError(f"weight must have shape [d_out={d_out}, d_in={d_in}], got {tuple(weight.shape)}")
    if bias is not None:
        _checks.check_tensor("bias", bias, ndim=1)
        if bias.shape != (d_out,):
            raise ValueError(f"bias must have shape [{d_out}], got {tuple(bias.shape)}")
    _checks.check_same_device(weight=weight, bias=bias, A=A, B_cat=B_cat)
    _checks.check_same_dtype(weight=weight, bias=bias, A=A, B_cat=B_cat)
    E, dtype, s = k // r, A.dtype, float(scaling)
    launch = _asym_lora_ops(A.device).bind_inference(weight, bias, A, B_cat, s)
    folded = {}                                      # shared gates -> (B_cat's version, folded expand [r, d_out])
    linear = torch.nn.functional.linear

    def fold(gates: tuple) -> torch.Tensor:
        """``(s * sum_e g_e B_e)^T`` for one row of gates, kept while B_cat is not changed in place."""
        version = B_cat._version
        kept = folded.get(gates)
        if kept is not None and kept[0] == version:
            return kept[1]
        if len(gates) != E:
            raise ValueError(f"shared gates must hold E={E} values, got {len(gates)}")
        g = torch.tensor(gates, dtype=dtype, device=B_cat.device).view(1, E, 1)
        Bf = (B_cat.reshape(d_out, E, r) * g).sum(1).mul_(s).t().contiguous()
        if len(folded) >= 16:                         # a generation sees one or two gate rows per question
            folded.clear()
        folded[gates] = (version, Bf)
        return Bf

    def run(x: torch.Tensor, gates) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != d_in or x.dtype != dtype:
            raise ValueError(f"x must be [N, {d_in}] in {dtype}, got {tuple(x.shape)} in {x.dtype}")
        if torch.is_grad_enabled():
            raise RuntimeError("alter_linear_inference_fn's run records no autograd graph: call it under "
                               "torch.no_grad() (or use fused_alter_linear to train)")
        if type(gates) is tuple:                     # one row of gates for every row of x: experts folded
            x = x.contiguous()
            return linear(x, weight, bias).addmm_(linear(x, A), fold(gates))
        if gates.dim() != 2 or gates.shape[0] != x.shape[0] or gates.shape[1] != E:
            raise ValueError(f"gates must be [N={x.shape[0]}, E={E}], got {tuple(gates.shape)}")
        return launch(x.contiguous(), (gates if gates.dtype == dtype else gates.to(dtype)).contiguous())

    return run
