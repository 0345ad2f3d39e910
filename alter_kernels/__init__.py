"""ALTER's fused kernels: Tsallis entropy, the gated shared-A / multi-B LoRA, routing, hinge loss.

Every public function validates its input, then runs the Triton kernel (CUDA tensors), the
C++ kernel of ``csrc/`` (CPU tensors, where one exists) or plain PyTorch; see
:mod:`alter_kernels._backend` for how to force one. The PyTorch references in
:mod:`alter_kernels.reference` define what each computes (ALTER_SPEC sections 1-4).
"""

from __future__ import annotations

from typing import Optional

import torch

from alter_kernels import _checks
from alter_kernels._backend import BACKENDS, cpp_available, requested_backend, select, triton_available, use_backend
from alter_kernels.reference import (
    EntropyStats,
    asym_lora_reference,
    hinge_forget_loss_reference,
    route_reference,
    tsallis_entropy_reference,
)

__all__ = [
    "BACKENDS",
    "EntropyStats",
    "asym_lora",
    "cpp_available",
    "fused_alter_linear",
    "hinge_forget_loss",
    "linear_tsallis_entropy",
    "requested_backend",
    "route",
    "triton_available",
    "tsallis_entropy",
    "use_backend",
]

_DEFAULT_CHUNK_BYTES = 128 * 1024 * 1024


def _needs_autograd(*tensors: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------------
# Tsallis entropy (ALTER_SPEC section 2)
# ---------------------------------------------------------------------------------------------

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
    Peak extra memory is ``chunk_size * V`` logits instead of ``N * V`` (ALTER_SPEC section 2).

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


# ---------------------------------------------------------------------------------------------
# Gated shared-A / multi-B LoRA (ALTER_SPEC sections 1 and 3)
# ---------------------------------------------------------------------------------------------

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
        a_grad_mask: ``[N]`` bool; rows set False contribute nothing to dL/dA (ALTER_SPEC section
            3: A learns only from high-entropy tokens). None: every row contributes.
        b_grad_mask: ``[N]`` bool; likewise for dL/dB.

    Returns ``[N, d_out]`` in x's dtype, differentiable in x, A, B and gates. Gradients to x and
    gates are never masked.
    """
    s, a_grad_mask, b_grad_mask = _check_asym_lora_inputs(x, A, B, gates, scaling, a_grad_mask, b_grad_mask)
    from alter_kernels.autograd.asym_lora import AsymLoRAFunction
    x, A, B = x.contiguous(), A.contiguous(), B.contiguous()
    gates = gates.to(x.dtype).contiguous()
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
    from alter_kernels.autograd.asym_lora import AsymLoRAFunction
    x, A, B = x.contiguous(), A.contiguous(), B.contiguous()
    gates = gates.to(x.dtype).contiguous()
    return AsymLoRAFunction.apply(x, A, B, gates, s, a_grad_mask, b_grad_mask, weight, bias, _asym_lora_ops(x.device))


# ---------------------------------------------------------------------------------------------
# Entropy-dispatched routing (ALTER_SPEC sections 1 and 4)
# ---------------------------------------------------------------------------------------------

ROUTE_MODES = ("infer", "train")


def route(entropy: torch.Tensor, router_logits: torch.Tensor, theta: float, *, tau_high: float = 2.0,
          tau_low: float = 0.5, top_k: int = 3, retain_index: int = 0, mode: str = "infer") -> torch.Tensor:
    """Gate weights ``[N, E]`` (fp32) for each token from its entropy and router logits.

    mode="infer" (section 4): tokens with ``entropy < theta`` get a one-hot gate on their
    arg-max expert; the others get ``softmax(u / tau_high)`` restricted to the retain expert plus
    the ``top_k`` best forget experts, renormalised. mode="train" (section 1): the dense
    ``softmax(u / tau)``, tau = tau_high at or above theta, tau_low below.

    Args:
        entropy: ``[N]`` float (no NaN; +inf counts as high).
        router_logits: ``[N, E]`` float, E >= 1.
        theta: entropy threshold.
        retain_index: which expert is the retain expert (kept in every high-entropy mix).
    """
    _checks.check_tensor("entropy", entropy, ndim=1)
    _checks.check_tensor("router_logits", router_logits, ndim=2)
    N, E = router_logits.shape
    if entropy.shape[0] != N:
        raise ValueError(f"entropy must have shape [N={N}] to match router_logits {tuple(router_logits.shape)}, "
                         f"got {tuple(entropy.shape)}")
    if E < 1:
        raise ValueError(f"router_logits must have at least one expert column, got shape {tuple(router_logits.shape)}")
    _checks.check_same_device(entropy=entropy, router_logits=router_logits)
    if mode not in ROUTE_MODES:
        raise ValueError(f"mode must be one of {ROUTE_MODES}, got {mode!r}")
    try:
        theta = float(theta)
    except (TypeError, ValueError):
        raise TypeError(f"theta must be a number, got {type(theta).__name__}") from None
    if theta != theta:
        raise ValueError("theta must not be NaN")
    for name, tau in (("tau_high", tau_high), ("tau_low", tau_low)):
        if not float(tau) > 0:
            raise ValueError(f"{name} must be > 0, got {tau}")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k must be a non-negative integer, got {top_k}")
    if not 0 <= int(retain_index) < E:
        raise ValueError(f"retain_index must be in [0, {E}), got {retain_index}")
    kwargs = dict(tau_high=float(tau_high), tau_low=float(tau_low), top_k=int(top_k),
                  retain_index=int(retain_index), mode=mode)
    if N == 0 or _needs_autograd(router_logits) or router_logits.dtype == torch.float64:
        return route_reference(entropy, router_logits, theta, **kwargs)
    backend = select(router_logits.device, has_cpp=True)
    if backend == "triton":
        from alter_kernels.triton.routing import route_triton as run
    elif backend == "cpp":
        from alter_kernels.cpu.routing import route_cpp as run
    else:
        return route_reference(entropy, router_logits, theta, **kwargs)
    return run(entropy.contiguous(), router_logits.contiguous(), theta, **kwargs)


# ---------------------------------------------------------------------------------------------
# Hinge forget loss (ALTER_SPEC section 3)
# ---------------------------------------------------------------------------------------------

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
