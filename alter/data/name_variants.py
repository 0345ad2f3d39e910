"""Forget prompts with their names altered, for the question router's banks (docs/method.md §3, "Names as
users type them").

The router recognises a forget question by the tokens of the name it asks about. A user may type the
surname alone or misspell the name; those tokens differ from the training prompts' and can fall below
the threshold while the model behind the router still knows whom they mean. :func:`name_variants` gives,
for one question, the same question with each name (a run of two or more capitalised words; a word that starts
questions, "Can" or "What", is not part of it) written as its last word alone, with one inner letter of the
last word dropped, and with one doubled. The letter positions are drawn from ``seed`` (a swap of two
letters, the misspelling the TOFU benchmark's robustness table asks with, is not among them).

For the router's name match (:mod:`alter.modeling.name_match`): :func:`common_name`, the name one person's
questions share, and :func:`misspellings`, every typo of a word one edit away (swapped, dropped or doubled
letters: the benchmark's swap is among them, so its misspelt row measures a typo of a kind the match knows).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Iterable, List, Optional, Tuple

_RUN = re.compile(r"\b[A-Z][\w\-]*(?:\s+[A-Z][\w\-]*)+")


# capitalised words that start a question rather than a name ("Can Jaime Vasquez ...", "Has Carmen ...")
STARTERS = frozenset("""What Who Whom Whose Where When Why How Which Can Could Does Do Did Is Are Was Were Has Have
Had Would Will Should Shall May Might Must In On At For From Of To By With As If Please Tell Name Describe List
Give Explain The A An This That These Those""".split())


def name_runs(question: str) -> List[Tuple[int, int]]:
    """``(start, end)`` of each name in ``question``: a run of two or more capitalised words, a first word
    that starts questions ("Can", "What", "The") left out."""
    out = []
    for m in _RUN.finditer(question):
        start, words = m.start(), m.group(0).split()
        if words[0] in STARTERS:
            if len(words) < 3:
                continue
            start = question.index(words[1], start + len(words[0]))
        out.append((start, m.end()))
    return out


def _drop(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    return word[:i] + word[i + 1:]


def _double(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    return word[:i + 1] + word[i] + word[i + 1:]


def name_variants(question: str, seed: int = 0) -> List[str]:
    """The question with each of its names as the surname alone, with a letter dropped and with a letter
    doubled (a last word of at least 4 letters); ``[]`` for a question without a name."""
    rng = random.Random(f"{seed}:{question}")
    out: List[str] = []
    for start, end in name_runs(question):
        words = question[start:end].split()
        last = words[-1]
        head, tail = question[:start], question[end:]
        out.append(head + last + tail)
        if len(last) >= 4:
            for alter_word in (_drop, _double):
                out.append(head + " ".join(words[:-1] + [alter_word(last, rng)]) + tail)
    return [v for v in dict.fromkeys(out) if v != question]


def common_name(questions: Iterable[str]) -> Optional[str]:
    """The name one person's questions share: of the capitalised runs of 2+ words (and their sub-runs of 2+
    words, a possessive "'s" dropped), the one the most questions hold, the longest among ties; None unless at
    least 2 questions and a third of them hold it (TOFU: "Jaime Vasquez" from "Where was Jaime Vasquez born?")."""
    questions = [str(q) for q in questions]
    counts: Counter = Counter()
    for q in questions:
        for run in set(_RUN.findall(q.replace("'s", ""))):
            words = run.split()
            for i in range(len(words)):                     # every sub-run of 2+ words counts once a question
                for j in range(i + 2, len(words) + 1):
                    counts[" ".join(words[i:j])] += 1
    if not counts:
        return None
    name, n = max(counts.items(), key=lambda kv: (kv[1], len(kv[0])))
    return name if n >= max(2, len(questions) // 3) else None


def misspellings(word: str) -> List[str]:
    """``word`` one typo away, every way of three kinds: two adjacent letters swapped, a letter dropped, a
    letter doubled (never the first letter: a name is looked for by its start), in a fixed order; ``[]`` for a
    word shorter than 5 letters, whose typos would be other words too often."""
    if len(word) < 5:
        return []
    out = [word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(1, len(word) - 1)]
    out += [word[:i] + word[i + 1:] for i in range(1, len(word))]
    out += [word[:i + 1] + word[i] + word[i + 1:] for i in range(1, len(word))]
    return [w for w in dict.fromkeys(out) if w != word]
