"""Plain PyTorch references: readable, unfused, the tests' ground truth (docs/method.md §1-§4)."""

from alter_kernels.reference.asym_lora import asym_lora_reference
from alter_kernels.reference.entropy import EntropyStats, linear_tsallis_entropy_reference, tsallis_entropy_reference
from alter_kernels.reference.hinge import hinge_forget_loss_reference, hinge_forget_rows_reference
from alter_kernels.reference.routing import route_reference

__all__ = [
    "EntropyStats",
    "asym_lora_reference",
    "hinge_forget_loss_reference",
    "hinge_forget_rows_reference",
    "linear_tsallis_entropy_reference",
    "route_reference",
    "tsallis_entropy_reference",
]
