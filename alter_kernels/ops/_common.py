"""What every op's dispatch shares."""

from __future__ import annotations

from typing import Optional

import torch


def needs_autograd(*tensors: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
