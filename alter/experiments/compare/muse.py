"""The MUSE-News benchmark (``alter-bench --benchmark muse-news``): its data and its scores.

Data (:func:`build_muse_data`, from :mod:`alter.data.muse_news`): the starting model is taught every
forget window (both folds) and the retain windows; a method unlearns one fold's windows (raw text,
no question) with the retain windows as its retain set; the never-taught model (``retain``) is taught
the retain windows only (MUSE's "retrained" model). ALTER's forget-level stop calibrates on the reference
windows (other holdout passages, never taught and never scored; :mod:`alter.train.stopping.level`).

Scores (:func:`evaluate_muse`), MUSE's metrics on the chosen fold:

- ``verbmem_forget``: ROUGE-L F1 of the greedy continuation of each verbmem prompt against its true
  continuation; ``verbmem_retain`` the same on retain windows (first half -> second half);
- ``knowmem_forget`` / ``knowmem_retain``: ROUGE-L recall of the answer to each matched knowledge
  question, asked in the chat after MUSE's few-shot exemplars (each exemplar an earlier turn);
- ``privleak``: Min-K% (k = 0.4) AUC of forget windows vs holdout windows, relative to the
  never-taught model's AUC, in open-unlearning's sign (:func:`alter.eval.metrics.mia.privleak`, as on TOFU):
  0 = as never taught, negative = the forget windows still look like training data, positive = unlearned
  so hard that they stand out the other way;
- ``world_facts_accuracy`` / ``real_authors_accuracy``: the true answer more likely than every wrong one;
- ``fluency_mean``: the fluency proxy of the verbmem continuations (base-model perplexity x repetition);
- ``routed_forget:<kind>``: the share of each kind of prompt the question router sends to a forget expert.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from alter.data.schema import QAExample, RETAIN_DOMAIN

FORGET_NAME = "news"          # the forget domain's name (one expert per request)


def build_muse_data(s, fold: Optional[str] = None):
    """``CompareData`` of the MUSE-News benchmark for ``s.tofu_split`` (the fold: ``report`` or ``tune``)."""
    from alter.data.general_knowledge import real_authors, world_facts
    from alter.data.muse_news import load_muse_news, passages
    from alter.experiments.compare.worker import CompareData

    if not s.data_dir:
        raise ValueError("the MUSE-News benchmark needs data_dir (--data DIR): the directory of its JSON files")
    muse = load_muse_news(s.data_dir, verbmem_limit=s.muse_verbmem or None)
    fold = fold or s.tofu_split
    items = muse.fold(fold)
    forget = [QAExample(question="", answer=f.text, domain=FORGET_NAME, id=f"forget#{i}") for i, f in enumerate(items)]
    retain = passages(muse.retain_windows, RETAIN_DOMAIN, "retain")
    teach = passages([f.text for f in muse.forget], RETAIN_DOMAIN, "taught") + retain
    real, world = real_authors(), world_facts()
    replay = (real[1::2] + world[1::2]) if s.replay_general else []
    data = CompareData(forget, retain, forget, retain, real[0::2][:s.eval_general], world[0::2][:s.eval_general],
                       passages(muse.holdout_windows, RETAIN_DOMAIN, "holdout"), replay, teach=teach)
    data.muse = muse
    data.muse_items = items
    return data


def chat_prompt_ids(tokenizer, question: str, shots: Sequence[QAExample], system_prompt: Optional[str]) -> List[int]:
    """The chat prompt of ``question`` after the few-shot exemplars, each an earlier user/assistant turn."""
    from alter.data.prompts import has_chat_template

    if not has_chat_template(tokenizer):
        text = "".join(f"Question: {e.question}\nAnswer: {e.answer}\n\n" for e in shots) + f"Question: {question}\nAnswer:"
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    for e in shots:
        messages += [{"role": "user", "content": e.question}, {"role": "assistant", "content": e.answer}]
    messages.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def knowmem(model, tok, questions: Sequence[QAExample], shots: Sequence[QAExample], *, system_prompt, max_new_tokens,
            batch_size, progress) -> Dict:
    """ROUGE-L recall of the greedy answers (cut at the first line break) against the true answers."""
    from alter.data.prompts import pad_id
    from alter.eval.batch_generation import generate_token_ids
    from alter.eval.metrics.text import rouge_l_recall

    ids = [chat_prompt_ids(tok, q.question, shots, system_prompt) for q in questions]
    new = generate_token_ids(model, ids, pad_token_id=pad_id(tok), eos_token_id=tok.eos_token_id,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
                             desc="knowmem: generating")
    gens = [tok.decode(t, skip_special_tokens=True).strip().split("\n")[0].strip() for t in new]
    scores = [rouge_l_recall(g, q.answer) for g, q in zip(gens, questions)]
    return {"mean": sum(scores) / len(scores) if scores else None, "per_item": scores, "generations": gens,
            "questions": [q.question for q in questions], "answers": [q.answer for q in questions]}


def min_k_scores(model, tok, texts: Sequence[str], *, batch_size: int, k: float = 0.4) -> List[float]:
    """Min-K% score of each raw text (mean of its k lowest token log-probabilities, negated)."""
    from alter.eval.metrics.mia import min_k_score
    from alter.eval.scoring import answer_log_likelihoods

    r = answer_log_likelihoods(model, tok, [""] * len(texts), list(texts), batch_size=batch_size, include_eos=False,
                               return_tokens=True, progress=False)
    return [min_k_score(lp, k=k) for lp in r["token_logprobs"]]


def routing_shares(model, tok, kinds: Dict[str, List[List[int]]], batch_size: int) -> Dict[str, float]:
    """``routed_forget:<kind>``: the share of each kind's prompts (token id lists) the router sends to a forget
    expert; empty for a model without a fitted question router."""
    from alter.data.prompts import EncodedExample, IGNORE_INDEX, collate, pad_id

    router = getattr(model, "question_router", None)
    if router is None or not router.fitted:
        return {}
    out = {}
    for kind, prompts in kinds.items():
        if not prompts:
            continue
        routed = 0
        for start in range(0, len(prompts), batch_size):
            chunk = [EncodedExample(list(p), [IGNORE_INDEX] * len(p), len(p)) for p in prompts[start:start + batch_size]]
            batch = collate(chunk, pad_id(tok))
            lengths = torch.tensor([len(e.input_ids) for e in chunk], device=model.device)
            with torch.no_grad():
                u = model.route_questions(batch["input_ids"].to(model.device),
                                          batch["attention_mask"].to(model.device), lengths)[1]
            routed += int(router.routed_to_forget(u).sum())
        out[f"routed_forget:{kind}"] = routed / len(prompts)
    return out


def forget_side(model, tok, s, items, shots, progress: bool):
    """``(verbmem, knowmem)`` results on forget windows ``items``: their verbmem prompts continued, their
    matched knowledge questions answered (either may be empty)."""
    from alter.eval.evaluators import evaluate_continuation

    verb = [f for f in items if f.kind == "verbmem"]
    asked = [QAExample(f.question, f.answer) for f in items if f.kind == "knowmem"]
    vm = evaluate_continuation(model, tok, [f.prompt for f in verb], continuations=[f.gt for f in verb],
                               max_new_tokens=s.max_new_tokens, batch_size=s.eval_batch_size, progress=progress,
                               name="verbmem forget") if verb else {"rougeL_f1": None, "generations": []}
    km = knowmem(model, tok, asked, shots, system_prompt=s.system_prompt, max_new_tokens=s.knowmem_new_tokens,
                 batch_size=s.eval_batch_size, progress=progress)
    return vm, km


def retain_side(model, tok, s, muse, progress: bool):
    """``(verbmem, knowmem)`` on the retain side: retain windows continued (first half -> second half) and
    the matched retain questions answered."""
    from alter.data.chunking import split_window
    from alter.eval.evaluators import evaluate_continuation

    halves = [split_window(w) for w in muse.retain_windows[:s.eval_retain_windows]]
    vm = evaluate_continuation(model, tok, [h[0] for h in halves], continuations=[h[1] for h in halves],
                               max_new_tokens=s.max_new_tokens, batch_size=s.eval_batch_size, progress=progress,
                               name="verbmem retain")
    km = knowmem(model, tok, muse.retain_qa, muse.icl_retain, system_prompt=s.system_prompt,
                 max_new_tokens=s.knowmem_new_tokens, batch_size=s.eval_batch_size, progress=progress)
    return vm, km


def _raw_ids(tok, text: str) -> List[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


def evaluate_muse(model, tok, s, data, reference: Optional[dict], progress: bool) -> Dict:
    """The MUSE-News row (module docstring) and the generations behind it."""
    from alter.data.chunking import split_window
    from alter.eval.evaluators import evaluate_qa
    from alter.eval.metrics.mia import membership_auc, privleak

    items = data.muse_items
    muse = data.muse
    bs = s.eval_batch_size
    verb = [f for f in items if f.kind == "verbmem"]
    asked = [QAExample(f.question, f.answer) for f in items if f.kind == "knowmem"]
    vm_f, km_f = forget_side(model, tok, s, items, muse.icl_forget, progress)
    vm_r, km_r = retain_side(model, tok, s, muse, progress)
    halves = [split_window(w) for w in muse.retain_windows[:s.eval_retain_windows]]
    f_scores = min_k_scores(model, tok, [f.text for f in items], batch_size=bs)
    h_scores = min_k_scores(model, tok, muse.holdout_windows, batch_size=bs)
    auc = membership_auc(f_scores, h_scores)
    ref_auc = (reference or {}).get("mia_min_k_auc")
    row = {"verbmem_forget": vm_f["rougeL_f1"], "verbmem_retain": vm_r["rougeL_f1"],
           "knowmem_forget": km_f["mean"], "knowmem_retain": km_r["mean"], "mia_min_k_auc": auc,
           "privleak": privleak(auc, ref_auc) if ref_auc is not None else None,
           "n_verbmem": len(verb), "n_knowmem_forget": len(asked), "n_knowmem_retain": len(muse.retain_qa),
           "n_forget_windows": len(items), "n_holdout_windows": len(muse.holdout_windows)}
    from alter.experiments.compare.worker import _option_accuracy
    for name, exs in (("world_facts", data.world_facts), ("real_authors", data.real_authors)):
        r = evaluate_qa(model, tok, exs, name=name, generate=False, batch_size=bs, system_prompt=s.system_prompt,
                        progress=progress)
        row[f"{name}_accuracy"] = _option_accuracy(r)
    kinds = {"verbmem_prompts": [_raw_ids(tok, f.prompt) for f in verb],
             "knowmem_forget": [chat_prompt_ids(tok, q.question, muse.icl_forget, s.system_prompt) for q in asked],
             "knowmem_retain": [chat_prompt_ids(tok, q.question, muse.icl_retain, s.system_prompt)
                                for q in muse.retain_qa],
             "retain_prompts": [_raw_ids(tok, h[0]) for h in halves],
             "holdout_prompts": [_raw_ids(tok, split_window(w)[0]) for w in muse.holdout_windows],
             "general_questions": [chat_prompt_ids(tok, e.question, (), s.system_prompt)
                                   for e in data.world_facts + data.real_authors]}
    row.update(routing_shares(model, tok, kinds, bs))
    details = {"verbmem_forget": vm_f, "verbmem_retain": vm_r, "knowmem_forget": km_f, "knowmem_retain": km_r,
               "min_k_forget": f_scores, "min_k_holdout": h_scores}
    return {"row": row, "details": details, "reference_stats": {"mia_min_k_auc": auc},
            "fluency_inputs": ([f.prompt for f in verb], vm_f["generations"])}


def continuation_fluency(judge, tok, prompts: Sequence[str], generations: Sequence[str], *, batch_size: int) -> Dict:
    """The fluency proxy of raw-text continuations: the judge's perplexity of each continuation after its
    raw prompt (no chat template), with its n-gram repetition (:mod:`alter.eval.metrics.fluency`)."""
    import math

    from alter.data.prompts import encode_continuation, pad_id
    from alter.eval.metrics.fluency import fluency_proxy_score, ngram_repetition_rate, score_summary
    from alter.eval.scoring import score_encoded

    keep = [i for i, g in enumerate(generations) if g.strip()]
    enc = [encode_continuation(tok, prompts[i], generations[i]) for i in keep]
    nll = score_encoded(judge, enc, pad_token_id=pad_id(tok), batch_size=batch_size, progress=False)["mean_nll"]
    ppl: List[Optional[float]] = [None] * len(generations)
    for i, m in zip(keep, nll):
        ppl[i] = math.exp(m) if m is not None else None
    scores = [fluency_proxy_score(p, ngram_repetition_rate(g), len(tok)) for p, g in zip(ppl, generations)]
    return {**score_summary(scores), "perplexity_per_item": ppl, "score_per_item": scores}
