"""Scoring the same rows again and again as generation would, without redoing what does not change.

``AlterModel.forward(..., prompt_lengths=...)`` scores answers exactly as ``generate`` produces them
(docs/method.md §3): one base pass gives the question router's decision and the base entropies, then
the answer tokens' routing is iterated to its fixed point (usually 2 adapted passes). Phase II's stop
check (:mod:`alter.train.stopping.level`) scores one fixed sample of forget answers every few steps while
only the forget experts move. The base pass of those rows never changes (the base weights are frozen), and
the previous check's fixed point is a close guess of the next one. :func:`scoring_pass` takes both from the
last call on the same rows (its ``cache``). The fixed point is unique, so the logits are those of the full
forward (to float tolerance); only the passes are fewer: one adapted pass when no answer token changed side
of theta since the last check (docs/method.md §4, "Cost").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch


@dataclass
class ScoringCache:
    """What :func:`scoring_pass` keeps of a batch of rows: the base pass's entropies ``[B, T]`` and router
    logits ``[B, E]`` (None without a fitted question router), and the last fixed point ``[B, T]``."""

    base_entropy: torch.Tensor
    router_logits: Optional[torch.Tensor]
    fixed_point: Optional[torch.Tensor] = None


def scoring_pass(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lengths: torch.Tensor,
                 cache: Optional[ScoringCache] = None) -> Tuple[torch.Tensor, ScoringCache]:
    """``(logits [B, T, V], cache)``: the logits ``model(input_ids, attention_mask, prompt_lengths=...)`` gives
    (no grad), and what the next call on the *same* rows (same ids, mask and prompt lengths, the base model
    unchanged) may start from. ``model`` is an :class:`alter.modeling.model.AlterModel` with its adapters on."""
    if not model.state.enabled:
        raise ValueError("scoring_pass scores the adapted model: call it outside disable_adapters()")
    config = model.alter_config
    with torch.no_grad():
        if cache is None:
            router = model.question_router
            if router is not None and router.fitted:
                base_entropy, router_logits = model.route_questions(input_ids, attention_mask, prompt_lengths)
            else:
                base_entropy, router_logits = model.token_entropy(input_ids, attention_mask), None
            if not config.token_entropy:          # AsymLoRA ablation: every token counts as low entropy
                base_entropy = torch.zeros(input_ids.shape, device=input_ids.device)
            cache = ScoringCache(base_entropy, router_logits)
        entropy, out = cache.base_entropy, None
        if config.token_entropy and config.entropy_source == "adapted":
            entropy, out = model._answer_entropy(input_ids, attention_mask, prompt_lengths, cache.base_entropy,
                                                 cache.router_logits, need_output=True, start=cache.fixed_point)
            cache.fixed_point = entropy
        if out is None:
            out = model._routed_forward(input_ids, attention_mask, None, entropy, None, cache.router_logits)
    return out.logits, cache
