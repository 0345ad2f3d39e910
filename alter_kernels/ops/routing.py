"""Entropy-dispatched routing: gate weights per token from its entropy and router logits
(docs/method.md, "Routing").

Validates the input, then dispatches: Triton (CUDA), the C++ kernel (CPU), or the PyTorch reference.
"""

from __future__ import annotations

import torch

from alter_kernels import _checks
from alter_kernels._backend import select
from alter_kernels.ops._common import needs_autograd as _needs_autograd
from alter_kernels.reference import route_reference


ROUTE_MODES = ("infer", "train")


def route(entropy: torch.Tensor, router_logits: torch.Tensor, theta: float, *, tau_high: float = 2.0,
          tau_low: float = 0.5, top_k: int = 3, retain_index: int = 0, mode: str = "infer") -> torch.Tensor:
    """Gate weights ``[N, E]`` (fp32) for each token from its entropy and router logits.

    mode="infer" (section 4): tokens with ``entropy < theta`` get a one-hot gate on their
    arg-max expert; the others get ``softmax(u / tau_high)`` restricted to the retain expert plus
    the ``top_k`` best forget experts, renormalised. mode="train" (section 1): the dense
    ``softmax(u / tau)``, tau = tau_high at or above theta, tau_low below.

    Args:
        entropy: ``[N]`` float; +inf counts as high; a NaN entropy gives a row of NaN gates (NaN in,
            NaN out; the model layer raises before that, naming the position).
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
        from alter_kernels.triton.routing import route_triton

        # validated above, so the launcher skips its own checks
        return route_triton(entropy.contiguous(), router_logits.contiguous(), theta, checked=False, **kwargs)
    if backend == "cpp":
        from alter_kernels.cpu.routing import route_cpp

        return route_cpp(entropy.contiguous(), router_logits.contiguous(), theta, **kwargs)
    return route_reference(entropy, router_logits, theta, **kwargs)
