"""A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``: fail on every tensor-to-Python
conversion and data-dependent shape (boolean-mask indexing, ``nonzero``) made by ALTER's own code.

On a GPU each of these waits for the device (a host sync). The guard patches the Tensor methods
that convert or size by data, and raises only when the call comes from a file under ``alter/`` or
``alter_kernels/`` (the model's own code, e.g. ``transformers``' mask building, is not ours to
judge), except from the C++ launchers of ``alter_kernels/cpu`` (CPU tensors only: nothing there
can wait for a GPU). Used by the tests of the per-step path.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OURS = (str(ROOT / "alter") + "/", str(ROOT / "alter_kernels") + "/")
# the C++ launchers take CPU tensors only: what they convert is never on a GPU
CPU_ONLY = (str(ROOT / "alter_kernels" / "cpu") + "/",)


class HostSync(AssertionError):
    """A tensor-to-Python conversion (a host sync on GPU) made by ALTER's own code."""


def _caller_is_ours(allowed=()) -> bool:
    name = sys._getframe(2).f_code.co_filename
    return name.startswith(OURS) and not name.startswith(CPU_ONLY) and name not in allowed


def _guarded(name, original, when=None, allowed=()):
    def wrapper(self, *args, **kwargs):
        if _caller_is_ours(allowed) and (when is None or when(self, *args)):
            code = sys._getframe(1)
            raise HostSync(f"host sync: Tensor.{name} called from {code.f_code.co_filename}:{code.f_lineno}")
        return original(self, *args, **kwargs)
    return wrapper


def _bool_index(self, index, *rest):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@contextlib.contextmanager
def no_host_sync(allow=()):
    """Within the block, ALTER's code may not convert tensors to Python or index by a boolean mask,
    except in the files ``allow`` names (paths relative to the repository root)."""
    allowed = tuple(str(ROOT / a) for a in allow)
    patches = {name: _guarded(name, getattr(torch.Tensor, name), allowed=allowed)
               for name in ("__bool__", "item", "__int__", "__float__", "__index__", "tolist", "nonzero",
                            "masked_select", "unique")}
    patches["__getitem__"] = _guarded("__getitem__ (boolean mask)", torch.Tensor.__getitem__, _bool_index,
                                      allowed)
    saved = {name: getattr(torch.Tensor, name) for name in patches}
    try:
        for name, fn in patches.items():
            setattr(torch.Tensor, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)
