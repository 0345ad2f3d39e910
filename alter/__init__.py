"""ALTER: asymmetric LoRA with token-entropy-guided unlearning of LLMs (the method as built: docs/method.md).

Public API: :class:`AlterLinear` (drop-in layer), :class:`AlterConfig`, :func:`wrap`,
:class:`AlterModel`, :func:`load_adapter`, and ``alter.model_loading.load`` for the embedded model.
"""

from alter.config import AlterConfig
from alter.layer import AlterLinear
from alter.model import AlterModel, load_adapter, wrap

__all__ = ["AlterConfig", "AlterLinear", "AlterModel", "load_adapter", "wrap"]
__version__ = "0.1.0"
