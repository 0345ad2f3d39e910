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
is scaled down (``stop_level_scale``, 0.75).

Every ``stop_check_every`` steps from ``phase2_min_steps`` on, the current model scores the sample's
true answers exactly as generation would (the prompt's end given, :func:`alter.eval.scoring.
score_encoded`), and phase II ends once their mean probability is at most the level. A check that
cannot pass stops early: the sample is scored one batch at a time, the batches most likely under the
last check first, and once the probabilities scored so far, summed and divided by the whole sample's
size, exceed the level (the answers not yet scored can only add to the mean), the check fails without
scoring the rest. The decision is the full check's; the logged reading (``forget_level_reading``) is
then that lower bound and ``forget_level_scored`` the share of the sample scored (1.0 when complete).

The stall rule (``stop_stall_scale``, 1.25 by default): the forget answers do not fall forever. The hinge is
bounded and the KL holds the answer's structure, so the reading bottoms out and rises again, and where it
bottoms differs from seed to seed (TOFU tune split, 3 seeds: at 0.40, 0.54 and 1.01 times the mismatched
answers' probability). A level under the bottom would run phase II to its cap while the answers drift back
up (docs/method.md section 4). So a second, higher level is kept,

    stall = stop_stall_scale * mean_i p0(a_m(i) | q_i),

and a check whose reading is at most it and no lower than the previous check's ends phase II too: the answers
are near the mismatched answers' level and have stopped falling. A check scores its sample whole whenever
its reading can be at most the stall level (the early exit below compares with the higher of the two
levels), so the two readings the rule compares are exact. Both scales were chosen on the TOFU tune split from
recorded readings (:mod:`alter.experiments.compare.stop_trajectory`) and checked on the report split.

Passages (raw text, no question: MUSE-style forget sets) have no answer. Given ``reference`` texts (text
of the same kind the model never saw, e.g. other articles), the check reads what a membership attack
reads: the Min-K% statistic (k = 0.4: the mean log-probability of the 40% least likely tokens) of each
passage scored whole, as plain language modelling is scored (the router decides from the whole text):

    reading = exp(-mean_i MinK_i)       over up to 2n trained passages, the current model
    level   = stop_passage_level_scale * exp(-mean_j MinK_j)   over the reference texts, the starting model

and phase II ends once ``reading <= level``: the forget passages are no more likely, in the attack's own
statistic, than unseen text of their kind was before unlearning. Its scale is its own
(``stop_passage_level_scale``, 1): unseen text holds nothing the starting model was taught, unlike a
mismatched answer, so there is no taught share to scale away; the stall rule does not apply (the checks run
every step, where a reading can rise by noise alone). The mean is taken in log space (nats) so
that a few very predictable reference texts do not set the level. A passage check is one adapted forward
per batch (the base pass is kept), so it runs every ``stop_check_every_passages`` steps (1 by default):
on memorised news the forget passages' Min-K% moves by up to 0.6 nats in 5 steps, which is 40 points
of MUSE's PrivLeak (docs/method.md section 4, "Passages").

Without reference texts each sampled passage is cut at its middle word, the first half is the prompt and the
second half the answer (the way a continuation is generated and VerbMem scores it), and the level is the
starting model's probability of another passage's second half. That level is lenient: a model that memorised
the passages continues another memorised passage too once a few of its words are in context (MUSE-News,
report fold: the taught model gives mismatched second halves 0.090, a model never taught the articles gives
the true ones 0.012).
"""

from __future__ import annotations

import math
import random
from typing import Any, List, Optional, Sequence

import torch

from alter.data.prompts import IGNORE_INDEX
from alter.eval._common import field
from alter.eval.scoring import encode_pairs, score_encoded

MIN_K = 0.4          # MUSE's and open-unlearning's Min-K% share (alter/eval/metrics/mia.py)


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


def whole_passages(tokenizer, texts: Sequence[str], max_length: Optional[int] = None):
    """Each text encoded as plain language modelling (no prompt, every token labelled, no EOS), as
    :func:`alter.experiments.compare.muse.min_k_scores` scores a window for MUSE's PrivLeak."""
    usable = [str(t) for t in texts if str(t).strip()]
    if not usable:
        raise ValueError("the forget-level stop's passages are all empty")
    return encode_pairs(tokenizer, [""] * len(usable), usable, include_eos=False, max_length=max_length)


def mean_min_k(model, encoded, pad_token_id: int, batch_size: int, k: float = MIN_K, forward=None) -> float:
    """``exp(-mean_i MinK_i)``: the Min-K% statistic of each item (its k share of least likely tokens, scored as
    generation would), averaged in nats over the items and turned back into a probability."""
    from alter.eval.metrics.mia import min_k_score

    scores = score_encoded(model, encoded, pad_token_id=pad_token_id, batch_size=batch_size, return_tokens=True,
                           progress=False, forward=forward)
    values = [min_k_score(lp, k=k) for lp in scores["token_logprobs"] if lp]
    return math.exp(-sum(values) / len(values)) if values else 0.0


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
                 level: Optional[float] = None, reference: Optional[Sequence[str]] = None,
                 every_passages: int = 1, stall_scale: Optional[float] = None, passage_scale: Optional[float] = None,
                 stall_level: Optional[float] = None):
        if len(examples) < 2:
            raise ValueError("the forget-level stop needs at least 2 forget examples")
        partners = mismatched_partners([field(e, "domain") for e in examples], seed)
        rng = random.Random(seed)
        self.passages = all(not field(e, "question") for e in examples) and bool(reference)
        if self.passages:         # MUSE-style passages with unseen text of their kind: the attack's statistic
            pick = sorted(rng.sample(range(len(examples)), min(2 * int(n), len(examples))))
            self.true = whole_passages(tokenizer, [str(field(examples[i], "answer")) for i in pick], max_length)
            self.mismatched = whole_passages(tokenizer, list(reference), max_length)
            every = every_passages
        else:
            pick = sorted(rng.sample(range(len(examples)), min(int(n), len(examples))))
            if all(not field(examples[i], "question") for i in pick):
                self.true, self.mismatched = passage_pairs(tokenizer, examples, pick, partners, max_length)
            else:
                questions = [str(field(examples[i], "question")) for i in pick]
                kw = dict(system_prompt=system_prompt, max_length=max_length)
                self.true = encode_pairs(tokenizer, questions, [str(field(examples[i], "answer")) for i in pick],
                                         **kw)
                self.mismatched = encode_pairs(tokenizer, questions,
                                               [str(field(examples[partners[i]], "answer")) for i in pick], **kw)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad, self.batch_size = int(pad), int(batch_size)
        if self.passages and passage_scale is not None:
            scale = passage_scale
        self.scale, self.every, self.min_step = float(scale), max(1, int(every)), int(min_step)
        # the stall rule (module docstring): answers only; off when its level is not above the level itself
        usable = not self.passages and stall_scale is not None and stall_scale > self.scale
        self.stall_scale = float(stall_scale) if usable else None
        self.level = level
        self.stall_level = stall_level if usable else None
        self.stalled = False             # whether the stall rule (not the level) ended phase II
        self.last: Optional[float] = None
        self.scored = 1.0                # the share of the sample the last check scored (early exit: less)
        self._caches: dict = {}          # the check's scoring cache per batch (alter/modeling/scoring_pass.py)
        self._batch_means: dict = {}     # each batch's mean probability at its last scoring (the order to score)

    def calibrate(self, model) -> float:
        """The level from the starting model (adapters off): once, before phase II's first update (the stall
        rule's level with it)."""
        if self.level is None or (self.stall_scale is not None and self.stall_level is None):
            with model.disable_adapters():
                read = mean_min_k if self.passages else mean_probability
                base = read(model, self.mismatched, self.pad, self.batch_size)
            if self.level is None:
                self.level = self.scale * base
            if self.stall_scale is not None and self.stall_level is None:
                self.stall_level = self.stall_scale * base
        return self.level

    def due(self, step: int) -> bool:
        """Whether the check runs after optimiser step ``step`` (1-based)."""
        return step >= self.min_step and (step - self.min_step) % self.every == 0

    def forgotten(self, model) -> bool:
        """The check: the sample's reading at most the level, or (the stall rule) at most the stall level and
        no lower than the previous check's reading."""
        level = self.calibrate(model)
        previous, self.last = self.last, self._reading(model)
        if self.last <= level:
            return True
        self.stalled = (self.stall_level is not None and previous is not None
                        and previous <= self.last <= self.stall_level)
        return self.stalled

    def _reading(self, model) -> float:
        """:func:`mean_probability` of the sample's true answers (passages: :func:`mean_min_k`), each batch from
        :func:`alter.modeling.scoring_pass.scoring_pass`: its base pass is kept from the first check and its
        routing fixed point starts from the previous check's (the same numbers, fewer passes)."""
        read = mean_min_k if self.passages else mean_probability
        self.scored = 1.0
        if not getattr(model, "accepts_prompt_lengths", False):
            return read(model, self.true, self.pad, self.batch_size)
        from alter.modeling.scoring_pass import scoring_pass

        def forward_of(batch: Optional[int] = None):
            """score_encoded's ``forward``: batch number ``batch`` of the sample (None: the number it is given)."""
            def forward(b, ids, mask, lengths):
                key = b if batch is None else batch
                logits, self._caches[key] = scoring_pass(model, ids, mask, torch.as_tensor(lengths, device=ids.device),
                                                         self._caches.get(key))
                return logits
            return forward

        if self.passages:
            return read(model, self.true, self.pad, self.batch_size, forward=forward_of())
        return self._probability_reading(model, forward_of)

    def _probability_reading(self, model, forward_of) -> float:
        """:func:`mean_probability` of the sample, batch by batch (the batches :func:`score_encoded` makes),
        ending early once the mean cannot fall to the level (module docstring)."""
        from alter.eval._common import batches

        order = sorted(range(len(self.true)), key=lambda i: -len(self.true[i].input_ids))
        groups = batches(order, self.batch_size)
        n = sum(1 for e in self.true if any(t != IGNORE_INDEX for t in e.labels[1:]))
        level = self.calibrate(model)
        if self.stall_level is not None:     # a reading under the stall level is needed exactly (the stall rule)
            level = max(level, self.stall_level)
        probabilities = {}
        known = self._batch_means            # the batches scored before, likeliest first, then the others
        for b in sorted(range(len(groups)), key=lambda g: (0, -known[g]) if g in known else (1, g)):
            part = [self.true[i] for i in groups[b]]
            scores = score_encoded(model, part, pad_token_id=self.pad, batch_size=len(part), progress=False,
                                   forward=forward_of(b))
            got = [None if v is None else math.exp(-v) for v in scores["mean_nll"]]
            probabilities.update(zip(groups[b], got))
            got = [p for p in got if p is not None]
            self._batch_means[b] = sum(got) / len(got) if got else 0.0
            bound = sum(p for p in probabilities.values() if p is not None) / max(n, 1)
            if bound > level and len(probabilities) < len(self.true):
                self.scored = len(probabilities) / len(self.true)
                return bound
        values = [probabilities[i] for i in range(len(self.true)) if probabilities[i] is not None]
        return sum(values) / len(values) if values else 0.0

    def state(self) -> dict:
        return {"level": self.level, "stall_level": self.stall_level, "last": self.last}
