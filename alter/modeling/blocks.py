"""A causal LM's transformer blocks, and reading one block's output through a forward hook.

``decoder_layers`` returns the ``nn.ModuleList`` of blocks of a Hugging Face causal LM (also
inside a PEFT wrapper). ``capture_block_output`` hooks one block and keeps its output hidden state
``[B, T, d]`` (the residual stream after the block: what the question router reads, and what the
WMDP RMU code hooks on ``model.model.layers[L]``); with ``stop`` it ends the forward there (the
hook raises :class:`BlockReached`), since nothing after that block is needed. ``block_output``
runs a model up to block ``L`` and returns that output, with gradient (RMU's loss).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The blocks of ``model`` (``model.model.layers`` for Llama-style models): the decoder's ``layers``,
    else the first ``nn.ModuleList`` of ``config.num_hidden_layers`` modules."""
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


class BlockReached(Exception):
    """Raised by :func:`capture_block_output` with ``stop=True`` once the wanted block has run."""


@contextlib.contextmanager
def capture_block_output(model: nn.Module, layer: int, sink: List[torch.Tensor], *, stop: bool = False,
                         detach: bool = True, layers: Optional[nn.ModuleList] = None) -> Iterator[None]:
    """Append the output hidden states ``[B, T, d]`` of block ``layer`` to ``sink`` during the block;
    with ``stop`` the forward is cut there (:class:`BlockReached`, which the caller catches); with
    ``detach=False`` the kept tensor carries its gradient. ``layers``: the blocks, when already found."""
    block = (layers if layers is not None else decoder_layers(model))[layer]

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        sink.append(hidden.detach() if detach else hidden)
        if stop:
            raise BlockReached

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def block_output(model: nn.Module, layer: int, batch: dict, layers: Optional[nn.ModuleList] = None) -> torch.Tensor:
    """``[B, T, d]`` output hidden state of block ``layer`` on ``batch`` (gradient as the caller's mode)."""
    kept: List[torch.Tensor] = []
    with contextlib.suppress(BlockReached), \
            capture_block_output(model, layer, kept, stop=True, detach=False, layers=layers):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    if not kept:
        raise RuntimeError(f"block {layer} did not run during the forward pass")
    return kept[0]
