"""TOFU's probability, truth ratio, forget quality and model utility, from per-answer NLLs.

Every quantity here starts from the *length-normalised* negative log-likelihood of an answer,
``L = (sum over answer tokens of -log p(token | prefix)) / (number of answer tokens)``, so that
``P = exp(-L)`` is the geometric mean of the per-token probabilities. Sources checked:

- TOFU (github locuslab/tofu): ``evaluate_util.py`` — ``get_all_evals`` stores
  ``avg_gt_loss = gt_loss / num_token_gt`` and ``eval_perturbation_ratio`` stores
  ``avg_paraphrased_loss`` and ``average_perturb_loss`` (per-token averages);
  ``aggregate_eval_stat.py`` (same code in ``utils.py``) — ``get_model_utility`` and
  ``get_forget_quality``. The answer's tokens there include the closing EOS
  (``data_module.py``, ``convert_raw_data_to_model_format`` appends it to the labels).
- open-unlearning (github locuslab/open-unlearning): ``src/evals/metrics/utils.py`` —
  ``evaluate_probability`` (``prob = exp(-avg_loss)``), ``aggregate_to_1D`` (mean over the
  perturbed answers), ``get_forget_quality``; ``src/evals/metrics/memorization.py`` —
  ``probability``, ``probability_w_options``, ``truth_ratio`` (aggregators
  ``closer_to_1_better`` and ``true_better``); ``src/evals/metrics/privacy.py`` — ``ks_test``;
  ``src/evals/metrics/utility.py`` — ``hm_aggregate``; ``configs/eval/tofu_metrics/*.yaml``
  for which answers feed which metric.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy.special import logsumexp
from scipy.stats import hmean, ks_2samp

#: The nine numbers whose harmonic mean is TOFU's model utility, in TOFU's order of sets
#: (``configs/eval/tofu_metrics/model_utility.yaml`` in open-unlearning lists the same nine).
TOFU_UTILITY_COMPONENTS = (
    "retain_probability", "retain_rougeL_recall", "retain_truth_ratio",
    "real_authors_probability", "real_authors_rougeL_recall", "real_authors_truth_ratio",
    "world_facts_probability", "world_facts_rougeL_recall", "world_facts_truth_ratio",
)


def probability_from_nll(mean_nll: float) -> float:
    """``exp(-L)`` for a length-normalised NLL ``L``: TOFU's per-item "Probability" on the
    retain and forget sets (``get_model_utility``: ``np.exp(-avg_gt_loss)``; open-unlearning
    ``evaluate_probability``)."""
    return float(math.exp(-float(mean_nll)))


def normalised_probability(true_mean_nll: float, wrong_mean_nlls: Sequence[float]) -> float:
    """``P_true / (P_true + sum_j P_wrong_j)`` with every ``P = exp(-L)`` length-normalised.

    TOFU uses this for the real-authors and world-facts sets (``get_model_utility``: the true
    answer's ``exp(-avg_gt_loss)`` over the sum of it and every perturbed answer's
    ``exp(-average_perturb_loss)``); open-unlearning's ``probability_w_options`` is the same
    (it adds 1e-10 to the denominator). Computed here in log space,
    ``exp(-L_true - logsumexp([-L_true, -L_1, ..., -L_m]))``: the same number without under/overflow.
    """
    wrong = np.asarray(list(wrong_mean_nlls), dtype=np.float64)
    if wrong.size == 0:
        raise ValueError("normalised_probability needs at least one wrong answer")
    neg = np.concatenate([[-float(true_mean_nll)], -wrong])
    return float(np.exp(neg[0] - logsumexp(neg)))


def truth_ratio(correct_mean_nll: float, perturbed_mean_nlls: Sequence[float]) -> float:
    """Per-item truth ratio ``TR = P_perturbed / P_correct`` (TOFU paper, Maini et al. 2024, eq. for R_truth).

    ``P_perturbed`` is the geometric mean over the perturbed answers of their length-normalised
    probabilities, i.e. ``exp(-mean_j L_j)``: TOFU's ``get_forget_quality`` / ``get_model_utility``
    take ``average_perturb_loss.mean(axis=-1)`` and open-unlearning's ``truth_ratio`` takes
    ``aggregate_to_1D`` (the same mean) before exponentiating. ``P_correct`` is the paraphrased
    answer's for the forget and retain sets and the true answer's for real-authors / world-facts
    (TOFU ``config/eval_everything.yaml``: ``base_answer_key``; open-unlearning
    ``ra_Truth_Ratio.yaml`` / ``wf_Truth_Ratio.yaml`` use ``*_Q_A_Prob``).

    Note the direction: TOFU's aggregation code stores the inverse ``exp(L_pert - L_para) =
    P_correct / P_perturbed`` and open-unlearning stores ``P_perturbed / P_correct``; both then
    aggregate to the same numbers (see the two functions below). This returns the latter.
    """
    pert = np.asarray(list(perturbed_mean_nlls), dtype=np.float64)
    if pert.size == 0:
        raise ValueError("truth_ratio needs at least one perturbed answer")
    return float(math.exp(float(correct_mean_nll) - float(pert.mean())))


def truth_ratio_forget_score(truth_ratios: Sequence[float]) -> Optional[float]:
    """Forget-set aggregate ``mean(min(TR, 1/TR))`` — 1 when the paraphrased and perturbed
    answers are equally likely (open-unlearning ``truth_ratio``, aggregator ``closer_to_1_better``;
    TOFU ``get_model_utility``, ``np.minimum(x, 1/x)``, symmetric in x and 1/x). Computed as
    ``exp(-|log TR|)``."""
    tr = np.asarray(list(truth_ratios), dtype=np.float64)
    if tr.size == 0:
        return None
    return float(np.mean(np.exp(-np.abs(np.log(tr)))))


def truth_ratio_retain_score(truth_ratios: Sequence[float]) -> Optional[float]:
    """Retain / real-authors / world-facts aggregate ``mean(max(0, 1 - TR))`` — high when the
    correct answer is much likelier than the perturbed ones (open-unlearning aggregator
    ``true_better``; TOFU ``get_model_utility``: ``np.maximum(0, 1 - 1/curr_stat_1)`` with
    ``curr_stat_1 = 1/TR``)."""
    tr = np.asarray(list(truth_ratios), dtype=np.float64)
    if tr.size == 0:
        return None
    return float(np.mean(np.maximum(0.0, 1.0 - tr)))


def forget_quality(unlearned_truth_ratios: Sequence[float], retain_truth_ratios: Sequence[float]) -> Dict[str, float]:
    """TOFU forget quality: the p-value of the two-sided two-sample Kolmogorov–Smirnov test
    (``scipy.stats.ks_2samp``, default ``method='auto'``) between the per-item forget-set truth
    ratios of the unlearned model and of the retain model.

    Which statistic is fed: TOFU's ``get_forget_quality`` feeds ``exp(L_pert - L_para) = 1/TR``;
    open-unlearning's ``ks_test`` feeds the stored ``TR`` scores (its unused ``get_forget_quality``
    helper feeds ``1/TR``). The KS statistic depends only on the ranks in the pooled sample and
    ``x -> 1/x`` is strictly monotone on ``x > 0``, so all three give the same p-value; the tests
    check it. Returns ``forget_quality`` (p-value) and ``ks_statistic``.
    """
    a = np.asarray(list(unlearned_truth_ratios), dtype=np.float64)
    b = np.asarray(list(retain_truth_ratios), dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget_quality needs truth ratios from both models")
    res = ks_2samp(a, b)
    return {"forget_quality": float(res.pvalue), "ks_statistic": float(res.statistic)}


def harmonic_mean(values: Sequence[float]) -> float:
    """``scipy.stats.hmean`` with named errors (used by TOFU ``get_model_utility`` and open-unlearning
    ``hm_aggregate``): ``n / sum(1/v)``, and 0 when any value is 0."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("harmonic_mean of no values")
    if np.any(v < 0):
        raise ValueError(f"harmonic_mean is defined for non-negative values, got {v.tolist()}")
    return float(hmean(v))          # 0 when any value is 0


def model_utility(components: Mapping[str, Optional[float]]) -> Dict[str, object]:
    """TOFU model utility: the harmonic mean of the available components among
    ``TOFU_UTILITY_COMPONENTS`` (retain / real-authors / world-facts x probability, ROUGE-L recall,
    truth ratio).

    TOFU and open-unlearning always have all nine; with fewer sets the harmonic mean of those
    present is returned and ``used`` / ``missing`` name them, so a partial utility is never
    mistaken for the full one (``complete`` is True only with all nine). Keys outside the nine are
    ignored. ``model_utility`` is ``None`` when no component is available.
    """
    used: List[str] = [k for k in TOFU_UTILITY_COMPONENTS if components.get(k) is not None]
    missing = [k for k in TOFU_UTILITY_COMPONENTS if k not in used]
    value = harmonic_mean([float(components[k]) for k in used]) if used else None
    return {"model_utility": value, "used": used, "missing": missing, "complete": not missing}
