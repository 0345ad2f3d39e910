"""When phase II stops by default: the forget answers fall to a level estimated from the data itself.

docs/method.md section 4. A model that never learnt a fact still gives its answer some probability
(TOFU's answers restate the question; a never-taught model copies the name and guesses the kind of
answer), so "forgotten" is not "probability near zero": pushing below the never-taught level makes the
forget set stand out (TOFU's forget quality, MUSE's PrivLeak). The level is estimated from the forget
set with the model that training starts from:

    level = stop_level_scale * mean_i p0(a_m(i) | q_i)

where ``a_m(i)`` is the answer of another forget example (from another forget domain when there is
one, e.g. another author), ``p0`` the starting model (adapters off) and ``p(a | q) = exp(-mean NLL)``
over the answer tokens with its EOS (TOFU's probability). A mismatched answer has the shape of an
answer to the question but not its facts; the starting model still knows the other answer, so it
is scaled down (``stop_level_scale``, chosen on the TOFU tune split, checked on the report split).

Every ``stop_check_every`` steps from ``phase2_min_steps`` on, the current model scores the sample's
true answers exactly as generation would (the prompt's end given, :func:`alter.eval.scoring.
score_encoded`), and phase II ends once their mean probability is at most the level.

Passages (raw text, no question: MUSE-style forget sets) have no answer: each sampled passage is cut at
its middle word, the first half is the prompt and the second half the answer (the way a continuation is
generated and VerbMem scores it), and the mismatched answer is another passage's second half. That level
is lenient: a model that memorised the passages continues another memorised passage too once a few of its
words are in context (MUSE-News, report fold: the taught model gives mismatched second halves 0.090, a model
never taught the articles gives the true ones 0.012). Given ``reference`` texts (text of the same kind the
model never saw, e.g. other articles), the level comes from their continuations instead (0.017 there).
"""

from __future__ import annotations

import math
import random
from typing import Any, List, Optional, Sequence

import torch

from alter.eval._common import field
from alter.eval.scoring import encode_pairs, score_encoded


def mismatched_partners(domains: Sequence[Optional[str]], seed: int) -> List[int]:
    """For each example, the index of another one: from another domain when any exists, else any other.

    Raises ValueError for fewer than two examples (no answer to mismatch with)."""
    n = len(domains)
    if n < 2:
        raise ValueError("the forget-level stop needs at least 2 forget examples (a mismatched answer "
                         "is another example's answer)")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        others = [j for j in range(n) if domains[j] != domains[i]] or [j for j in range(n) if j != i]
        out.append(rng.choice(others))
    return out


def passage_pairs(tokenizer, examples: Sequence[Any], pick: Sequence[int], partners: Sequence[int],
                  max_length: Optional[int] = None):
    """Passages (raw text, no question): each is cut in two at its middle word; the first half is the prompt
    (a raw prompt, as a continuation is generated) and the second half the answer, or, mismatched, the
    second half of the partner passage. ``(true, mismatched)`` encoded lists."""
    from alter.data.chunking import split_window
    from alter.data.prompts import encode_continuation

    true, mismatched = [], []
    for i in pick:
        head, tail = split_window(str(field(examples[i], "answer")))
        other = split_window(str(field(examples[partners[i]], "answer")))[1]
        if not tail or not other:
            raise ValueError(f"the forget-level stop cuts each passage in two; passage {i} has fewer than 2 words")
        true.append(_truncate(encode_continuation(tokenizer, head, tail), max_length))
        mismatched.append(_truncate(encode_continuation(tokenizer, head, other), max_length))
    return true, mismatched


def reference_pairs(tokenizer, texts: Sequence[str], n: int, seed: int, max_length: Optional[int] = None):
    """Up to ``n`` reference texts (seeded sample), each cut at its middle word: first half the prompt, second
    half the answer, encoded as :func:`passage_pairs` encodes a passage."""
    from alter.data.chunking import split_window
    from alter.data.prompts import encode_continuation

    usable = [t for t in texts if len(str(t).split()) >= 2]
    if not usable:
        raise ValueError("the forget-level stop's reference texts need at least 2 words each")
    pick = sorted(random.Random(seed).sample(range(len(usable)), min(int(n), len(usable))))
    return [_truncate(encode_continuation(tokenizer, *split_window(str(usable[i]))), max_length) for i in pick]


def _truncate(e, max_length: Optional[int]):
    """``e`` cut to ``max_length`` tokens from the answer's end (the prompt is a passage's first half)."""
    if max_length is None or len(e.input_ids) <= max_length:
        return e
    return type(e)(e.input_ids[:max_length], e.labels[:max_length], e.prompt_length)


def mean_probability(model, encoded, pad_token_id: int, batch_size: int, forward=None) -> float:
    """Mean over items of ``exp(-mean NLL)`` of the answer tokens, scored as generation would (eval mode;
    ``forward``: :func:`alter.eval.scoring.score_encoded`'s)."""
    scores = score_encoded(model, encoded, pad_token_id=pad_token_id, batch_size=batch_size, progress=False,
                           forward=forward)
    values = [math.exp(-v) for v in scores["mean_nll"] if v is not None]
    return sum(values) / len(values) if values else 0.0


class ForgetLevelStop:
    """The sample, its mismatched answers, the level (computed once) and the last reading."""

    def __init__(self, tokenizer, examples: Sequence[Any], *, n: int, scale: float, every: int, min_step: int,
                 seed: int, system_prompt: Optional[str], max_length: Optional[int] = None, batch_size: int = 16,
                 level: Optional[float] = None, reference: Optional[Sequence[str]] = None):
        if len(examples) < 2:
            raise ValueError("the forget-level stop needs at least 2 forget examples")
        partners = mismatched_partners([field(e, "domain") for e in examples], seed)
        pick = sorted(random.Random(seed).sample(range(len(examples)), min(int(n), len(examples))))
        if all(not field(examples[i], "question") for i in pick):
            self.true, self.mismatched = passage_pairs(tokenizer, examples, pick, partners, max_length)
            if reference:         # unseen text of the same kind: its continuations set the level
                self.mismatched = reference_pairs(tokenizer, reference, n, seed, max_length)
        else:
            questions = [str(field(examples[i], "question")) for i in pick]
            kw = dict(system_prompt=system_prompt, max_length=max_length)
            self.true = encode_pairs(tokenizer, questions, [str(field(examples[i], "answer")) for i in pick], **kw)
            self.mismatched = encode_pairs(tokenizer, questions,
                                           [str(field(examples[partners[i]], "answer")) for i in pick], **kw)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad, self.batch_size = int(pad), int(batch_size)
        self.scale, self.every, self.min_step = float(scale), max(1, int(every)), int(min_step)
        self.level = level
        self.last: Optional[float] = None
        self._caches: dict = {}          # the check's scoring cache per batch (alter/modeling/scoring_pass.py)

    def calibrate(self, model) -> float:
        """The level from the starting model (adapters off): once, before phase II's first update."""
        if self.level is None:
            with model.disable_adapters():
                self.level = self.scale * mean_probability(model, self.mismatched, self.pad, self.batch_size)
        return self.level

    def due(self, step: int) -> bool:
        """Whether the check runs after optimiser step ``step`` (1-based)."""
        return step >= self.min_step and (step - self.min_step) % self.every == 0

    def forgotten(self, model) -> bool:
        self.last = self._reading(model)
        return self.last <= self.calibrate(model)

    def _reading(self, model) -> float:
        """:func:`mean_probability` of the sample's true answers, each batch from :func:`alter.modeling.
        scoring_pass.scoring_pass`: its base pass is kept from the first check and its routing fixed point
        starts from the previous check's (the same numbers, fewer passes)."""
        if not getattr(model, "accepts_prompt_lengths", False):
            return mean_probability(model, self.true, self.pad, self.batch_size)
        from alter.modeling.scoring_pass import scoring_pass

        def forward(b, ids, mask, lengths):
            logits, self._caches[b] = scoring_pass(model, ids, mask, torch.as_tensor(lengths, device=ids.device),
                                                   self._caches.get(b))
            return logits

        return mean_probability(model, self.true, self.pad, self.batch_size, forward=forward)

    def state(self) -> dict:
        return {"level": self.level}
