"""ALTER: asymmetric LoRA with token-entropy-guided unlearning of LLMs (the method as built: docs/method.md).

Public API (reference with examples: docs/api.md): :class:`AlterLinear` (drop-in layer),
:class:`AlterConfig`, :func:`wrap`, :class:`AlterModel` (PEFT's names: ``save_pretrained``,
``AlterModel.from_pretrained``, ``push_to_hub``, ``unload``, ``get_base_model``,
``print_trainable_parameters``), :func:`load_adapter` (``AlterModel.from_pretrained``'s older name),
and ``alter.modeling.model_loading.load`` for the embedded model.
"""

from alter.config import AlterConfig
from alter.modeling.layer import AlterLinear
from alter.modeling.model import AdapterUnloadedError, AlterModel, load_adapter, wrap

__all__ = ["AdapterUnloadedError", "AlterConfig", "AlterLinear", "AlterModel", "load_adapter", "wrap"]
__version__ = "0.1.0"
