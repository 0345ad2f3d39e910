"""Routing a question by the forget person's name as users type it (docs/method.md §3, "Names as users type them").

The question router's evidence is how much better a unit's token features match a forget bank than the
retain bank. A name typed in part carries little of that: "What genre does Park write?" reads ``" Park"``
without the ``"Ji-Yeon"`` before it, and a short or common surname (Park, Chen) is close to any name of the
retain side in feature space. On the TOFU report split a quarter of the forget questions asked by the surname
alone stayed below the threshold while the taught model still answered them from the person's facts. Token
features of earlier blocks (2, 4 of 30) did not separate them better (measured in docs/method.md §3).

:class:`NameMatcher` adds lexical evidence for the one thing a person-shaped forget request is about, their
name. Per forget domain it keeps the surname of the name that domain's training questions share
(:func:`alter.data.name_variants.common_name`), with and without a leading space, its typos one edit away
(:func:`alter.data.name_variants.misspellings`: two letters swapped, one dropped, one doubled) and the given
names before it, all as token ids: a byte-level BPE splits words at the same places whatever the context, so a
word's ids occur as one run in any prompt that holds it. A unit *names* domain k when it holds one of k's
surname forms as a whole word:

- the token after it does not continue the word (``" Park" "er"`` is Parker, not Park);
- the word before it is not capitalised (``"Jurassic Park"``, ``"Mina Park"``: another name), unless it is
  that person's own given name (the full name, or the full name with a typo in the surname), a word that
  starts questions (``"Did Park write ..."``) or a title (``"Dr Park"``: :data:`TITLES`).

Guards, from the training prompts: a surname shorter than 3 letters, one that a retain prompt holds, one whose
lower-case form a training prompt writes as an ordinary word, and a typo that is a word of the training prompts,
give no form. A unit that names domain k gets at least the threshold plus one spread as its score for k (router
strength z >= 1, the median forget question's); a surname two forget persons share names both, and the
features choose between them.

What it does not catch: a typo of another kind (a letter replaced), a surname typed in lower case that the
case restorer does not know, a person referred to without their surname. Passages (no names shared by a
domain's questions) add nothing.

Shapes: a unit is one row of token ids (a Python list) with a bool mask of the same length; the token flags
are ``[V]`` uint8 (bit 0: the token's text holds an upper-case letter; bit 1: it continues a word; bit 2: it is
blank).
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from alter.data.name_variants import STARTERS, common_name, misspellings

CASED, CONTINUES, SPACE = 1, 2, 4
SPACE_MARKERS = "\u0120\u2581"      # byte-level BPE's "Ġ" and SentencePiece's "▁" open a word after a space
FLAGS_KEY = "question_router.name_token_flags"
Ids = Tuple[int, ...]
# capitalised words before a surname that are not a given name
TITLES = frozenset("Mr Mrs Ms Miss Mx Dr Prof Professor Sir Dame Madam Author Writer Novelist Poet".split())


def token_runs(ids: Sequence[int], mask: Optional[Sequence[bool]], by_first: Dict[int, Sequence[tuple]]):
    """``(ids, inside, j, end, entry)`` for each entry of ``by_first[ids[j]]`` whose run of ids (``entry[0]``) is
    ``ids[j:end]``, every token of it inside ``mask`` (all of ``ids`` when None): the lexical scan both
    :class:`NameMatcher` and :class:`alter.modeling.question_match.QuestionMatcher` make of a unit."""
    ids = [int(i) for i in ids]
    inside = [True] * len(ids) if mask is None else [bool(m) for m in mask]
    for j, token in enumerate(ids):
        if not inside[j]:
            continue
        for entry in by_first.get(token, ()):
            end = j + len(entry[0])
            if tuple(ids[j:end]) == entry[0] and all(inside[j:end]):
                yield ids, inside, j, end, entry


class NameMatcher:
    """Per forget domain, surname forms and given-name forms as token ids; :meth:`named` finds the domain a
    unit names. ``entries``: ``(domain, surname forms, given-name forms)`` (domain indices as the router's
    banks count them, 1..K); ``flags``: ``[V]`` uint8 token flags (:func:`token_flags`); ``starters``: the ids of
    capitalised words that may stand before a surname without being a given name (question words, titles)."""

    def __init__(self, entries: Iterable[Tuple[int, Sequence[Sequence[int]], Sequence[Sequence[int]]]],
                 flags: torch.Tensor, starters: Iterable[Sequence[int]] = ()):
        self.entries: List[Tuple[int, List[Ids], List[Ids]]] = [
            (int(d), [tuple(int(i) for i in f) for f in forms if f], [tuple(int(i) for i in g) for g in given if g])
            for d, forms, given in entries]
        for d, forms, _ in self.entries:
            if d < 1:
                raise ValueError(f"a name belongs to a forget domain (index >= 1), got {d}")
            if not forms:
                raise ValueError(f"the name entry of domain {d} has no surname form")
        self.starters = {tuple(int(i) for i in w) for w in starters}
        self.flags = flags.to(torch.uint8).reshape(-1).cpu()
        self._flags = self.flags.tolist()
        self._by_first: Dict[int, List[Tuple[Ids, int, List[Ids]]]] = {}
        for d, forms, given in self.entries:
            for f in forms:
                self._by_first.setdefault(f[0], []).append((f, d, given))

    def __len__(self) -> int:
        return len(self.entries)

    def _flag(self, token: int, bit: int) -> bool:
        return 0 <= token < len(self._flags) and bool(self._flags[token] & bit)

    def _word_before_is_a_name(self, ids: List[int], inside: List[bool], j: int) -> bool:
        """Whether the word that ends just before position ``j`` (inside the unit) holds an upper-case letter and
        is not one of :attr:`starters` ("Is", "Did", "What", "Dr": :data:`alter.data.name_variants.STARTERS`,
        :data:`TITLES`)."""
        k = j - 1
        while k >= 0 and inside[k] and self._flag(ids[k], SPACE):         # the blank between the words
            k -= 1
        j = k + 1
        while k >= 0 and inside[k] and self._flag(ids[k], CONTINUES):
            k -= 1
        if k < 0 or not inside[k] or self._flag(ids[k], SPACE):
            k += 1                                     # the unit or a line starts inside the word ("\nHas")
        word = tuple(ids[k:j])
        return any(self._flag(t, CASED) for t in word) and word not in self.starters

    def named(self, ids: Sequence[int], mask: Optional[Sequence[bool]] = None) -> List[int]:
        """The forget domains the unit (``ids`` where ``mask`` is True) names, in index order (two when it
        names a surname two forget persons share: the router's features choose between them)."""
        found = set()
        for ids, inside, j, end, (form, domain, given) in token_runs(ids, mask, self._by_first):
            if end < len(ids) and inside[end] and self._flag(ids[end], CONTINUES):
                continue                                # a longer word (Parker)
            own = any(j >= len(g) and tuple(ids[j - len(g):j]) == g and all(inside[j - len(g):j]) for g in given)
            if own or not self._word_before_is_a_name(ids, inside, j):
                found.add(domain)
        return sorted(found)

    def named_rows(self, ids: torch.Tensor, mask: torch.Tensor) -> List[List[int]]:
        """:meth:`named` of each row of ``ids`` ``[B, L]`` within ``mask`` ``[B, L]``."""
        return [self.named(r, m) for r, m in zip(ids.tolist(), mask.bool().tolist())]

    # ------------------------------------------------------------------ requests
    def merged(self, other: Optional["NameMatcher"]) -> "NameMatcher":
        """This matcher with ``other``'s entries added (a new request's domain)."""
        return self if other is None else NameMatcher(self.entries + other.entries, self.flags,
                                                      self.starters | other.starters)

    def without(self, domain: int) -> "NameMatcher":
        """The matcher without ``domain``'s names, later domains' indices shifted down by one (it is removed)."""
        return NameMatcher([(d - 1 if d > domain else d, f, g) for d, f, g in self.entries if d != domain],
                           self.flags, self.starters)

    # ------------------------------------------------------------------ saving with the adapter
    def metadata(self) -> dict:
        return {"entries": [[d, [list(f) for f in forms], [list(g) for g in given]] for d, forms, given in self.entries],
                "starters": [list(w) for w in sorted(self.starters)]}

    @classmethod
    def from_saved(cls, saved: dict, flags: torch.Tensor) -> "NameMatcher":
        return cls([(e[0], e[1], e[2]) for e in saved["entries"]], flags, saved.get("starters", ()))


def token_flags(tokenizer) -> torch.Tensor:
    """``[V]`` uint8: :data:`CASED` for a token whose text holds an upper-case letter, :data:`SPACE` for a blank one
    (spaces, a newline), :data:`CONTINUES` for one
    that continues a word (its text starts with a letter or digit, its raw form with no space marker). A tokenizer that writes a
    word the same after a space (whole-word tokens) has no continuing token."""
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    marked = ids(" a") != ids("a")              # a word after a space is other tokens: words are told apart
    raw = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    flags = torch.zeros(len(tokenizer), dtype=torch.uint8)
    for i, r in enumerate(raw):
        text = tokenizer.decode([i])
        value = (CASED if any(c.isupper() for c in text) else 0) | (SPACE if text and text.isspace() else 0)
        if marked and r and r[0] not in SPACE_MARKERS and text[:1].isalnum():     # "’s" after a name: a new word
            value |= CONTINUES
        flags[i] = value
    return flags


_WORD = re.compile(r"[\w\-']+")


def build_name_matcher(tokenizer, forget: Dict[int, Sequence[str]], retain: Sequence[str],
                       flags: Optional[torch.Tensor] = None) -> Optional[NameMatcher]:
    """The :class:`NameMatcher` of the forget questions ``{domain: questions}`` against the retain questions,
    or None when no domain has a name to match (passages, questions that name no one). ``flags``: the
    tokenizer's :func:`token_flags` when already computed (a new request on a saved adapter)."""
    names = {d: common_name(qs) for d, qs in forget.items()}
    names = {d: n for d, n in names.items() if n}
    if not names:
        return None
    all_text = [str(q) for qs in forget.values() for q in qs] + [str(q) for q in retain]
    words = {w for t in all_text for w in _WORD.findall(t.replace("'s", " "))}
    lower_words = {w for w in words if w == w.lower()}
    retain_words = {w for t in retain for w in _WORD.findall(str(t).replace("'s", " "))}
    entries = []
    for d, name in sorted(names.items()):
        parts = name.split()
        surname, given = parts[-1], " ".join(parts[:-1])
        if len(surname) < 3 or surname in retain_words or surname.lower() in lower_words:
            continue
        typos = [t for t in misspellings(surname) if t not in words and t.lower() not in lower_words]
        forms = []
        for word in [surname] + typos:
            for text in (" " + word, word):
                forms.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        given_forms = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (" " + given, given)]
        entries.append((d, forms, given_forms))
    if not entries:
        return None
    starters = [tokenizer(text, add_special_tokens=False)["input_ids"] for w in sorted(STARTERS | TITLES)
                for text in (w, " " + w)]
    return NameMatcher(entries, token_flags(tokenizer) if flags is None else flags, starters)
