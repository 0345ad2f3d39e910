"""An option of phase II: unlikelihood on the forget expert's own degenerate continuations (docs/method.md §4).

The hinge is teacher-forced: it pushes the true answer's content tokens below their runner-up given the true
prefix, and never sees what the forget expert writes once its first answer token differs. On TOFU some
experts then loop ("the genre of the genre of the genre ...") or drift into another script (Hangul after an
English sentence) where the fact should come (docs/benchmarks/tofu.md, "Degenerate forget answers"). This term
reads the model's own greedy answers (on-policy, through the inference path) and pushes down the tokens that
make them degenerate, with the unlikelihood loss of Welleck et al. (2019, "Neural text generation with
unlikelihood training"):

    L_rep = mean over the candidate positions t of  -log(1 - p(g_t | prompt, g_<t))

where ``g`` is the greedy continuation and the candidates are

- **repeats**: every token of a token n-gram (``n = REPEAT_NGRAM``) that already occurred earlier in the same
  continuation, in continuations where such tokens are at least ``REPEAT_SHARE`` of the tokens (a name written
  twice in a fluent answer repeats a 4-gram too and is left alone);
- **stray script**: tokens whose text holds a letter of a writing system that neither the prompt nor the true
  answer uses, or a broken UTF-8 piece (U+FFFD) where neither holds one.

The candidates' probability is moved to the rest of the vocabulary (nothing says where), and every other
position is left alone. Shapes: ``token_log_p`` ``[N]``, the log-probabilities of the N candidate tokens.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Set

import torch

from alter.eval.metrics.degeneration import scripts

REPEAT_NGRAM = 4
REPETITION_MAX_NEW_TOKENS = 64     # the greedy answers are cut at the longest true answer's length + 8, at most this
REPEAT_SHARE = 0.1
BROKEN = "\ufffd"


def repeat_positions(ids: Sequence[int], n: int = REPEAT_NGRAM, min_share: float = REPEAT_SHARE) -> Set[int]:
    """Indices of the tokens of every n-gram of ``ids`` that occurred earlier in ``ids`` (its later occurrences);
    empty when they are fewer than ``min_share`` of the tokens."""
    seen, out = set(), set()
    for i in range(len(ids) - n + 1):
        gram = tuple(ids[i:i + n])
        if gram in seen:
            out.update(range(i, i + n))
        seen.add(gram)
    return out if ids and len(out) >= min_share * len(ids) else set()


def stray_positions(pieces: Sequence[str], context: str) -> Set[int]:
    """Indices of the token texts ``pieces`` with a letter of a script ``context`` lacks, or a broken byte
    (U+FFFD) when ``context`` holds none."""
    allowed = scripts(context)
    broken_ok = BROKEN in context
    return {i for i, p in enumerate(pieces) if (scripts(p) - allowed) or (BROKEN in p and not broken_ok)}


def candidate_positions(tokenizer, ids: Sequence[int], context: str) -> List[int]:
    """The sorted candidate positions of one continuation ``ids`` (module docstring)."""
    pieces = [tokenizer.decode([t]) for t in ids]
    return sorted(repeat_positions(ids) | stray_positions(pieces, context))


def unlikelihood(token_log_p: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log(1 - p)`` over the given log-probabilities ``[N]`` (0 for N = 0), computed as
    ``-log(-expm1(log p))`` so that p near 1 stays finite (clamped at log p <= -1e-6)."""
    if token_log_p.numel() == 0:
        return token_log_p.sum() * 0.0
    lp = token_log_p.float().clamp(max=-1e-6)
    return -torch.log(-torch.expm1(lp)).mean()


def candidate_log_probs(logits: torch.Tensor, ids: torch.Tensor, rows: Sequence[int], cols: Sequence[int]
                        ) -> torch.Tensor:
    """``[N]`` log p of token ``ids[r, c]`` under ``logits[r, c - 1]`` for each (r, c) (c >= 1); only the N
    predicting rows of the logits are normalised."""
    r = torch.as_tensor(list(rows), dtype=torch.long, device=logits.device)
    c = torch.as_tensor(list(cols), dtype=torch.long, device=logits.device)
    picked = logits[r, c - 1].float()                                                # [N, V]
    return torch.log_softmax(picked, dim=-1).gather(1, ids[r, c][:, None]).squeeze(1)


def context_text(tokenizer, prompt_ids: Sequence[int], answer: Optional[str]) -> str:
    """The text a continuation may draw its scripts from: its prompt and the true answer."""
    return tokenizer.decode(list(prompt_ids), skip_special_tokens=True) + " " + (answer or "")
