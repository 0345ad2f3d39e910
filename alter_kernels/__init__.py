"""ALTER's fused kernels: Tsallis entropy, the gated shared-A / multi-B LoRA, routing, hinge loss.

Every public function validates its input, then runs the Triton kernel (CUDA tensors), the
C++ kernel of ``csrc/`` (CPU tensors, where one exists) or plain PyTorch; see
:mod:`alter_kernels._backend` for how to force one. The PyTorch references in
:mod:`alter_kernels.reference` define what each computes (docs/method.md). Each op's checks and
dispatch live in one module of :mod:`alter_kernels.ops`; this package only re-exports them.
"""

from __future__ import annotations

from alter_kernels._backend import BACKENDS, cpp_available, requested_backend, triton_available, use_backend
from alter_kernels.ops.asym_lora import alter_linear_inference, alter_linear_inference_fn, asym_lora, fused_alter_linear
from alter_kernels.ops.entropy import linear_tsallis_entropy, tsallis_entropy
from alter_kernels.ops.hinge import hinge_forget_loss, hinge_forget_rows
from alter_kernels.ops.routing import ROUTE_MODES, route
from alter_kernels.reference import (
    EntropyStats,
    asym_lora_reference,
    hinge_forget_loss_reference,
    hinge_forget_rows_reference,
    route_reference,
    tsallis_entropy_reference,
)

__all__ = [
    "BACKENDS",
    "EntropyStats",
    "ROUTE_MODES",
    "alter_linear_inference",
    "alter_linear_inference_fn",
    "asym_lora",
    "asym_lora_reference",
    "cpp_available",
    "fused_alter_linear",
    "hinge_forget_loss",
    "hinge_forget_loss_reference",
    "hinge_forget_rows",
    "hinge_forget_rows_reference",
    "linear_tsallis_entropy",
    "requested_backend",
    "route",
    "route_reference",
    "triton_available",
    "tsallis_entropy",
    "tsallis_entropy_reference",
    "use_backend",
]
