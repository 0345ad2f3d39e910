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

from typing import List, Optional, Sequence, Set, Tuple

import torch

from alter.data.prompts import IGNORE_INDEX, EncodedExample, collate
from alter.eval.batch_generation import generate_token_ids
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


def on_policy_repetition_loss(model, train_model, tokenizer, rows: Sequence[EncodedExample], pad_id: int
                              ) -> Tuple[torch.Tensor, int]:
    """The term (unweighted) of one phase II step and the number of answers with candidates: the rows'
    prompts (passages, rows without one, are skipped) answered greedily through the inference path, their
    candidates found, and their unlikelihood under the routing generation gave them (a no-grad routing pass,
    docs/method.md §3, then the forward of ``train_model`` with that routing). ``model`` is the
    :class:`alter.modeling.model.AlterModel`; ``train_model`` the module the step trains (it may wrap it)."""
    zero = torch.zeros((), device=model.device)
    rows = [e for e in rows if 0 < e.prompt_length < len(e.input_ids)]
    if not rows:
        return zero, 0
    prompts = [e.input_ids[:e.prompt_length] for e in rows]
    answers = [[t for t in e.labels if t != IGNORE_INDEX] for e in rows]
    gens = generate_token_ids(model, prompts, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                              max_new_tokens=min(REPETITION_MAX_NEW_TOKENS, max(map(len, answers)) + 8),
                              batch_size=len(prompts), progress=False)
    seqs, r_idx, c_idx = [], [], []
    for p, a, g in zip(prompts, answers, gens):
        cand = candidate_positions(tokenizer, g, context_text(tokenizer, p, tokenizer.decode(a, skip_special_tokens=True)))
        if cand:
            r_idx += [len(seqs)] * len(cand)
            c_idx += [len(p) + j for j in cand]
            seqs.append(EncodedExample(list(p) + list(g), [IGNORE_INDEX] * len(p) + list(g), len(p)))
    if not seqs:
        return zero, 0
    batch = collate(seqs, pad_id)
    ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
    plens = torch.tensor([e.prompt_length for e in seqs], device=model.device)
    with torch.no_grad():
        entropy, router_logits = model.route_questions(ids, mask, plens)
        entropy, _ = model._answer_entropy(ids, mask, plens, entropy, router_logits, need_output=False)
    logits = train_model(input_ids=ids, attention_mask=mask, entropy=entropy, router_logits=router_logits,
                         use_cache=False).logits
    return unlikelihood(candidate_log_probs(logits, ids, r_idx, c_idx)), len(seqs)
