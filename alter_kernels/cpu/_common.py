"""What the C++ launchers share: the extension handle, dtype codes and tensor checks."""

from __future__ import annotations

import torch

from alter_kernels._backend import cpp_extension

FLOAT_CODES = {torch.float32: "DTYPE_FLOAT32", torch.bfloat16: "DTYPE_BFLOAT16", torch.float16: "DTYPE_FLOAT16",
               torch.float64: "DTYPE_FLOAT64"}
INT_CODES = {torch.int32: "DTYPE_INT32", torch.int64: "DTYPE_INT64"}
KERNEL_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def extension():
    """The compiled ``alter_kernels._C``; RuntimeError when it was not built."""
    ext = cpp_extension()
    if ext is None:
        raise RuntimeError("the C++ extension alter_kernels._C is not built: run `pip install -e .` "
                           "(or use the 'torch' backend)")
    return ext


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def dtype_code(ext, name: str, tensor: torch.Tensor, allowed) -> int:
    """The ``_C.DTYPE_*`` code of ``tensor``'s dtype, which must be one of ``allowed``."""
    if tensor.dtype not in allowed:
        names = ", ".join(_dtype_name(d) for d in allowed)
        raise TypeError(f"{name} must have dtype in ({names}), got {_dtype_name(tensor.dtype)}")
    table = FLOAT_CODES if tensor.dtype.is_floating_point else INT_CODES
    return int(getattr(ext, table[tensor.dtype]))


def check_cpu(name: str, tensor) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU for the C++ kernels, got {tensor.device}")
    return tensor


def check_rows(name: str, tensor) -> torch.Tensor:
    """A CPU ``[N, V]`` tensor whose rows are contiguous (stride(-1) == 1; any row stride)."""
    check_cpu(name, tensor)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, V], got shape {tuple(tensor.shape)}")
    if tensor.shape[1] > 1 and tensor.stride(1) != 1:
        raise ValueError(f"{name} must have stride 1 along its last dimension, got strides {tensor.stride()}")
    return tensor


def row_stride(tensor: torch.Tensor) -> int:
    """Elements between consecutive rows of a 2-D tensor (0 for a single row is fine)."""
    return int(tensor.stride(0)) if tensor.shape[0] > 1 else int(tensor.shape[1])
