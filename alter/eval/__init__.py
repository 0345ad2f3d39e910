"""Evaluation of unlearning (docs/method.md §9): TOFU, multiple choice (WMDP / MMLU),
continuations (MUSE / Harry Potter), a fluency proxy, and efficiency.

Pure metrics live in ``alter.eval.metrics``; model-facing, batched functions here work with any
Hugging-Face-like causal LM (``model(input_ids=, attention_mask=)`` -> ``.logits`` and
``model.generate(...)``) and encode text with ``alter.data.prompts`` exactly as training does.
"""

from alter.eval.efficiency import EfficiencyRecord, measure
from alter.eval.evaluators import (evaluate_continuation, evaluate_fluency, evaluate_mc, evaluate_qa,
                                   evaluate_tofu)
from alter.eval.batch_generation import generate_answers, generate_token_ids
from alter.eval.scoring import answer_log_likelihoods, encode_pairs, next_token_logprobs, score_encoded

__all__ = [
    "EfficiencyRecord", "answer_log_likelihoods", "encode_pairs", "evaluate_continuation", "evaluate_fluency",
    "evaluate_mc", "evaluate_qa", "evaluate_tofu", "generate_answers", "generate_token_ids", "measure",
    "next_token_logprobs", "score_encoded",
]
