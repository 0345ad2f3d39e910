"""Generation with entropy-dispatched experts, KV cache or not (docs/method.md §2 and §3).

Token t is routed by the entropy of the distribution that produced it. For the prompt that is
one base pass (adapters off). For a generated token it is free: the forward of step t-1
already computed its logits, so a forward hook reduces the last position's logits with the
one-pass entropy kernel and keeps the value; a pre-hook hands the right entropies to every
adapted layer for the tokens of the next forward.

- ``entropy_source="adapted"`` (default): the adapted model's own logits.
- ``entropy_source="base"``: the base model runs alongside with its own KV cache — one extra
  forward of the new token per step — and its logits give the entropy, as in training.

With the KV cache each forward sees only the new token; without it, every forward sees the
whole sequence and takes the stored entropies of all positions, so greedy decoding gives the
same tokens either way. Beam search is not supported (it reorders rows between steps).

When the question router sends the whole batch where every expert is zero (retain questions on an
untrained ``B_R``), the adapter is inert: generation continues from the base pass's KV cache with
the adapter off, so the prompt runs once.
"""

from __future__ import annotations

import contextlib
from typing import List, Optional

import torch

import alter_kernels
from alter.modeling.blocks import capture_block_output
from alter.modeling.entropy import check_finite, positions_from_mask, shift_entropy
from alter.modeling.kv_cache import CACHE_KWARG, given_cache, output_cache, without_last_token


class _EntropySession:
    """The entropies of the prompt and of every token generated so far, for one generate() call.

    ``calls`` forwards have completed, so the sequence fed so far ends at position
    ``P + calls - 1``; ``history[j]`` is the entropy of generated token j (absolute position P + j).
    """

    def __init__(self, wrapper, prompt_entropy: torch.Tensor, base_cache=None,
                 first_entropy: Optional[torch.Tensor] = None):
        self.wrapper = wrapper
        self.prompt_entropy = prompt_entropy            # [B, P], H of each prompt token
        self.prompt_length = prompt_entropy.shape[1]
        self.history: List[torch.Tensor] = [] if first_entropy is None else [first_entropy]
        self.base_cache = base_cache
        self.calls = 0
        self.rows = prompt_entropy.shape[0]
        self.expanded = False

    def _expand(self, rows: int) -> None:
        if rows == self.rows:
            return
        if self.expanded or rows % self.rows:
            raise ValueError(f"generation batch changed from {self.rows} to {rows} rows; ALTER supports greedy or "
                             "sampled decoding (num_beams=1), with num_return_sequences")
        if self.base_cache is not None:
            raise ValueError("entropy_source='base' does not support num_return_sequences > 1")
        k = rows // self.rows
        self.prompt_entropy = self.prompt_entropy.repeat_interleave(k, dim=0)
        self.history = [h.repeat_interleave(k, dim=0) for h in self.history]
        self.rows, self.expanded = rows, True

    def entropies_for(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` entropies of the L tokens this forward is fed (the last L of the sequence)."""
        rows, length = input_ids.shape
        self._expand(rows)
        end = self.prompt_length + self.calls
        start = end - length
        if start < 0 or len(self.history) < end - self.prompt_length:
            raise ValueError(f"generation fed {length} tokens ending at position {end}, which ALTER's entropy "
                             "bookkeeping does not know; use model.generate() with num_beams=1")
        parts = []
        if start < self.prompt_length:
            parts.append(self.prompt_entropy[:, start:min(end, self.prompt_length)])
        generated = self.history[max(start - self.prompt_length, 0):end - self.prompt_length]
        if generated:
            parts.append(torch.stack(generated, dim=1))
        return torch.cat(parts, dim=1)

    def record(self, input_ids: torch.Tensor, logits: torch.Tensor, call_kwargs: dict) -> None:
        """After a forward: the entropy of the token it is about to produce."""
        first = self.calls == 0
        self.calls += 1
        if self.base_cache is None:
            last = logits[:, -1, :]
        elif first:
            return               # the base pass over the prompt already gave this entropy
        else:
            last = self._base_logits(input_ids, call_kwargs)
        self.history.append(check_finite(alter_kernels.tsallis_entropy(last.detach(), self.wrapper.alter_config.q),
                                         what="entropy of the generated token"))

    def _base_logits(self, input_ids: torch.Tensor, call_kwargs: dict) -> torch.Tensor:
        wrapper = self.wrapper
        cached = input_ids.shape[1] < self.prompt_length + self.calls - 1     # calls already counts this one
        kwargs = {"attention_mask": call_kwargs.get("attention_mask")}
        if cached:
            kwargs.update({CACHE_KWARG: self.base_cache, "use_cache": True})
            for key in ("position_ids", "cache_position"):
                if call_kwargs.get(key) is not None:
                    kwargs[key] = call_kwargs[key]
        else:
            kwargs["use_cache"] = False
            if kwargs["attention_mask"] is not None:
                kwargs["position_ids"] = positions_from_mask(kwargs["attention_mask"])
        with torch.no_grad(), wrapper.disable_adapters():
            out = wrapper.model(input_ids=input_ids, **kwargs)
        return out.logits[:, -1, :]


def is_inert(wrapper, router_logits: torch.Tensor) -> bool:
    """True when no adapted layer can add anything to these questions, whatever each token's entropy.

    At inference a token's gates depend only on its sequence's router logits and on whether its
    entropy is below theta, so two probe tokens per row (entropy 0 and +inf) show every expert the
    generation can use; the adapter is inert when each of them is exactly zero in every layer (a
    retain-routed question on a retain expert that phase I never trained: docs/method.md §3)."""
    rows = router_logits.shape[0]
    probe_entropy = torch.tensor([0.0, float("inf")], device=router_logits.device).repeat(rows)
    u = router_logits.float().repeat_interleave(2, dim=0)
    used_by_key = {}
    for layer in wrapper.adapter_layers().values():
        key = layer._plan_key()
        if key not in used_by_key:
            if layer.num_experts != u.shape[1]:
                return False
            gates = alter_kernels.route(probe_entropy, u, layer._theta(), tau_high=layer.tau_high,
                                        top_k=layer.top_k, retain_index=0, mode="infer")
            used_by_key[key] = gates.ne(0).any(0).tolist()
        if not layer.is_inert(used_by_key[key]):
            return False
    return True


def _can_reuse_prompt_cache(wrapper, kwargs) -> bool:
    """Whether generate() may start from the base pass's KV cache: a plain cached call, one sequence per prompt."""
    if given_cache(kwargs) is not None or kwargs.get("use_cache") is False:
        return False
    gen_cfg = kwargs.get("generation_config") or getattr(wrapper.model, "generation_config", None)
    sequences = kwargs.get("num_return_sequences", getattr(gen_cfg, "num_return_sequences", 1)) or 1
    return int(sequences) == 1 and getattr(gen_cfg, "use_cache", True) is not False


def _generate_from_base_cache(wrapper, input_ids, attention_mask, cache, **kwargs):
    """Generation with the adapter off, continuing from the prompt's base pass: its KV cache holds the
    prompt, so the prompt is not run a second time (only its last token, for the first new logits)."""
    with wrapper.disable_adapters():
        return wrapper.model.generate(input_ids=input_ids, attention_mask=attention_mask, **{CACHE_KWARG: cache},
                                      **kwargs)


def _prompt_routing(wrapper, input_ids, attention_mask, kwargs):
    """The prompt's base pass: ``(hidden, logits, router logits [B, E] or None, KV cache or None)``.

    The cache is kept only when it can serve the generation (the adapter may turn out inert)."""
    keep = _can_reuse_prompt_cache(wrapper, kwargs) and wrapper.question_router is not None
    hidden, logits, features, cache = wrapper.base_prompt_pass(input_ids, attention_mask, use_cache=keep)
    router_logits = None if features is None else wrapper.question_router_logits(features, input_ids, attention_mask)
    return hidden, logits, router_logits, cache


def _generate_all_low(wrapper, input_ids, attention_mask, **kwargs):
    """The AsymLoRA ablation: every token is low entropy (top-1 expert), no entropy to track."""
    _, _, router_logits, cache = _prompt_routing(wrapper, input_ids, attention_mask, kwargs)
    if router_logits is not None and cache is not None and is_inert(wrapper, router_logits):
        cache = without_last_token(cache)
        if cache is not None:
            return _generate_from_base_cache(wrapper, input_ids, attention_mask, cache, **kwargs)
    del cache

    def pre_hook(module, args, call_kwargs):
        ids = call_kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and wrapper.state.enabled:
            wrapper.state.entropy = torch.zeros(ids.shape, device=ids.device)
        return None

    handle = wrapper.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with wrapper.state.scope(domain=None, token_mask=None, entropy=None, router_logits=router_logits,
                                 inference_entries={}):
            return wrapper.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    finally:
        handle.remove()


def _num_beams(wrapper, kwargs) -> int:
    if "num_beams" in kwargs:
        return int(kwargs["num_beams"])
    gen_cfg = kwargs.get("generation_config") or getattr(wrapper.model, "generation_config", None)
    return int(getattr(gen_cfg, "num_beams", 1) or 1)


def generate_with_entropy(wrapper, input_ids: Optional[torch.Tensor], attention_mask: Optional[torch.Tensor] = None,
                          **kwargs):
    if input_ids is None:
        raise ValueError("AlterModel.generate needs input_ids (a [B, T] tensor of prompt token ids)")
    if not wrapper.state.enabled:
        return wrapper.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    if wrapper.state.theta is None:
        raise ValueError("this AlterModel has no entropy threshold yet: train it, load an adapter, or call set_theta()")
    if _num_beams(wrapper, kwargs) != 1:
        raise ValueError("ALTER generation supports num_beams=1 only (greedy or sampling): beam search reorders "
                         "rows between steps, which would mix up the per-token entropies")
    if wrapper._generation is not None:
        raise RuntimeError("AlterModel.generate is not re-entrant")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not wrapper.alter_config.token_entropy:
        return _generate_all_low(wrapper, input_ids, attention_mask, **kwargs)
    source = wrapper.alter_config.entropy_source
    use_base = source == "base"
    router_logits = None
    if use_base:      # the base model runs alongside: its prompt pass keeps a KV cache and full logits
        features = []
        router = wrapper.question_router
        with contextlib.ExitStack() as stack:
            if router is not None:
                stack.enter_context(capture_block_output(wrapper.model, router.layer, features))
            out = wrapper.base_forward(input_ids, attention_mask, use_cache=True)
        if features:
            router_logits = wrapper.question_router_logits(features[-1], input_ids, attention_mask)
        per_position = check_finite(alter_kernels.tsallis_entropy(out.logits.detach(), wrapper.alter_config.q),
                                    attention_mask, "base-model entropy of the prompt")
        base_cache = output_cache(out)
        del out
    else:             # one chunked base pass (no [B, P, V] logits) gives the entropies and the router's features
        hidden, logits, router_logits, cache = _prompt_routing(wrapper, input_ids, attention_mask, kwargs)
        if router_logits is not None and cache is not None and is_inert(wrapper, router_logits):
            # every expert these questions can use is zero: the answer is the base model's, and the
            # base pass already holds the prompt's KV cache (no second prompt pass, no entropies)
            cache = without_last_token(cache)
            if cache is not None:
                return _generate_from_base_cache(wrapper, input_ids, attention_mask, cache, **kwargs)
        per_position = wrapper._entropy_of(hidden, logits, attention_mask)
        del hidden, logits, cache
        base_cache = None
    prompt_entropy = shift_entropy(per_position, attention_mask)
    # with the base source the base pass already knows the first generated token's entropy;
    # with the adapted source the prefill's own last logits give it (recorded by the hook)
    session = _EntropySession(wrapper, prompt_entropy, base_cache=base_cache,
                              first_entropy=per_position[:, -1] if use_base else None)

    def pre_hook(module, args, call_kwargs):
        ids = call_kwargs.get("input_ids", args[0] if args else None)
        if ids is None or not wrapper.state.enabled:
            return None
        wrapper.state.entropy = session.entropies_for(ids)
        return None

    def post_hook(module, args, call_kwargs, output):
        ids = call_kwargs.get("input_ids", args[0] if args else None)
        if ids is None or not wrapper.state.enabled:
            return None
        wrapper.state.entropy = None
        session.record(ids, output.logits, call_kwargs)
        return None

    handles = [wrapper.model.register_forward_pre_hook(pre_hook, with_kwargs=True),
               wrapper.model.register_forward_hook(post_hook, with_kwargs=True)]
    wrapper._generation = session
    try:
        with wrapper.state.scope(domain=None, token_mask=None, router_logits=router_logits, inference_entries={}):
            return wrapper.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    finally:
        for h in handles:
            h.remove()
        wrapper._generation = None
        wrapper.state.entropy = None
