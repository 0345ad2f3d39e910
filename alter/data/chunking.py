"""Cutting long corpus documents into passages of bounded size.

Corpora such as ``muse-bench/MUSE-Books`` ``raw`` (a handful of whole books, one per row) or
``cais/wmdp-corpora`` (long papers) are far longer than a training window. A passage is a run of
whole words, with the document's own whitespace kept between them, that fits ``max_words`` words
and ``max_chars`` characters; a single word longer than ``max_chars`` is cut where the limit falls.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

_WORD = re.compile(r"\S+\s*")


def chunk_text(text: str, *, max_chars: Optional[int] = None, max_words: Optional[int] = None) -> List[str]:
    """Greedy passages of at most ``max_words`` words and ``max_chars`` characters (stripped, non-empty)."""
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if max_words is not None and max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    stripped = text.strip()
    if not stripped:
        return []
    if max_chars is None and max_words is None:
        return [stripped]
    chunks: List[str] = []
    cur: List[str] = []
    cur_chars = 0

    def flush():
        nonlocal cur, cur_chars
        if cur:
            chunks.append("".join(cur).strip())
        cur, cur_chars = [], 0

    for m in _WORD.finditer(stripped):
        piece = m.group(0)
        word = piece.rstrip()
        if max_chars is not None and len(word) > max_chars:
            flush()
            chunks.extend(word[i:i + max_chars] for i in range(0, len(word), max_chars))
            continue
        too_long = max_chars is not None and cur_chars + len(word) > max_chars
        too_many = max_words is not None and len(cur) >= max_words
        if cur and (too_long or too_many):
            flush()
        cur.append(piece)
        cur_chars += len(piece)
    flush()
    return [c for c in chunks if c]


def split_window(text: str, prompt_share: float = 0.5) -> Tuple[str, str]:
    """``(prompt, continuation)``: the first ``prompt_share`` of the text's words (at least one) and the rest,
    each joined by single spaces."""
    words = text.split()
    k = max(1, int(len(words) * prompt_share))
    return " ".join(words[:k]), " ".join(words[k:])
