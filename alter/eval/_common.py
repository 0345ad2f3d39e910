"""Small helpers shared by the evaluation modules (no metric definitions live here)."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, List, Optional, Sequence

import torch


def field(obj: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a schema object (``QAExample`` / ``MCExample``) or from a plain mapping.

    Evaluation is written against the attributes of ``alter.data.schema`` (question, answer,
    paraphrased_answer, perturbed_answers; question, choices, answer, subject) but only reads
    them, so any object or dict with those names works.
    """
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def model_device(model) -> torch.device:
    """The device the model's inputs must be on: ``model.device`` when it exists (HF / PEFT),
    else the device of its first parameter, else CPU."""
    dev = getattr(model, "device", None)
    if isinstance(dev, (torch.device, str)):
        return torch.device(dev)
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """``model.eval()`` and ``torch.no_grad()`` for the block; the previous train/eval state is restored."""
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def logits_of(output) -> torch.Tensor:
    """The ``[B, T, V]`` logits of a causal-LM forward (an object with ``.logits`` or a tuple)."""
    logits = getattr(output, "logits", None)
    if logits is None:
        if isinstance(output, (tuple, list)):
            logits = output[0]
        elif isinstance(output, torch.Tensor):
            logits = output
        else:
            raise TypeError(f"model output of type {type(output).__name__} has no .logits")
    return logits


def forward_with_prompt(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lengths: Sequence[int]):
    """``model(input_ids, attention_mask)``, telling a model that routes by its prompt (one with
    ``accepts_prompt_lengths``, e.g. ``alter.AlterModel``) where each row's prompt ends, so that scoring
    uses the routing generation would; other models never see the argument."""
    if getattr(model, "accepts_prompt_lengths", False):
        lengths = torch.as_tensor(list(prompt_lengths), dtype=torch.long, device=input_ids.device)
        return model(input_ids=input_ids, attention_mask=attention_mask, prompt_lengths=lengths)
    return model(input_ids=input_ids, attention_mask=attention_mask)


def batches(order: Sequence[int], batch_size: int) -> List[List[int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def as_float(x: Any) -> Optional[float]:
    """A JSON-safe float: numpy / torch scalars become ``float``; ``None`` and NaN become ``None``."""
    if x is None:
        return None
    v = float(x)
    if math.isnan(v):
        return None
    return v


def mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the values that are not ``None``; ``None`` when there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return float(sum(vals) / len(vals))
