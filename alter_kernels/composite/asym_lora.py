"""The gated shared-A / multi-B LoRA as three launchers built from PyTorch GEMMs.

This is the CPU path of ``asym_lora`` (and the fallback anywhere Triton is missing): on a CPU,
torch's own GEMMs (oneDNN/MKL) beat a hand-written C++ GEMM, so the fusion here is in the
*data flow* — one shrink ``x A^T``, one expand over the stacked experts ``B_cat`` of inner size
E*r, accumulated in place into the caller's output — not in a new inner loop. docs/method.md
§1 ("Cost note"). The Triton file ``alter_kernels/triton/asym_lora.py`` provides the same
three launchers with the same contracts.

Shapes: x [N, d_in], A [r, d_in], gates [N, E], B_cat [d_out, E*r] (B_cat[:, e*r:(e+1)*r] = B_e),
h [N, r], hg [N, E*r] (hg[n, e*r + j] = gates[n, e] * h[n, j]). All in x's dtype.

The keyword ``checked`` exists for the Triton launchers' signature (``checked=False`` skips their
input checks); these launchers make no checks of their own (torch's ops raise on bad shapes) and
ignore it.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch


def shrink_gate(x: torch.Tensor, A: torch.Tensor, gates: torch.Tensor, *,
                checked: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """h = x A^T and the gate-scaled copy hg, one block of r columns per expert."""
    h = torch.nn.functional.linear(x, A)
    n, e = gates.shape
    hg = (gates.unsqueeze(2) * h.unsqueeze(1)).reshape(n, e * h.shape[1])
    return h, hg


def expand_add(hg: torch.Tensor, B_cat: torch.Tensor, scaling: float, out: Optional[torch.Tensor], *,
               checked: bool = True) -> torch.Tensor:
    """out += scaling * hg B_cat^T (allocated when ``out`` is None)."""
    if out is None:
        return torch.mm(hg, B_cat.t()).mul_(scaling)
    return out.addmm_(hg, B_cat.t(), alpha=scaling)


def expand_backward(grad_out: torch.Tensor, B_cat: torch.Tensor, h: torch.Tensor, gates: torch.Tensor,
                    scaling: float, *, checked: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """From dL/d(out): dh [N, r] = sum_e g_e * (s G B_e) and dgates [N, E] = <s G B_e, h>."""
    n, e = gates.shape
    r = h.shape[1]
    dhg = torch.mm(grad_out, B_cat).mul_(scaling).view(n, e, r)
    dh = torch.bmm(gates.unsqueeze(1), dhg).squeeze(1)
    dgates = torch.bmm(dhg, h.unsqueeze(2)).squeeze(2)
    return dh, dgates


def bind_inference(weight: torch.Tensor, bias: Optional[torch.Tensor], A: torch.Tensor, B_cat: torch.Tensor,
                   scaling: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``launch(x, gates) = x W^T + b + scaling * hg B_cat^T`` with the weights bound (no checks, no
    autograd): the base GEMM, the shrink, the gate and the expand as four torch calls, with
    ``B_cat^T`` taken once (a view: in-place updates of B_cat are seen)."""
    Bt = B_cat.t()
    linear = torch.nn.functional.linear

    def launch(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        h = linear(x, A)
        hg = (gates.unsqueeze(2) * h.unsqueeze(1)).view(x.shape[0], -1)
        return linear(x, weight, bias).addmm_(hg, Bt, alpha=scaling)

    return launch
