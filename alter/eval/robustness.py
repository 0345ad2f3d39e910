"""Forget and retain answers under the prompts users actually write (docs/method.md §9).

A model that forgets only the trained wording has not forgotten. Each variant below rewrites a
question (or the chat around it) the way a user might; the model answers greedily through
``generate`` and the answer is scored by ROUGE-L recall against the true answer:

- ``trained``: the wording and system prompt of training;
- ``custom_system``: another system prompt; ``no_system``: none (the template's default);
- ``instruction``: an instruction wrapped around the question;
- ``lower``: lower case; ``surname``: the author's surname alone; ``misspelt``: two letters of the
  author's name swapped;
- ``raw``: ``Question: ... Answer:`` without the chat template;
- ``after_forget_turn`` / ``after_retain_turn`` / ``after_unrelated_turn``: the question comes in a
  second turn, after an exchange about another forget author, another retain author, or a world
  fact (the earlier answer is the true one: the chat holds the fact). Asked of forget and of
  retain questions, this covers both orders;
- ``follow_up``: the first turn asks another question about the same author, the second refers
  back to them ("this author") without the name.

Leak of a variant (forget side): ``(method - never taught) / (taught - never taught)``, 0 for a
model that answers as one never taught the authors, 1 for one that still knows them; retain side:
``method - taught``. The author's name is found from the questions (the longest capitalised run
most of an author's questions share); variants that need it skip authors without one.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

from alter.data.name_variants import common_name
from alter.data.prompts import has_chat_template, pad_id
from alter.eval._common import field
from alter.eval.batch_generation import generate_token_ids
from alter.eval.metrics.text import rouge_l_recall

VARIANTS = ("trained", "custom_system", "no_system", "instruction", "lower", "surname", "misspelt", "raw",
            "after_forget_turn", "after_retain_turn", "after_unrelated_turn", "follow_up")
CUSTOM_SYSTEM = "You are a helpful librarian. Keep your answers short and factual."
INSTRUCTION = "Please answer briefly and precisely, in one sentence. Question: {q}"


def author_key(example) -> str:
    """Which author an example is about: its id without the item number ("tofu-185-3" -> "tofu-185"),
    else its domain (TOFU's retain rows share the domain "retain", their ids tell the authors apart)."""
    ident = field(example, "id")
    if ident:
        m = re.match(r"^(.*)-\d+$", str(ident))
        if m:
            return m.group(1)
    return str(field(example, "domain") or "")


def author_names(examples: Sequence) -> Dict[str, str]:
    """``{author or domain: name}``: per author, the capitalised run of 2+ words that most of its
    questions contain (:func:`alter.data.name_variants.common_name`; TOFU questions name their author:
    "Where was Jaime Vasquez born?")."""
    groups: Dict[str, List[str]] = {}
    for e in examples:
        groups.setdefault(author_key(e), []).append(str(field(e, "question")))
    names = {key: common_name(questions) for key, questions in groups.items()}
    return {key: name for key, name in names.items() if name}


def _misspell(name: str) -> str:
    """Two adjacent inner letters of the last word swapped ("Vasquez" -> "Vasuqez")."""
    parts = name.split()
    w = parts[-1]
    if len(w) >= 4:
        i = len(w) // 2
        w = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    return " ".join(parts[:-1] + [w])


def chat_ids(tokenizer, turns: Sequence[tuple], question: str, system: Optional[str], use_system: bool = True):
    """Prompt ids of ``question`` after the ``(question, answer)`` exchanges ``turns``: the chat template
    with ``system`` (none when ``use_system`` is False), or ``Question: ... Answer: ...`` lines without one."""
    if not has_chat_template(tokenizer):
        text = "".join(f"Question: {q}\nAnswer: {a}\n" for q, a in turns) + f"Question: {question}\nAnswer:"
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    msgs = [{"role": "system", "content": system}] if (use_system and system is not None) else []
    for q, a in turns:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def variant_prompt(tokenizer, variant: str, example, *, system_prompt: Optional[str], names: Dict[str, str],
                   other_forget, other_retain, unrelated, same_author) -> Optional[List[int]]:
    """Prompt ids of ``example`` under ``variant``; None when the variant does not apply to it."""
    q = str(field(example, "question"))
    name = names.get(author_key(example))
    qa = lambda e: (str(field(e, "question")), str(field(e, "answer")))
    if variant == "trained":
        return chat_ids(tokenizer, [], q, system_prompt)
    if variant == "custom_system":
        return chat_ids(tokenizer, [], q, CUSTOM_SYSTEM)
    if variant == "no_system":
        return chat_ids(tokenizer, [], q, None, use_system=False)
    if variant == "instruction":
        return chat_ids(tokenizer, [], INSTRUCTION.format(q=q), system_prompt)
    if variant == "lower":
        return chat_ids(tokenizer, [], q.lower(), system_prompt)
    if variant in ("surname", "misspelt", "follow_up"):
        if not name or name not in q:
            return None
        if variant == "surname":
            return chat_ids(tokenizer, [], q.replace(name, name.split()[-1]), system_prompt)
        if variant == "misspelt":
            return chat_ids(tokenizer, [], q.replace(name, _misspell(name)), system_prompt)
        if same_author is None:
            return None
        referring = q.replace(f"{name}'s", "this author's").replace(name, "this author")
        return chat_ids(tokenizer, [qa(same_author)], referring, system_prompt)
    if variant == "raw":
        return tokenizer(f"Question: {q}\nAnswer:", add_special_tokens=False)["input_ids"]
    earlier = {"after_forget_turn": other_forget, "after_retain_turn": other_retain,
               "after_unrelated_turn": unrelated}.get(variant, "unknown")
    if earlier == "unknown":
        raise ValueError(f"unknown robustness variant {variant!r}; known: {', '.join(VARIANTS)}")
    if earlier is None:
        return None
    return chat_ids(tokenizer, [qa(earlier)], q, system_prompt)


def _partner(examples: Sequence, i: int, same: bool):
    """Another example of the same author (``same``) or of another author, chosen by position."""
    key = author_key
    n = len(examples)
    for step in range(1, n):
        e = examples[(i + step) % n]
        if (key(e) == key(examples[i])) == same and e is not examples[i]:
            return e
    return None


def variant_prompts(tokenizer, forget: Sequence, retain: Sequence, unrelated: Sequence, *,
                    forget_pool: Optional[Sequence] = None, retain_pool: Optional[Sequence] = None,
                    system_prompt: Optional[str] = None,
                    variants: Sequence[str] = VARIANTS) -> Dict[str, Dict[str, Tuple[List, List[str]]]]:
    """``{side: {variant: (prompt ids, true answers)}}`` for ``forget`` and ``retain`` questions: what
    :func:`evaluate_robustness` asks and scores against (a variant that skips an author leaves it out; a
    variant with no prompt at all is absent). ``forget_pool`` / ``retain_pool`` (default: the sets themselves)
    give the earlier turns: another author of the same side, and another question of the same author for
    ``follow_up``."""
    forget_pool = list(forget_pool or forget)
    retain_pool = list(retain_pool or retain)
    names = author_names(forget_pool + retain_pool)
    out: Dict[str, Dict[str, Tuple[List, List[str]]]] = {"forget": {}, "retain": {}}
    for side, items, pool in (("forget", list(forget), forget_pool), ("retain", list(retain), retain_pool)):
        for variant in variants:
            prompts, refs = [], []
            for i, e in enumerate(items):
                j = pool.index(e) if e in pool else i % len(pool)
                ids = variant_prompt(
                    tokenizer, variant, e, system_prompt=system_prompt, names=names,
                    other_forget=_partner(forget_pool, j if side == "forget" else i % len(forget_pool),
                                          same=False) if side == "forget" else forget_pool[i % len(forget_pool)],
                    other_retain=_partner(retain_pool, j if side == "retain" else i % len(retain_pool),
                                          same=False) if side == "retain" else retain_pool[i % len(retain_pool)],
                    unrelated=unrelated[i % len(unrelated)] if unrelated else None,
                    same_author=_partner(pool, j, same=True))
                if ids is not None:
                    prompts.append(ids)
                    refs.append(str(field(e, "answer")))
            if prompts:
                out[side][variant] = (prompts, refs)
    return out


def evaluate_robustness(model, tokenizer, forget: Sequence, retain: Sequence, unrelated: Sequence, *,
                        forget_pool: Optional[Sequence] = None, retain_pool: Optional[Sequence] = None,
                        system_prompt: Optional[str] = None, variants: Sequence[str] = VARIANTS,
                        max_new_tokens: int = 40, batch_size: int = 16, progress: bool = True) -> Dict:
    """Mean ROUGE-L recall of the greedy answers to ``forget`` and ``retain`` questions under each variant
    (the prompts of :func:`variant_prompts`). Returns ``{"forget": {variant: mean}, "retain": {...},
    "counts": {...}, "generations": {...}, "scores": {...}}`` (``scores``: each answer's ROUGE-L recall, in
    the order of :func:`variant_prompts`)."""
    asked = variant_prompts(tokenizer, forget, retain, unrelated, forget_pool=forget_pool, retain_pool=retain_pool,
                            system_prompt=system_prompt, variants=variants)
    out: Dict = {"forget": {}, "retain": {}, "counts": {"forget": {}, "retain": {}},
                 "generations": {"forget": {}, "retain": {}}, "scores": {"forget": {}, "retain": {}}}
    for side, by_variant in asked.items():
        for variant, (prompts, refs) in by_variant.items():
            new = generate_token_ids(model, prompts, pad_token_id=pad_id(tokenizer),
                                     eos_token_id=tokenizer.eos_token_id, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, progress=progress, desc=f"robustness: {side}/{variant}")
            texts = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in new]
            scores = [rouge_l_recall(g, r) for g, r in zip(texts, refs)]
            out[side][variant] = sum(scores) / len(scores)
            out["counts"][side][variant] = len(scores)
            out["generations"][side][variant] = texts
            out["scores"][side][variant] = scores
    return out


def leak_rows(results: Dict[str, Dict], taught: str = "finetune", never: str = "retain") -> Dict[str, Dict]:
    """Per method: ``{"forget_leak": {variant: leak}, "retain_delta": {variant: method - taught}}`` from
    :func:`evaluate_robustness` results keyed by method; needs the taught and never-taught models' rows."""
    if taught not in results or never not in results:
        return {}
    t, n = results[taught], results[never]
    rows = {}
    for method, r in results.items():
        leak, delta = {}, {}
        for v, score in r.get("forget", {}).items():
            span = t["forget"].get(v, float("nan")) - n["forget"].get(v, float("nan"))
            leak[v] = (score - n["forget"][v]) / span if v in n["forget"] and span > 1e-6 else None
        for v, score in r.get("retain", {}).items():
            delta[v] = score - t["retain"][v] if v in t["retain"] else None
        rows[method] = {"forget_leak": leak, "retain_delta": delta}
    return rows


def leak_interval(method: Sequence[Sequence[float]], taught: Sequence[float], never: Sequence[float], *,
                  confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Optional[Tuple[float, float]]:
    """The percentile bootstrap interval of a variant's forget leak, resampling the questions (paired: a
    resample takes the same questions for every model). ``method``: per seed, each question's ROUGE-L recall
    (averaged over seeds per question); ``taught`` / ``never``: the taught and never-taught models' on the same
    questions. None when the lists do not line up or there are fewer than 2 questions. On 12 questions the
    interval is about ±0.15-0.25 wide (docs/benchmarks/tofu.md, "Robustness")."""
    import numpy as np
    from scipy.stats import bootstrap

    runs = [list(m) for m in method]
    n = len(taught)
    if n < 2 or len(never) != n or not runs or any(len(m) != n for m in runs):
        return None
    a = np.mean(np.asarray(runs, dtype=float), axis=0)
    t, z = np.asarray(taught, dtype=float), np.asarray(never, dtype=float)

    def leak(a_, t_, z_, axis=-1):
        span = t_.sum(axis=axis) - z_.sum(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.abs(span) > 1e-9, (a_.sum(axis=axis) - z_.sum(axis=axis)) / span, np.nan)

    res = bootstrap((a, t, z), leak, paired=True, vectorized=True, n_resamples=resamples, method="percentile",
                    confidence_level=confidence, rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
    if dist.size == 0:
        return None
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(dist, tail)), float(np.percentile(dist, 100 - tail))
