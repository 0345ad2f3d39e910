"""Degenerate answers: loops and stray scripts, counted answer by answer (docs/evaluation.md).

An unlearned model that answers a forget question with "the genre of leadership in the leadership in the
leadership ..." or with Hangul fragments after an English sentence has forgotten, but in a way a user sees
at once (and a membership attacker too: the forgotten questions are the ones answered in garbage). The
fluency proxy (:mod:`alter.eval.metrics.fluency`) averages such answers with the fluent ones and moves little;
this metric counts them. An answer is *degenerate* when either holds:

- **loop**: its word 3-gram repetition rate (``1 - distinct / total``, :func:`ngram_repetition_rate`) is at
  least ``REPETITION_THRESHOLD`` (0.15). On the TOFU benchmark the taught and never-taught models' answers
  (804 per model and split: every robustness variant, forget and retain) with the 40 true answers pass that
  line in at most 1.1% of cases;
- **stray script**: it holds a letter of a writing system (the first word of the letter's Unicode name:
  LATIN, HANGUL, CJK, CYRILLIC, ...) that neither its prompt nor its true answer holds.

Pure Python on strings; ``context`` is the text the answer may legitimately draw letters from.
"""

from __future__ import annotations

import unicodedata
from typing import Dict, Optional, Sequence, Set

from alter.eval.metrics.fluency import ngram_repetition_rate

REPETITION_THRESHOLD = 0.15


def scripts(text: str) -> Set[str]:
    """The writing systems of the letters of ``text`` (the first word of each letter's Unicode name)."""
    out = set()
    for ch in set(text):
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            if name:
                out.add(name.split()[0])
    return out


def is_loop(text: str, threshold: float = REPETITION_THRESHOLD) -> bool:
    """Whether ``text``'s word 3-gram repetition rate is at least ``threshold``."""
    return ngram_repetition_rate(text, 3) >= threshold


def stray_scripts(text: str, context: str) -> Set[str]:
    """The writing systems in ``text`` that ``context`` does not use."""
    return scripts(text) - scripts(context)


def is_degenerate(text: str, context: str = "", threshold: float = REPETITION_THRESHOLD) -> bool:
    """A loop or a stray script (module docstring)."""
    return is_loop(text, threshold) or bool(stray_scripts(text, context))


def degenerate_share(generations: Sequence[str], contexts: Optional[Sequence[str]] = None,
                     threshold: float = REPETITION_THRESHOLD) -> Dict[str, Optional[float]]:
    """``{"degenerate", "loop", "stray_script"}``: the share of ``generations`` of each kind (None for none).
    ``contexts[i]`` is what answer ``i`` may draw letters from (its prompt and true answer)."""
    generations = [str(g) for g in generations]
    if contexts is None:
        contexts = [""] * len(generations)
    if len(contexts) != len(generations):
        raise ValueError(f"degenerate_share: {len(generations)} generations but {len(contexts)} contexts")
    if not generations:
        return {"degenerate": None, "loop": None, "stray_script": None}
    loops = [is_loop(g, threshold) for g in generations]
    stray = [bool(stray_scripts(g, c)) for g, c in zip(generations, contexts)]
    n = len(generations)
    return {"degenerate": sum(a or b for a, b in zip(loops, stray)) / n, "loop": sum(loops) / n,
            "stray_script": sum(stray) / n}
