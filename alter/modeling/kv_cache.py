"""The KV-cache names of the installed ``transformers`` (``past_key_values`` before 5.x, ``cache`` after).

transformers 5 renamed the cache argument and output field to ``cache`` and warns on the old name;
ALTER supports both (``transformers>=4.56``), so it reads and passes caches through these helpers."""

from __future__ import annotations

import dataclasses

from transformers.modeling_outputs import BaseModelOutputWithPast

CACHE_KWARG = ("cache" if "cache" in {f.name for f in dataclasses.fields(BaseModelOutputWithPast)}
               else "past_key_values")


def output_cache(output):
    """The KV cache a model output holds (None when it holds none)."""
    return output.get(CACHE_KWARG)


def given_cache(kwargs: dict):
    """A cache the caller passed under either name (None when none)."""
    return kwargs.get("cache", kwargs.get("past_key_values"))


def without_last_token(cache):
    """Drop the cache's last position in place (so generate() computes the prompt's last logits); None when
    the cache cannot be cropped (sliding-window and other fixed layouts)."""
    if cache is None or not hasattr(cache, "crop") or not getattr(cache, "is_croppable", True):
        return None
    cache.crop(-1)
    return cache
