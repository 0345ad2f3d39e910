"""Reference gated shared-A / multi-B LoRA delta (docs/method.md §1 and §4).

    h_n      = A x_n                                   A: [r, d_in]
    delta_n  = s * sum_e g[n, e] * B_e h_n             B: [E, d_out, r], g: [N, E]

Gradient isolation (section 3): a row n with ``a_grad_mask[n] = False`` contributes nothing to
dL/dA (as if ``A x_n`` were computed with a detached A); a row with ``b_grad_mask[n] = False``
contributes nothing to dL/dB. Gradients to ``x`` and to ``gates`` are never masked.
"""

from __future__ import annotations

from typing import Optional

import torch


def asym_lora_reference(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gates: torch.Tensor, scaling: float,
                        *, a_grad_mask: Optional[torch.Tensor] = None,
                        b_grad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    h = x @ A.t()                                                    # [N, r]
    if a_grad_mask is not None:
        h = torch.where(a_grad_mask[:, None], h, x @ A.detach().t())
    per_expert = torch.einsum("nr,eor->neo", h, B)                   # [N, E, d_out]
    if b_grad_mask is not None:
        per_expert = torch.where(b_grad_mask[:, None, None], per_expert,
                                 torch.einsum("nr,eor->neo", h, B.detach()))
    return scaling * (gates[:, :, None] * per_expert).sum(1)
