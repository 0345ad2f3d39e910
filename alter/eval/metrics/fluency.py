"""FLUENCY PROXY — not the paper's metric.

The ALTER paper scores fluency with GPT-4o as a judge (1–5, "average of 5 responses", reported as
Flu-mean and Flu-var). We cannot call GPT-4o offline, so this module defines a *measurable proxy*
on the same 1–5 range, built from two things a judge penalises and a model can measure:

1. **Base-model perplexity** of the generated answer, given its question prompt (scored by the
   *original, un-unlearned* model, so every method is judged by the same reader). Perplexity is
   mapped to ``q_ppl = clip(1 - ln(ppl) / ln(V), 0, 1)`` where ``V`` is the vocabulary size:
   ``ppl = 1`` (fully predictable) gives 1, ``ppl = V`` (as surprising as uniform random tokens)
   gives 0. ``ln(V)`` is the natural anchor because a uniform guess over the vocabulary has
   exactly that cross-entropy; no tuned constant is involved.
2. **n-gram repetition rate** ``rep_n = 1 - (distinct n-grams) / (n-grams)`` over lower-cased word
   and punctuation tokens (``seq-rep-n`` of Welleck et al. 2020, "Neural text generation with
   unlikelihood training"), default ``n = 3``. Degenerate unlearned models loop ("the the the"),
   and a loop can have *low* perplexity, so perplexity alone would reward it.

Score: ``1 + 4 * q_ppl * (1 - rep_n)`` in [1, 5]. An empty answer scores 1 (the minimum), as a
judge would rate a model that says nothing. Report the mean and the population variance over
answers (``score_summary``), mirroring the paper's Flu-mean / Flu-var. Numbers are comparable
between methods scored by the same base model and tokenizer, not with the paper's GPT-4o numbers.
"""

from __future__ import annotations

import math
import re
from typing import Dict, Optional, Sequence

import numpy as np

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def ngram_repetition_rate(text: str, n: int = 3) -> float:
    """``1 - distinct / total`` over the word n-grams of ``text``; 0 when it has fewer than ``n`` words."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    toks = _TOKEN_RE.findall(text.lower())
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0.0
    return float(1.0 - len(set(grams)) / len(grams))


def fluency_proxy_score(perplexity: Optional[float], repetition: float, vocab_size: int) -> float:
    """The 1–5 proxy score of one answer from its base-model perplexity and repetition rate
    (see the module docstring). ``perplexity=None`` means an empty answer and scores 1."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    if not 0.0 <= repetition <= 1.0:
        raise ValueError(f"repetition must be in [0, 1], got {repetition}")
    if perplexity is None:
        return 1.0
    if perplexity < 1.0 - 1e-9:
        raise ValueError(f"perplexity must be >= 1, got {perplexity}")
    q_ppl = min(1.0, max(0.0, 1.0 - math.log(max(perplexity, 1.0)) / math.log(vocab_size)))
    return float(1.0 + 4.0 * q_ppl * (1.0 - repetition))


def score_summary(scores: Sequence[float]) -> Dict[str, Optional[float]]:
    """``mean`` and population ``var`` (ddof=0) of per-answer scores, as Flu-mean / Flu-var."""
    s = np.asarray(list(scores), dtype=np.float64)
    if s.size == 0:
        return {"mean": None, "var": None}
    return {"mean": float(s.mean()), "var": float(s.var())}
