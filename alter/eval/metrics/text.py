"""Text-overlap metrics between a generated and a reference string.

- ROUGE: Google's ``rouge-score`` package with ``use_stemmer=True``. TOFU
  (github locuslab/tofu, ``evaluate_util.py``, ``eval_rouge_recall``) and open-unlearning
  (github locuslab/open-unlearning, ``src/evals/metrics/utils.py``, ``eval_text_similarity``)
  both call ``scorer.score(ground_truth, generation)``: the reference is the *target* argument,
  so ROUGE-L recall = LCS / (number of reference tokens). TOFU reports ``rougeL_recall`` for
  its QA sets; open-unlearning's MUSE verbatim-memorisation metric uses ``rougeL_f1``
  (``configs/eval/muse_metrics/forget_verbmem_ROUGE.yaml``).
- BLEU: ``sacrebleu`` with its default 13a tokenisation, on the 0–100 scale that the ALTER
  paper's Harry Potter table (Table 2) uses.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import sacrebleu
from rouge_score import rouge_scorer

_SCORER = None


def _scorer() -> rouge_scorer.RougeScorer:
    global _SCORER
    if _SCORER is None:
        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    return _SCORER


def rouge_l_recall(generation: str, reference: str) -> float:
    """ROUGE-L recall of ``generation`` against ``reference`` (TOFU's ``rougeL_recall``)."""
    return float(_scorer().score(reference, generation)["rougeL"].recall)


def rouge_l_f1(generation: str, reference: str) -> float:
    """ROUGE-L F-measure of ``generation`` against ``reference`` (open-unlearning's ``rougeL_f1``)."""
    return float(_scorer().score(reference, generation)["rougeL"].fmeasure)


def rouge_scores(generations: Sequence[str], references: Sequence[str]) -> Dict[str, List[float]]:
    """Per-item ``rougeL_recall``, ``rougeL_f1`` and ``rouge1_recall`` — the three numbers
    open-unlearning's ``eval_text_similarity`` records for each generation."""
    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations vs {len(references)} references")
    out: Dict[str, List[float]] = {"rougeL_recall": [], "rougeL_f1": [], "rouge1_recall": []}
    sc = _scorer()
    for gen, ref in zip(generations, references):
        s = sc.score(ref, gen)
        out["rougeL_recall"].append(float(s["rougeL"].recall))
        out["rougeL_f1"].append(float(s["rougeL"].fmeasure))
        out["rouge1_recall"].append(float(s["rouge1"].recall))
    return out


def bleu(generations: Sequence[str], references: Sequence[str]) -> Dict[str, object]:
    """BLEU of generated vs true continuations (sacrebleu, 0–100).

    Returns ``bleu`` (corpus BLEU: n-gram statistics pooled over all items, the standard
    definition of Papineni et al. 2002 as implemented by ``sacrebleu.corpus_bleu``) and
    ``bleu_per_item`` (``sacrebleu.sentence_bleu`` of each item), whose mean is ``bleu_sentence_mean``.
    """
    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations vs {len(references)} references")
    if not generations:
        return {"bleu": None, "bleu_sentence_mean": None, "bleu_per_item": []}
    per_item = [float(sacrebleu.sentence_bleu(g, [r]).score) for g, r in zip(generations, references)]
    corpus = float(sacrebleu.corpus_bleu(list(generations), [list(references)]).score)
    return {"bleu": corpus, "bleu_sentence_mean": sum(per_item) / len(per_item), "bleu_per_item": per_item}


def average_similarity_gap(scores: Mapping[str, float], retain_scores: Mapping[str, float]) -> float:
    """ASG of the ALTER paper's Harry Potter table: mean absolute gap to the Retain model.

    The paper gives no formula. ``mean(|BLEU - BLEU_retain|, |100 * ROUGE-L - 100 * ROUGE-L_retain|)``
    on the 0–100 scale reproduces 8 of the 12 rows of its Table 2 to within 0.1 (e.g. Original:
    (|74.8 - 1.9| + |85.1 - 9.8|) / 2 = 74.1); GA, ELM, A-LoRA and ALTER are off by 0.15–0.8, so
    treat this as our reading of ASG, not the paper's code. Inputs are dicts with ``bleu`` (0–100) and
    ``rougeL_f1`` (0–1) as returned by ``evaluate_continuation``.
    """
    gaps = [abs(float(scores["bleu"]) - float(retain_scores["bleu"])),
            100.0 * abs(float(scores["rougeL_f1"]) - float(retain_scores["rougeL_f1"]))]
    return sum(gaps) / len(gaps)
