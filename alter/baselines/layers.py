"""Finding a causal LM's transformer blocks and reading one block's output (for RMU).

``decoder_layers`` returns the ``nn.ModuleList`` of blocks of a Hugging Face causal LM (also
inside a PEFT wrapper). ``block_output`` runs the model only up to block ``L`` — a forward hook
keeps the block's output hidden state (the residual stream after block L, what the WMDP RMU code
hooks on ``model.model.layers[L]``) and stops the forward there, since nothing after it enters
the loss or its gradient.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The blocks of ``model`` (``model.model.layers`` for Llama-style models)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None) if decoder is not None else None
    if isinstance(layers, nn.ModuleList) and (n is None or len(layers) == n):
        return layers
    for _, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n is None or len(module) == n):
            return module
    raise ValueError(f"cannot find the transformer blocks of {type(base).__name__} "
                     "(no nn.ModuleList of config.num_hidden_layers modules)")


class _StopForward(Exception):
    """Raised by the hook once the wanted block has run."""


def block_output(model: nn.Module, layer: int, batch: dict, layers: Optional[nn.ModuleList] = None) -> torch.Tensor:
    """``[B, T, d]`` output hidden state of block ``layer`` on ``batch`` (gradient as the caller's mode)."""
    blocks = layers if layers is not None else decoder_layers(model)
    kept = []

    def hook(module, inputs, output):
        kept.append(output[0] if isinstance(output, (tuple, list)) else output)
        raise _StopForward

    handle = blocks[layer].register_forward_hook(hook)
    try:
        with contextlib.suppress(_StopForward):
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    finally:
        handle.remove()
    if not kept:
        raise RuntimeError(f"block {layer} did not run during the forward pass")
    return kept[0]
