"""Pure metric functions: numbers in, numbers out, no model. Each docstring names its source."""

from alter.eval.metrics.choice import choice_accuracy, choice_predictions, format_mc_prompt
from alter.eval.metrics.fluency import fluency_proxy_score, ngram_repetition_rate, score_summary
from alter.eval.metrics.mia import extraction_strength, membership_auc, min_k_score, privleak
from alter.eval.metrics.text import (average_similarity_gap, bleu, rouge_l_f1, rouge_l_recall,
                                     rouge_scores)
from alter.eval.metrics.tofu import (TOFU_UTILITY_COMPONENTS, forget_quality, harmonic_mean,
                                     model_utility, normalised_probability, probability_from_nll,
                                     truth_ratio, truth_ratio_forget_score, truth_ratio_retain_score)

__all__ = [
    "TOFU_UTILITY_COMPONENTS", "average_similarity_gap", "bleu", "choice_accuracy", "choice_predictions",
    "extraction_strength", "fluency_proxy_score", "forget_quality", "format_mc_prompt", "harmonic_mean",
    "membership_auc", "min_k_score", "model_utility", "ngram_repetition_rate", "normalised_probability",
    "privleak", "probability_from_nll", "rouge_l_f1", "rouge_l_recall", "rouge_scores", "score_summary",
    "truth_ratio", "truth_ratio_forget_score", "truth_ratio_retain_score",
]
