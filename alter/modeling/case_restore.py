"""Reading a question typed in lower case as the training prompts wrote it (docs/method.md §3, "Lower case").

The question router compares the tokens of a routing unit with its banks' tokens. A name typed in lower
case is other tokens (``" jaime vasquez"`` -> ``" ja" "ime" " vas" "quez"``, against ``" Ja" "ime" " Vas"
"quez"``), whose features match neither bank well: on the TOFU tune split about half of the lower-cased
forget questions reached the retain expert. Before reading a unit written entirely in lower case (none of
its tokens holds an upper-case letter), the router therefore puts back the casing the training prompts
used, word by word, and reads the restored unit; a unit with any upper-case letter is read as typed, so
every prompt a user writes with capitals routes exactly as before.

What is restored is learnt from the training prompts' units (forget and retain alike, so a lower-cased
retain author is restored as much as a forget one): every pre-tokenizer word (``" Vasquez"``, ``"Hwa"``,
``"What"``) that holds an upper-case letter and whose lower-case form never occurs in those prompts. The
map is kept as token ids, lower-case word -> cased word, because a byte-level BPE pre-tokenises at the
same word boundaries whatever the context, so the lower-case word's ids occur as one run in any prompt
that holds it; :func:`build_case_map` needs the tokenizer, :class:`CaseRestorer` only the ids (the adapter
keeps them, like the turn header's).

Shapes: a unit is one row of token ids (a Python list); the restored row may be longer or shorter.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

Pair = Tuple[Tuple[int, ...], Tuple[int, ...]]


class CaseRestorer:
    """Token-level case restoration of a unit typed in lower case.

    ``pairs``: ``(lower-case word ids, cased word ids)``; ``cased_ids``: every token id whose text holds an
    upper-case letter (a unit with one of them is read as typed); ``owners``: per pair, the index of the forget
    domain whose request added it (None: the first training), so that removing a request removes its words."""

    def __init__(self, pairs: Iterable[Tuple[Sequence[int], Sequence[int]]], cased_ids: Sequence[int],
                 owners: Optional[Sequence[Optional[int]]] = None):
        self.pairs: List[Pair] = [(tuple(int(i) for i in lo), tuple(int(i) for i in up)) for lo, up in pairs]
        self.owners: List[Optional[int]] = list(owners) if owners is not None else [None] * len(self.pairs)
        if len(self.owners) != len(self.pairs):
            raise ValueError(f"{len(self.owners)} case-map owners for {len(self.pairs)} entries")
        for lo, up in self.pairs:
            if not lo or not up:
                raise ValueError("a case-map entry needs token ids on both sides")
        by_first: Dict[int, List[Pair]] = defaultdict(list)
        for lo, up in self.pairs:
            by_first[lo[0]].append((lo, up))
        for cands in by_first.values():                  # the longest word first at each position
            cands.sort(key=lambda p: -len(p[0]))
        self._by_first = dict(by_first)
        self.cased_ids = torch.as_tensor(sorted({int(i) for i in cased_ids}), dtype=torch.long)
        self._cased = set(self.cased_ids.tolist())

    def __len__(self) -> int:
        return len(self.pairs)

    def restore(self, ids: Sequence[int]) -> Optional[List[int]]:
        """The row with its lower-case words cased as the training prompts wrote them, or None when the row
        is left as typed (it holds an upper-case letter, or no word of the map)."""
        ids = [int(i) for i in ids]
        if not ids or any(i in self._cased for i in ids):
            return None
        out: List[int] = []
        changed = False
        j = 0
        while j < len(ids):
            for lo, up in self._by_first.get(ids[j], ()):
                if tuple(ids[j:j + len(lo)]) == lo:
                    out.extend(up)
                    j += len(lo)
                    changed = True
                    break
            else:
                out.append(ids[j])
                j += 1
        return out if changed else None

    def merged(self, other: Optional["CaseRestorer"], owner: int) -> "CaseRestorer":
        """This map with ``other``'s words added, owned by forget domain ``owner`` (a new request's prompts): a
        lower-case word already in the map keeps the casing it has, so every unit the map restored before
        reads as before."""
        if other is None:
            return self
        known = {lo for lo, _ in self.pairs}
        new = [p for p in other.pairs if p[0] not in known]
        return CaseRestorer(self.pairs + new, self.cased_ids.tolist() + other.cased_ids.tolist(),
                            self.owners + [owner] * len(new))

    def without(self, owner: int) -> "CaseRestorer":
        """The map without the words forget domain ``owner``'s request added, later domains' indices shifted
        down by one (that domain is removed): the map as it was before the request."""
        keep = [j for j, o in enumerate(self.owners) if o != owner]
        return CaseRestorer([self.pairs[j] for j in keep], self.cased_ids.tolist(),
                            [o - 1 if o is not None and o > owner else o for o in (self.owners[j] for j in keep)])

    # ------------------------------------------------------------------ saving with the adapter
    def metadata(self) -> List[list]:
        """``[lower ids, cased ids]`` per entry, with its owner appended when a later request added it."""
        return [[list(lo), list(up)] + ([o] if o is not None else []) for (lo, up), o in zip(self.pairs, self.owners)]

    @classmethod
    def from_saved(cls, pairs: Sequence, cased_ids: torch.Tensor) -> "CaseRestorer":
        return cls([(p[0], p[1]) for p in pairs], cased_ids.reshape(-1).tolist(),
                   [int(p[2]) if len(p) > 2 else None for p in pairs])


def cased_token_ids(tokenizer) -> List[int]:
    """Every token id of ``tokenizer`` whose text holds an upper-case letter."""
    return [i for i in range(len(tokenizer)) if any(c.isupper() for c in tokenizer.decode([i]))]


def _words(tokenizer, text: str) -> List[str]:
    """``text``'s pre-tokenizer words, each with its leading space where it has one (``" Vasquez"``)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None) if backend is not None else None
    if pre is None:
        raise ValueError("case restoration needs a fast tokenizer with a pre-tokenizer")
    return [text[a:b] for _, (a, b) in pre.pre_tokenize_str(text)]


def template_text(tokenizer) -> str:
    """The chat template's own text around a one-turn chat (its headers: ``user``, ``assistant``, ...), or ""."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    try:
        return tokenizer.apply_chat_template([{"role": "system", "content": "."}, {"role": "user", "content": "."}],
                                             tokenize=False, add_generation_prompt=True)
    except Exception:                      # a template that refuses this shape has nothing to protect here
        return ""


def build_case_map(tokenizer, texts: Iterable[str]) -> Optional[CaseRestorer]:
    """The :class:`CaseRestorer` learnt from the training prompts' unit ``texts``, or None when the tokenizer
    has no pre-tokenizer to split words by (then units are read as typed, as before). The words of the chat
    template's headers are never cased: a unit holds its turn header (``<|im_start|>user``), which must stay
    as the template writes it."""
    try:
        words = [w for t in texts if t for w in _words(tokenizer, t)]
        protected = _words(tokenizer, template_text(tokenizer))
    except ValueError:
        return None
    seen_lower = {w for w in words + protected if w == w.lower()}
    seen_lower |= {w.lower() for w in protected}
    cased: Dict[str, Counter] = defaultdict(Counter)
    for w in words:
        lo = w.lower()
        if lo != w and lo not in seen_lower:
            cased[lo][w] += 1
    pairs = []
    for lo, forms in sorted(cased.items()):
        up = forms.most_common(1)[0][0]
        lo_ids = tokenizer(lo, add_special_tokens=False)["input_ids"]
        up_ids = tokenizer(up, add_special_tokens=False)["input_ids"]
        if lo_ids and up_ids and lo_ids != up_ids:
            pairs.append((lo_ids, up_ids))
    return CaseRestorer(pairs, cased_token_ids(tokenizer))
