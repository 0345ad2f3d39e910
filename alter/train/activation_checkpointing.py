"""Activation checkpointing of a transformers model's blocks while ALTER trains (``gradient_checkpointing``)."""

from __future__ import annotations

import contextlib

from torch import nn


@contextlib.contextmanager
def activation_checkpointing(base: nn.Module, enabled: bool):
    """Recompute each block's activations during backward inside the ``with`` block, when ``enabled``
    (non-reentrant: the frozen base's inputs need no grad for the adapters to get theirs)."""
    if not enabled:
        yield
        return
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ValueError(f"gradient_checkpointing=True, but {type(base).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):         # transformers >= 5.x names it so
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    try:
        yield
    finally:
        if hasattr(base, "activation_checkpointing_disable"):
            base.activation_checkpointing_disable()
        else:
            base.gradient_checkpointing_disable()
