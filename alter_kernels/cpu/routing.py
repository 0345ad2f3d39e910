"""Launcher of the entropy-dispatched routing kernel, csrc/routing.cpp (docs/method.md §1 and §3)."""

from __future__ import annotations

import torch

from alter_kernels._backend import num_threads
from alter_kernels.cpu._common import KERNEL_FLOATS, check_cpu, dtype_code, extension

MODES = {"infer": 0, "train": 1}


def route_cpp(entropy: torch.Tensor, router_logits: torch.Tensor, theta: float, *, tau_high: float,
              tau_low: float, top_k: int, retain_index: int, mode: str) -> torch.Tensor:
    """Gate weights per token from its entropy H and router logits u (C++, CPU).

    high = ``H >= theta``, compared in the entropy's dtype as ``entropy >= theta`` does in torch.

    - mode "train" (section 1): ``w = softmax(u / tau)``, tau = tau_high if high else tau_low.
    - mode "infer" (section 4): a low token gets a one-hot gate on ``argmax u`` (lowest index on
      ties); a high token gets ``softmax(u / tau_high)`` restricted to ``retain_index`` and the
      ``min(top_k, E - 1)`` largest other experts (lowest index on ties), renormalised.

    Args:
        entropy: ``[N]`` fp32, bf16, fp16 or fp64 (+inf counts as high).
        router_logits: ``[N, E]`` contiguous fp32, bf16 or fp16 on the CPU, E >= 1.
        theta: entropy threshold; tau_high, tau_low > 0; top_k >= 0; retain_index in [0, E).
        mode: "infer" or "train".

    Returns:
        fp32 ``[N, E]`` gates; every row sums to 1.
    """
    ext = extension()
    check_cpu("entropy", entropy)
    check_cpu("router_logits", router_logits)
    u_code = dtype_code(ext, "router_logits", router_logits, KERNEL_FLOATS)
    h_code = dtype_code(ext, "entropy", entropy, KERNEL_FLOATS + (torch.float64,))
    if router_logits.dim() != 2:
        raise ValueError(f"router_logits must be 2-D [N, E], got shape {tuple(router_logits.shape)}")
    n, experts = router_logits.shape
    if entropy.shape != (n,):
        raise ValueError(f"entropy must have shape [N={n}] to match router_logits, got {tuple(entropy.shape)}")
    if not router_logits.is_contiguous():
        raise ValueError(f"router_logits must be contiguous, got strides {router_logits.stride()}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
    # torch compares a tensor with a Python float in the tensor's dtype: round theta the same way
    theta_cmp = float(torch.tensor(float(theta), dtype=entropy.dtype))
    entropy = entropy.contiguous()
    gates = torch.empty(n, experts, dtype=torch.float32)
    ext.route(entropy.data_ptr(), h_code, router_logits.data_ptr(), u_code, n, experts, theta_cmp, float(tau_high),
              float(tau_low), int(top_k), int(retain_index), MODES[mode], gates.data_ptr(), num_threads())
    return gates
