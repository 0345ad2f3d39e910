"""Model-facing evaluators: QA (TOFU-style), multiple choice, continuations, fluency proxy, TOFU.

Each evaluator batches all of its model calls (``alter.eval.scoring`` / ``alter.eval.batch_generation``:
one forward or one ``generate`` per batch, ``torch.no_grad``, eval mode, tqdm progress) and
returns a plain dict of floats, ints, strings, ``None`` and lists — JSON-serialisable as is.
Examples are read by attribute or key (``alter.data.schema.QAExample`` / ``MCExample`` or any
object / dict with the same field names).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence

from alter.data.prompts import answer_ids, encode_qa, pad_id
from alter.eval._common import as_float, field, mean_or_none
from alter.eval.batch_generation import generate_answers, generate_token_ids
from alter.eval.metrics.choice import LETTERS, choice_predictions, format_mc_prompt
from alter.eval.metrics.fluency import fluency_proxy_score, ngram_repetition_rate, score_summary
from alter.eval.metrics.mia import extraction_strength, membership_auc, min_k_score, privleak
from alter.eval.metrics.text import average_similarity_gap, bleu, rouge_scores
from alter.eval.metrics.tofu import (forget_quality, model_utility, normalised_probability, probability_from_nll,
                                     truth_ratio, truth_ratio_forget_score, truth_ratio_retain_score)
from alter.eval.scoring import answer_log_likelihoods, next_token_logprobs


def _strip_final_eos(values: Optional[List[Any]], target_ids: Optional[List[int]], eos: Optional[int]):
    """Per-token values without the closing EOS, as open-unlearning's ``tokenwise_logprobs``
    ("-1 to ignore eos prediction") does for Min-k and extraction strength."""
    if values is None:
        return []
    if eos is not None and target_ids and target_ids[-1] == eos:
        return values[:-1]
    return values


def evaluate_qa(model, tokenizer, examples: Sequence[Any], *, batch_size: int = 8, gen_batch_size: Optional[int] = None,
                max_new_tokens: int = 200, system_prompt: Optional[str] = None, generate: bool = True,
                min_k: float = 0.4, max_length: Optional[int] = None, progress: bool = True,
                name: str = "qa") -> Dict[str, Any]:
    """TOFU's per-set statistics of a model on QA examples.

    Always: per-item and mean ``probability`` (``exp(-L)`` of the answer, L = mean NLL over the
    answer tokens incl. EOS), ``extraction_strength`` and ``min_k_scores_per_item`` (answer tokens
    without EOS, open-unlearning's convention). With ``generate=True``: greedy ``generations``,
    per-item and mean ``rougeL_recall`` (TOFU's ROUGE), ``rougeL_f1``, ``rouge1_recall``. When
    examples carry ``perturbed_answers``: ``truth_ratio_per_item`` (TR = P_perturbed / P_correct,
    correct = ``paraphrased_answer`` when given, else ``answer``), both aggregates
    ``truth_ratio_forget`` (mean min(TR, 1/TR)) and ``truth_ratio_retain`` (mean max(0, 1 - TR)),
    and ``probability_normalised`` (P_answer / (P_answer + sum P_perturbed), TOFU's probability
    for real-authors / world-facts). Definitions and sources: ``alter.eval.metrics.tofu`` and
    ``alter.eval.metrics.mia``. Items whose value is undefined carry ``None``.
    """
    n = len(examples)
    questions = [str(field(e, "question")) for e in examples]
    answers = [str(field(e, "answer")) for e in examples]
    kw = dict(batch_size=batch_size, system_prompt=system_prompt, max_length=max_length, progress=progress)
    eos = tokenizer.eos_token_id

    main = answer_log_likelihoods(model, tokenizer, questions, answers, return_tokens=True,
                                  desc=f"{name}: answers", **kw)
    prob = [probability_from_nll(m) if m is not None else None for m in main["mean_nll"]]
    es, mink = [], []
    for lp, gm, tid in zip(main["token_logprobs"], main["greedy_match"], main["target_ids"]):
        es.append(extraction_strength(_strip_final_eos(gm, tid, eos)))
        mink.append(min_k_score(_strip_final_eos(lp, tid, eos), k=min_k))

    result: Dict[str, Any] = {
        "name": name, "n": n,
        "probability": mean_or_none(prob), "probability_per_item": prob,
        "avg_nll_per_item": main["mean_nll"], "num_tokens_per_item": main["num_tokens"],
        "extraction_strength": mean_or_none(es), "extraction_strength_per_item": es,
        "min_k": min_k, "min_k_scores_per_item": mink,
    }

    # Paraphrased and perturbed answers: one batched pass each over all of them.
    para_idx = [i for i, e in enumerate(examples) if field(e, "paraphrased_answer") is not None]
    para_nll: List[Optional[float]] = [None] * n
    if para_idx:
        r = answer_log_likelihoods(model, tokenizer, [questions[i] for i in para_idx],
                                   [str(field(examples[i], "paraphrased_answer")) for i in para_idx],
                                   desc=f"{name}: paraphrased", **kw)
        for i, m in zip(para_idx, r["mean_nll"]):
            para_nll[i] = m
    flat_q, flat_a, owner = [], [], []
    for i, e in enumerate(examples):
        for p in field(e, "perturbed_answers") or ():
            flat_q.append(questions[i])
            flat_a.append(str(p))
            owner.append(i)
    pert_nll: List[Optional[List[float]]] = [None] * n
    if flat_q:
        r = answer_log_likelihoods(model, tokenizer, flat_q, flat_a, desc=f"{name}: perturbed", **kw)
        for i, m in zip(owner, r["mean_nll"]):
            if m is not None:
                pert_nll[i] = (pert_nll[i] or []) + [m]
    if flat_q:
        tr: List[Optional[float]] = []
        pnorm: List[Optional[float]] = []
        for i in range(n):
            correct = para_nll[i] if para_nll[i] is not None else main["mean_nll"][i]
            ok = pert_nll[i] is not None and correct is not None
            tr.append(truth_ratio(correct, pert_nll[i]) if ok else None)
            ok_norm = pert_nll[i] is not None and main["mean_nll"][i] is not None
            pnorm.append(normalised_probability(main["mean_nll"][i], pert_nll[i]) if ok_norm else None)
        tr_vals = [t for t in tr if t is not None]
        result.update(
            truth_ratio_per_item=tr,
            truth_ratio_forget=truth_ratio_forget_score(tr_vals),
            truth_ratio_retain=truth_ratio_retain_score(tr_vals),
            probability_normalised=mean_or_none(pnorm), probability_normalised_per_item=pnorm,
            paraphrased_avg_nll_per_item=para_nll, perturbed_avg_nll_per_item=pert_nll,
        )

    if generate:
        gens = generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens,
                                batch_size=gen_batch_size or batch_size, system_prompt=system_prompt,
                                progress=progress, desc=f"{name}: generating")
        rs = rouge_scores(gens, answers)
        result.update(
            rougeL_recall=mean_or_none(rs["rougeL_recall"]), rougeL_recall_per_item=rs["rougeL_recall"],
            rougeL_f1=mean_or_none(rs["rougeL_f1"]), rouge1_recall=mean_or_none(rs["rouge1_recall"]),
            generations=gens, references=answers, questions=questions,
        )
    return result


def evaluate_mc(model, tokenizer, examples: Sequence[Any], *, batch_size: int = 8, system_prompt: Optional[str] = None,
                mode: str = "letter", length_normalize: bool = False, progress: bool = True,
                name: str = "mc") -> Dict[str, Any]:
    """Multiple-choice accuracy by option log-likelihood (WMDP, MMLU); random = 1/len(choices).

    ``mode="letter"`` (default, lm-evaluation-harness's WMDP/MMLU setting): the question is shown
    with lettered options (``metrics.choice.format_mc_prompt``) and the options scored are the
    letters as the answer. ``mode="text"``: the bare question, each option's text scored as the
    answer. Options are scored without the closing EOS (lm-evaluation-harness scores only the
    continuation). ``length_normalize=True`` ranks by mean log-likelihood per token instead of the
    sum (lm-evaluation-harness's ``acc_norm`` divides by the continuation's byte length instead;
    with single-token letters both equal plain ``acc``). Lettered options that are one token each
    are read from a single forward per question.
    """
    if mode not in ("letter", "text"):
        raise ValueError(f"mode must be 'letter' or 'text', got {mode!r}")
    questions = [str(field(e, "question")) for e in examples]
    choices = [[str(c) for c in field(e, "choices")] for e in examples]
    gold = [int(field(e, "answer")) for e in examples]
    for c, g in zip(choices, gold):
        if not 0 <= g < len(c):
            raise ValueError(f"answer index {g} outside {len(c)} choices")
    if mode == "letter":
        prompts = [format_mc_prompt(q, c) for q, c in zip(questions, choices)]
        options = [list(LETTERS[:len(c)]) for c in choices]
    else:
        prompts, options = questions, choices

    scores: List[List[float]] = []
    fast = False
    if mode == "letter" and examples:
        eos = tokenizer.eos_token_id
        max_c = max(len(c) for c in choices)
        letter_ids = []
        for L in LETTERS[:max_c]:
            ids = answer_ids(tokenizer, L)
            letter_ids.append(ids[:-1] if eos is not None and ids and ids[-1] == eos else ids)
        fast = all(len(ids) == 1 for ids in letter_ids)
    if fast:
        lp = next_token_logprobs(model, tokenizer, prompts, [ids[0] for ids in letter_ids], batch_size=batch_size,
                                 system_prompt=system_prompt, progress=progress, desc=f"{name}: options")
        scores = [row[:len(c)] for row, c in zip(lp, choices)]
    elif examples:
        flat_p = [p for p, opts in zip(prompts, options) for _ in opts]
        flat_a = [o for opts in options for o in opts]
        r = answer_log_likelihoods(model, tokenizer, flat_p, flat_a, batch_size=batch_size, system_prompt=system_prompt,
                                   include_eos=False, progress=progress, desc=f"{name}: options")
        pos = 0
        for opts in options:
            row = []
            for j in range(len(opts)):
                s, c = r["sum_nll"][pos + j], r["num_tokens"][pos + j]
                row.append(-(s / c) if length_normalize and c else -s)
            scores.append(row)
            pos += len(opts)

    preds = choice_predictions(scores)
    correct = [int(p == g) for p, g in zip(preds, gold)]
    by_subject: Dict[str, List[int]] = defaultdict(list)
    for e, c in zip(examples, correct):
        subj = field(e, "subject")
        if subj is not None:
            by_subject[str(subj)].append(c)
    return {
        "name": name, "n": len(examples), "mode": mode, "length_normalize": bool(length_normalize),
        "accuracy": mean_or_none(correct),
        "random_baseline": mean_or_none([1.0 / len(c) for c in choices]),
        "accuracy_by_subject": {k: sum(v) / len(v) for k, v in sorted(by_subject.items())},
        "predictions": preds, "answers": gold, "correct": correct, "option_scores": scores,
    }


def evaluate_continuation(model, tokenizer, texts: Sequence[str], *, prefix_tokens: int = 200,
                          max_new_tokens: int = 128, continuations: Optional[Sequence[str]] = None,
                          batch_size: int = 4, retain_scores: Optional[Mapping[str, float]] = None,
                          progress: bool = True, name: str = "continuation") -> Dict[str, Any]:
    """Verbatim-memorisation test (MUSE / Harry Potter, ALTER paper Table 2): greedy-continue a
    fixed-length prefix and compare with the true continuation by BLEU and ROUGE-L F1.

    Each text is tokenised as raw text (``prompts.encode_qa`` with an empty question); its first
    ``prefix_tokens`` tokens are the prompt and the next ``max_new_tokens`` tokens, decoded, are
    the reference; texts of at most ``prefix_tokens`` tokens are skipped (``n_skipped``). If
    ``continuations`` is given, ``texts`` are the prefixes (all their tokens) and
    ``continuations`` the references, MUSE's ``verbmem`` layout (``prompt`` / ``gt``).
    ``max_new_tokens=128`` is open-unlearning's MUSE verbmem setting
    (``configs/eval/muse_metrics/forget_verbmem_ROUGE.yaml``, ``rougeL_f1``). With
    ``retain_scores`` (this function's output for the retain model) also ``asg``
    (``metrics.text.average_similarity_gap``).
    """
    prefixes, refs, kept = [], [], []
    for i, t in enumerate(texts):
        ids = encode_qa(tokenizer, "", t).input_ids
        if continuations is not None:
            if ids:
                prefixes.append(ids)
                refs.append(str(continuations[i]).strip())
                kept.append(i)
        elif len(ids) > prefix_tokens:
            prefixes.append(ids[:prefix_tokens])
            refs.append(tokenizer.decode(ids[prefix_tokens:prefix_tokens + max_new_tokens],
                                         skip_special_tokens=True).strip())
            kept.append(i)
    new = generate_token_ids(model, prefixes, pad_token_id=pad_id(tokenizer), eos_token_id=tokenizer.eos_token_id,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
                             desc=f"{name}: generating")
    gens = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in new]
    b = bleu(gens, refs)
    rs = rouge_scores(gens, refs)
    out: Dict[str, Any] = {
        "name": name, "n": len(kept), "n_skipped": len(texts) - len(kept), "prefix_tokens": prefix_tokens,
        "max_new_tokens": max_new_tokens,
        "bleu": b["bleu"], "bleu_sentence_mean": b["bleu_sentence_mean"], "bleu_per_item": b["bleu_per_item"],
        "rougeL_f1": mean_or_none(rs["rougeL_f1"]), "rougeL_f1_per_item": rs["rougeL_f1"],
        "rougeL_recall": mean_or_none(rs["rougeL_recall"]),
        "indices": kept, "generations": gens, "references": refs,
    }
    if retain_scores is not None and out["bleu"] is not None:
        out["asg"] = average_similarity_gap(out, retain_scores)
    return out


def evaluate_fluency(base_model, tokenizer, questions: Sequence[str], generations: Sequence[str], *,
                     batch_size: int = 8, system_prompt: Optional[str] = None, n: int = 3,
                     vocab_size: Optional[int] = None, progress: bool = True) -> Dict[str, Any]:
    """FLUENCY PROXY (not the paper's GPT-4o judge; see ``alter.eval.metrics.fluency``): each
    generated answer is scored 1–5 from its perplexity under ``base_model`` given its question
    (answer tokens without EOS — a generation cut at ``max_new_tokens`` has none) and its word
    n-gram repetition rate. Returns per-item ``perplexity``, ``repetition``, ``score`` and the
    ``mean`` / ``var`` of the scores (the paper's Flu-mean / Flu-var)."""
    if len(questions) != len(generations):
        raise ValueError(f"{len(questions)} questions vs {len(generations)} generations")
    V = int(vocab_size or len(tokenizer))
    r = answer_log_likelihoods(base_model, tokenizer, list(questions), list(generations), batch_size=batch_size,
                               system_prompt=system_prompt, include_eos=False, progress=progress,
                               desc="fluency: base-model perplexity")
    ppl = [math.exp(m) if m is not None and g.strip() else None for m, g in zip(r["mean_nll"], generations)]
    rep = [ngram_repetition_rate(g, n=n) for g in generations]
    scores = [fluency_proxy_score(p, q, V) for p, q in zip(ppl, rep)]
    summary = score_summary(scores)
    return {
        "metric": "fluency_proxy (base-model perplexity x n-gram repetition; NOT the paper's GPT-4o judge)",
        "n": len(scores), "mean": summary["mean"], "var": summary["var"], "ngram_n": n, "vocab_size": V,
        "perplexity_per_item": ppl, "repetition_per_item": rep, "score_per_item": scores,
    }


_TOFU_SET_NAMES = ("retain", "real_authors", "world_facts")


def _reference(retain_model_stats: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    if not retain_model_stats:
        return {}
    if "reference_stats" in retain_model_stats:  # a full evaluate_tofu result of the retain model
        return retain_model_stats["reference_stats"]
    return retain_model_stats


def evaluate_tofu(model, tokenizer, forget: Sequence[Any], retain: Sequence[Any],
                  real_authors: Optional[Sequence[Any]] = None, world_facts: Optional[Sequence[Any]] = None,
                  holdout: Optional[Sequence[Any]] = None,
                  retain_model_stats: Optional[Mapping[str, Any]] = None, *, batch_size: int = 8,
                  gen_batch_size: Optional[int] = None, max_new_tokens: int = 200, system_prompt: Optional[str] = None,
                  generate: bool = True, min_k: float = 0.4, progress: bool = True,
                  include_sets: bool = True) -> Dict[str, Any]:
    """The TOFU benchmark's numbers for one model, as TOFU / open-unlearning define them.

    - ``forget_quality``: KS-test p-value between this model's and the retain model's per-item
      forget-set truth ratios (needs ``retain_model_stats`` — the ``reference_stats`` of this
      function's result on the retain model, or that whole result; else ``None``).
    - ``model_utility``: harmonic mean of retain / real-authors / world-facts x (probability,
      ROUGE-L recall, truth ratio ``mean max(0, 1 - TR)``); the retain probability is ``exp(-L)``,
      the real-authors / world-facts probability is the option-normalised one. With sets (or
      generation) missing, the harmonic mean of what is there; ``model_utility_used`` names it.
    - forget-set ``forget_rougeL_recall``, ``forget_probability``, ``forget_truth_ratio``
      (``mean min(TR, 1/TR)``), ``forget_extraction_strength``.
    - with ``holdout``: ``mia_min_k_auc`` (Min-k% AUC, k=0.4, forget vs holdout answers) and
      ``privleak`` against the retain model's AUC (``retain_model_stats["mia_min_k_auc"]``) or
      0.5 — open-unlearning's ``configs/eval/tofu.yaml`` defaults.
    ``reference_stats`` holds what a later run needs from this one if this is the retain model.
    """
    common = dict(batch_size=batch_size, gen_batch_size=gen_batch_size, max_new_tokens=max_new_tokens,
                  system_prompt=system_prompt, generate=generate, min_k=min_k, progress=progress)
    sets: Dict[str, Dict[str, Any]] = {"forget": evaluate_qa(model, tokenizer, forget, name="forget", **common)}
    for nm, exs in zip(_TOFU_SET_NAMES, (retain, real_authors, world_facts)):
        if exs:
            sets[nm] = evaluate_qa(model, tokenizer, exs, name=nm, **common)

    f = sets["forget"]
    out: Dict[str, Any] = {
        "forget_rougeL_recall": f.get("rougeL_recall"), "forget_probability": f["probability"],
        "forget_truth_ratio": f.get("truth_ratio_forget"), "forget_extraction_strength": f["extraction_strength"],
    }
    forget_trs = [t for t in f.get("truth_ratio_per_item", []) if t is not None]

    components: Dict[str, Optional[float]] = {}
    for nm in _TOFU_SET_NAMES:
        s = sets.get(nm)
        if s is None:
            continue
        # TOFU's get_model_utility: plain exp(-L) on the retain set, option-normalised on the others.
        components[f"{nm}_probability"] = s["probability"] if nm == "retain" else s.get("probability_normalised")
        components[f"{nm}_rougeL_recall"] = s.get("rougeL_recall")
        components[f"{nm}_truth_ratio"] = s.get("truth_ratio_retain")
    mu = model_utility(components)
    out.update({k: as_float(v) for k, v in components.items()})
    out.update(model_utility=mu["model_utility"], model_utility_used=mu["used"],
               model_utility_missing=mu["missing"], model_utility_complete=mu["complete"])

    ref = _reference(retain_model_stats)
    out["forget_quality"] = out["ks_statistic"] = None
    ref_trs = ref.get("forget_truth_ratios")
    if ref_trs and forget_trs:
        fq = forget_quality(forget_trs, ref_trs)
        out["forget_quality"], out["ks_statistic"] = fq["forget_quality"], fq["ks_statistic"]

    out["mia_min_k_auc"] = out["privleak"] = out["privleak_reference_auc"] = None
    if holdout:
        h = answer_log_likelihoods(model, tokenizer, [str(field(e, "question")) for e in holdout],
                                   [str(field(e, "answer")) for e in holdout], batch_size=batch_size,
                                   system_prompt=system_prompt, return_tokens=True, progress=progress,
                                   desc="holdout: answers")
        eos = tokenizer.eos_token_id
        h_scores = [min_k_score(_strip_final_eos(lp, tid, eos), k=min_k)
                    for lp, tid in zip(h["token_logprobs"], h["target_ids"])]
        auc = membership_auc(f["min_k_scores_per_item"], h_scores)
        ref_auc = ref.get("mia_min_k_auc")
        ref_auc = 0.5 if ref_auc is None else float(ref_auc)
        out.update(mia_min_k_auc=auc, privleak=privleak(auc, ref_auc), privleak_reference_auc=ref_auc)

    out["reference_stats"] = {"forget_truth_ratios": forget_trs, "mia_min_k_auc": out["mia_min_k_auc"]}
    if include_sets:
        out["sets"] = sets
    return out
