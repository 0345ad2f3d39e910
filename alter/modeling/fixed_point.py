"""The answer tokens' routing as ``generate`` gives it, found by iteration (docs/method.md §3 and §4, "Cost").

In generation with ``entropy_source="adapted"``, token t after the prompt is routed by S_q of the adapted
model's logits at t-1, which depend on the routing of the tokens before it. Only ``H < theta`` enters the
gates, so a teacher-forced score finds generation's routing as a fixed point: route the answer tokens by
the current entropies, recompute them from the adapted logits, stop when no token changes side of theta.
The tokens up to the first change are exact after each pass (causality), so the iteration ends within
``answer length + 1`` passes (usually 2) and its fixed point is unique.

Causality also says what a pass after the first has to run. When the first token that changed side in
the batch is at column ``s``, every position before ``s`` keeps its routing, so its hidden states, keys,
values and logits are those of the previous pass. The next pass therefore continues from the previous
pass's KV cache cropped to ``s`` and runs only the columns ``s..T-1`` (the prompt never again); its
logits are the previous pass's up to ``s`` and the new ones after. The fixed point and the logits are
the same as with whole passes (to float tolerance: attention over a cache sums in another order);
``resume=False`` runs whole passes (tests/test_fixed_point.py compares the two).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

import alter_kernels
from alter.modeling.entropy import check_finite, shift_entropy
from alter.modeling.kv_cache import CACHE_KWARG, output_cache
from alter.modeling.routing_unit import prompt_mask

# forward keywords a resumed pass can carry as they are (anything else, e.g. position_ids or
# output_hidden_states, would need slicing or joining: such calls run whole passes)
_PASSABLE = {"return_dict", "use_cache"}


def _can_resume(kwargs: dict) -> bool:
    return set(kwargs) <= _PASSABLE and kwargs.get("use_cache", True) is not False


def answer_fixed_point(wrapper, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                       prompt_lengths, base_entropy: torch.Tensor, router_logits: Optional[torch.Tensor], *,
                       need_output: bool, start: Optional[torch.Tensor] = None, resume: bool = True,
                       **kwargs) -> Tuple[torch.Tensor, Optional[object]]:
    """``(entropy [B, T], output or None)``: the entropies ``generate`` gives the tokens after each prompt.

    ``wrapper`` is an :class:`alter.modeling.model.AlterModel`; ``base_entropy`` ``[B, T]`` (float32) the
    base pass's entropies (kept for the prompt tokens), ``router_logits`` ``[B, E]`` the question router's
    decision (None: the layers' own routers). With ``need_output`` the last pass's output is returned (its
    gates are the fixed point's; its logits ``[B, T, V]`` cover every position). ``start`` (``[B, T]``,
    e.g. the fixed point of the same rows under slightly older adapters) is where the iteration begins on
    the answer tokens instead of the base entropies: only the number of passes changes. When every expert
    the rows can use is zero the entropies change nothing: no pass, ``(base_entropy, None)``."""
    from alter.modeling.routed_generation import is_inert

    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    after_prompt = mask.bool() & ~prompt_mask(mask, prompt_lengths)
    if not bool(after_prompt.any()) or (router_logits is not None and is_inert(wrapper, router_logits)):
        return base_entropy, None
    theta = wrapper.state.theta
    q = wrapper.alter_config.q
    current = base_entropy if start is None else torch.where(after_prompt, start.to(base_entropy), base_entropy)
    resume = resume and _can_resume(kwargs)
    keep_cache = kwargs.get("use_cache") is True          # the caller asked for the cache: it gets the last one
    whole = dict(kwargs, use_cache=True) if resume else kwargs
    begin, out, logits = 0, None, None
    limit = int(after_prompt.sum(dim=1).max()) + 1
    for _ in range(limit):
        with torch.no_grad():
            cache = output_cache(out) if (out is not None and begin > 0) else None
            if cache is not None and getattr(cache, "is_croppable", True) and hasattr(cache, "crop"):
                cache.crop(begin - cache.get_seq_length())       # a negative count: the tokens to drop
                part = wrapper._routed_forward(input_ids[:, begin:], attention_mask, None, current[:, begin:], None,
                                               router_logits, **dict(whole, **{CACHE_KWARG: cache}))
                logits = torch.cat([logits[:, :begin], part.logits], dim=1)
                out = part
            else:
                out = wrapper._routed_forward(input_ids, attention_mask, None, current, None, router_logits, **whole)
                logits = out.logits
        adapted = shift_entropy(alter_kernels.tsallis_entropy(logits.detach(), q), mask)
        proposed = torch.where(after_prompt, check_finite(adapted, mask, "adapted-model entropy"), base_entropy)
        changed = ((proposed < theta) != (current < theta)) & after_prompt
        if not bool(changed.any()):
            if not need_output:
                return current, None
            out.logits = logits
            if resume and not keep_cache:
                out[CACHE_KWARG] = None
            return current, out
        begin = int(changed.any(dim=0).nonzero()[0]) if resume else 0
        current = proposed
    raise RuntimeError("the answer tokens' routing did not settle within answer length + 1 passes (a bug)")
