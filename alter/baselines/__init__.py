"""Unlearning baselines of the ALTER paper, all run by one shared runner (docs/method.md §8).

    from alter.baselines import run_unlearning, METHODS
    result = run_unlearning("npo_gd", model, tokenizer, forget, retain, output_dir="runs/npo_gd")
    result.model, result.report.to_dict()

Methods (``METHODS``): ``ga``, ``graddiff``, ``kl``, ``npo``, ``npo_gd``, ``npo_kl``, ``rl``,
``rmu``, ``lora`` (single LoRA + GradDiff), ``task_vector``, ``whp`` (Who's Harry Potter without
anchored terms), and the two reference models ``finetune`` (learns forget + retain: the model to
unlearn from) and ``retain`` (retain only: the gold standard). Each
method's module states its formula, defaults and source. ``alter`` / ``asymlora`` are ALTER
itself: :class:`alter.train.AlterTrainer`.
"""

from alter.baselines.base import Method, Reference, SupervisedMethod, UnlearningMethod
from alter.baselines.registry import BASELINE_NAMES, METHODS, UNLEARNING_NAMES, resolve_method
from alter.baselines.report import UnlearningReport, UnlearningResult
from alter.baselines.runner import UnlearningRun, run_unlearning

__all__ = ["BASELINE_NAMES", "METHODS", "Method", "Reference", "SupervisedMethod", "UNLEARNING_NAMES",
           "UnlearningMethod", "UnlearningReport", "UnlearningResult", "UnlearningRun", "resolve_method",
           "run_unlearning"]
