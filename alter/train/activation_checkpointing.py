"""Activation checkpointing of a transformers model's blocks while ALTER trains (``gradient_checkpointing``)."""

from __future__ import annotations

import contextlib
import logging

from torch import nn

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def activation_checkpointing(base: nn.Module, enabled: bool):
    """Recompute each block's activations during backward inside the ``with`` block, when ``enabled``
    (non-reentrant: the frozen base's inputs need no grad for the adapters to get theirs). A model that
    does not support it trains without it, with a warning (it is ALTER's default, not always the user's
    choice)."""
    if not enabled:
        yield
        return
    if not getattr(base, "supports_gradient_checkpointing", False):
        logger.warning("gradient_checkpointing=True, but %s does not support it: training without it (more "
                       "memory)", type(base).__name__)
        yield
        return
    if _is_on(base):                    # the user switched it on: theirs to switch off
        yield
        return
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


def _is_on(base: nn.Module) -> bool:
    flag = getattr(base, "is_activation_checkpointing", None)
    if flag is None:
        flag = getattr(base, "is_gradient_checkpointing", False)
    return bool(flag)
