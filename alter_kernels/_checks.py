"""Input validation shared by every public kernel entry point.

Each check raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape, device
or value) with a message naming the argument and what was seen, so that a user who passes a
bad tensor learns which one and why without reading a kernel.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
KERNEL_DTYPES = FLOAT_DTYPES + (torch.float64,)


def check_tensor(name: str, value, *, dtypes: Iterable[torch.dtype] = KERNEL_DTYPES,
                 ndim: Optional[int] = None, min_ndim: Optional[int] = None) -> torch.Tensor:
    """Return ``value`` if it is a tensor of an allowed dtype and rank, else raise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    dtypes = tuple(dtypes)
    if value.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({allowed}), got {str(value.dtype).replace('torch.', '')}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(value.shape)}")
    return value


def check_same_device(**tensors: Optional[torch.Tensor]) -> None:
    """Raise if the given (non-None) tensors do not all live on one device."""
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {v.device for v in present.values()}
    if len(devices) > 1:
        seen = ", ".join(f"{k} on {v.device}" for k, v in present.items())
        raise ValueError(f"all tensors must be on the same device, got {seen}")


def check_same_dtype(**tensors: Optional[torch.Tensor]) -> None:
    """Raise if the given (non-None) tensors do not all share one dtype."""
    present = {k: v for k, v in tensors.items() if v is not None}
    dtypes = {v.dtype for v in present.values()}
    if len(dtypes) > 1:
        seen = ", ".join(f"{k}: {str(v.dtype).replace('torch.', '')}" for k, v in present.items())
        raise TypeError(f"tensors must share one dtype, got {seen}")


def check_q(q) -> float:
    """Tsallis deformation parameter: a finite number > 0 (q = 1 is the Shannon limit)."""
    if isinstance(q, (str, bytes, bool)) or not isinstance(q, (int, float)) and not hasattr(q, "__float__"):
        raise TypeError(f"q must be a number, got {type(q).__name__}")
    qf = float(q)
    if not (qf > 0.0) or qf != qf or qf == float("inf"):
        raise ValueError(f"q must be a finite number > 0, got {q}")
    return qf


def check_mask(name: str, mask: Optional[torch.Tensor], n_rows: int, device: torch.device) -> Optional[torch.Tensor]:
    """A per-row boolean mask ``[N]`` on ``device`` (or None)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool tensor of shape [{n_rows}] or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype bool, got {str(mask.dtype).replace('torch.', '')}")
    if mask.shape != (n_rows,):
        raise ValueError(f"{name} must have shape [{n_rows}] (one flag per row of x), got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but x is on {device}")
    return mask


def check_labels(labels, n_rows: int, device: torch.device) -> torch.Tensor:
    """Integer class labels ``[N]`` aligned with the rows of the logits."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be an integer tensor, got {type(labels).__name__}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must have dtype int64 or int32, got {str(labels.dtype).replace('torch.', '')}")
    if labels.shape != (n_rows,):
        raise ValueError(f"labels must have shape [{n_rows}] (one per row of logits), got {tuple(labels.shape)}")
    if labels.device != device:
        raise ValueError(f"labels are on {labels.device} but logits are on {device}")
    return labels
