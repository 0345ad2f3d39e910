"""Routing a forget question asked in its own wording, whatever is around it (docs/method.md §3, "Forget
questions in their own wording").

The question router's evidence is how much better a unit's token features match a forget bank than the retain
bank. A forget question that names no one ("What is the full name of the author born in Baku, Azerbaijan on
April 13, 1970?") shares its template with retain questions, and its few specific tokens (a city, a date) match
retain features nearly as well: on the TOFU tune split 4 of 100 forget questions, asked exactly as trained,
stayed below the threshold, and the taught model then answered them (the name it was asked to forget).

:class:`QuestionMatcher` adds lexical evidence for the one thing a forget request certainly holds, its questions.
Per forget domain it keeps each question's *cores* as token ids: the question after its first word, and after
its first :data:`OPENING_WORDS` words (so an opening said otherwise still matches: "Can you tell me the full name
of the author born in ..." for "What is the full name of the author born in ..."), without its closing
punctuation, tokenised after a space. A byte-level BPE splits words at the same places whatever the context, so a
core occurs as one run in any prompt that holds it: in a chat turn, after "Question:" in a raw prompt, inside an
instruction, after a system prompt or earlier turns; a unit typed in lower case is matched after the case
restorer put the casing back. A unit *asks* domain k when it holds one of k's cores; it then scores at least
``threshold + spread`` for k, as a named person does (:mod:`alter.modeling.name_match`).

Guards, from the training prompts: a core of fewer than :data:`MIN_CORE_WORDS` words, and a core every token
of which a retain question also holds (a generic question, "What is the author's full name and where was he
born?", which could be asked about anyone), give no entry.

What it does not catch: a forget question reworded past its opening words (the features decide), one typed with
other punctuation or spelling inside it.

Shapes: a unit is one row of token ids (a Python list) with a bool mask of the same length.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from alter.modeling.name_match import token_runs

MIN_CORE_WORDS = 4
OPENING_WORDS = 3
Ids = Tuple[int, ...]


def question_core(tokenizer, question: str, skip: int = 1) -> List[int]:
    """The token ids of ``question`` after its first ``skip`` words, closing punctuation removed, read after a
    space (``[]`` when nothing is left)."""
    parts = str(question).strip().split(maxsplit=skip)
    rest = parts[skip].rstrip(" ?.!") if len(parts) == skip + 1 else ""
    return tokenizer(" " + rest, add_special_tokens=False)["input_ids"] if rest else []


class QuestionMatcher:
    """Per forget domain, its questions' cores as token ids; :meth:`asked` finds the domains a unit asks.
    ``entries``: ``(domain, cores)`` with domain indices as the router's banks count them (1..K)."""

    def __init__(self, entries: Iterable[Tuple[int, Sequence[Sequence[int]]]]):
        self.entries: List[Tuple[int, List[Ids]]] = [(int(d), [tuple(int(i) for i in c) for c in cores if c])
                                                     for d, cores in entries]
        for d, cores in self.entries:
            if d < 1:
                raise ValueError(f"a forget question belongs to a forget domain (index >= 1), got {d}")
            if not cores:
                raise ValueError(f"the question entry of domain {d} has no core")
        self._by_first: Dict[int, List[Tuple[Ids, int]]] = {}
        for d, cores in self.entries:
            for c in cores:
                self._by_first.setdefault(c[0], []).append((c, d))

    def __len__(self) -> int:
        return sum(len(c) for _, c in self.entries)

    def asked(self, ids: Sequence[int], mask: Optional[Sequence[bool]] = None) -> List[int]:
        """The forget domains one of whose cores the unit (``ids`` where ``mask`` is True) holds, in index order."""
        return sorted({entry[1] for *_, entry in token_runs(ids, mask, self._by_first)})

    def asked_rows(self, ids: torch.Tensor, mask: torch.Tensor) -> List[List[int]]:
        """:meth:`asked` of each row of ``ids`` ``[B, L]`` within ``mask`` ``[B, L]``."""
        return [self.asked(r, m) for r, m in zip(ids.tolist(), mask.bool().tolist())]

    # ------------------------------------------------------------------ requests
    def merged(self, other: Optional["QuestionMatcher"]) -> "QuestionMatcher":
        """This matcher with ``other``'s entries added (a new request's domain)."""
        return self if other is None else QuestionMatcher(self.entries + other.entries)

    def without(self, domain: int) -> "QuestionMatcher":
        """The matcher without ``domain``'s questions, later domains' indices shifted down by one."""
        return QuestionMatcher([(d - 1 if d > domain else d, c) for d, c in self.entries if d != domain])

    # ------------------------------------------------------------------ saving with the adapter
    def metadata(self) -> List:
        return [[d, [list(c) for c in cores]] for d, cores in self.entries]

    @classmethod
    def from_saved(cls, saved: Sequence) -> "QuestionMatcher":
        return cls([(e[0], e[1]) for e in saved])


def build_question_matcher(tokenizer, forget: Dict[int, Sequence[str]], retain: Sequence[str],
                           min_words: int = MIN_CORE_WORDS) -> Optional[QuestionMatcher]:
    """The :class:`QuestionMatcher` of the forget questions ``{domain: questions}`` against the retain questions
    (module docstring: the guards), or None when no question passes them (passages: no questions)."""
    retain_tokens = set()
    for q in retain:
        for text in (str(q), " " + str(q)):
            retain_tokens.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    entries = []
    for d, questions in sorted(forget.items()):
        cores = []
        for q in dict.fromkeys(str(q) for q in questions):
            for skip in range(1, OPENING_WORDS + 1):
                core = question_core(tokenizer, q, skip)
                if len(q.split()) - skip >= min_words and core and not set(core) <= retain_tokens:
                    cores.append(core)
        if cores:
            entries.append((d, cores))
    return QuestionMatcher(entries) if entries else None
