"""Which implementation of a kernel runs: Triton, C++ or plain PyTorch.

Rules (docs/method.md §1-§4 define *what* every backend computes; this file only picks
*which* one computes it):

- ``auto`` (default): a CUDA tensor runs the Triton kernel; a CPU tensor runs the C++ kernel
  of ``csrc/`` where that kernel exists and the extension is built, otherwise PyTorch.
- ``triton`` / ``cpp`` / ``torch``: force that path. Forcing ``triton`` on CPU tensors works only
  under ``TRITON_INTERPRET=1`` (the interpreter the tests use); forcing ``cpp`` on CUDA tensors
  is an error.

Set it for a process with the environment variable ``ALTER_KERNELS_BACKEND`` or for a block of
code with :func:`use_backend`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator, Optional

import torch

BACKENDS = ("auto", "triton", "cpp", "torch")
ENV_VAR = "ALTER_KERNELS_BACKEND"

_local = threading.local()


def _validate(name: str) -> str:
    name = (name or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)} "
                         f"(from {ENV_VAR} or use_backend())")
    return name


def requested_backend() -> str:
    """The backend asked for: the innermost :func:`use_backend`, else ``$ALTER_KERNELS_BACKEND``, else auto."""
    forced = getattr(_local, "stack", None)
    if forced:
        return forced[-1]
    return _validate(os.environ.get(ENV_VAR, "auto"))


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend inside a ``with`` block (thread-local)."""
    name = _validate(name)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=None)
def cpp_extension():
    """The compiled ``alter_kernels._C`` module, or None when it was not built."""
    try:
        from alter_kernels import _C  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _C


def cpp_available() -> bool:
    return cpp_extension() is not None


def select(device: torch.device, *, has_cpp: bool, has_triton: bool = True) -> str:
    """Resolve the backend for one call on ``device``.

    ``has_cpp``/``has_triton`` say whether this kernel has such an implementation at all.
    Returns one of ``"triton"``, ``"cpp"``, ``"torch"``.
    """
    want = requested_backend()
    if want == "auto":
        if device.type == "cuda" and has_triton and triton_available():
            return "triton"
        if device.type == "cpu" and has_cpp and cpp_available():
            return "cpp"
        return "torch"
    if want == "triton":
        if not has_triton:
            return "torch"
        if not triton_available():
            raise RuntimeError(f"{ENV_VAR}=triton but triton is not importable")
        if device.type != "cuda" and not triton_interpreting():
            raise RuntimeError(f"{ENV_VAR}=triton on a {device.type} tensor needs TRITON_INTERPRET=1 "
                               "(Triton has no CPU backend)")
        return "triton"
    if want == "cpp":
        if not has_cpp:
            return "torch"
        if device.type != "cpu":
            raise RuntimeError(f"{ENV_VAR}=cpp but the tensor is on {device.type}; the C++ kernels run on CPU only")
        if not cpp_available():
            raise RuntimeError(f"{ENV_VAR}=cpp but the C++ extension alter_kernels._C is not built "
                               "(run `pip install -e .`)")
        return "cpp"
    return "torch"


def num_threads(override: Optional[int] = None) -> int:
    """Threads the C++ kernels may use: torch's intra-op setting unless overridden."""
    return max(1, int(override) if override else torch.get_num_threads())
