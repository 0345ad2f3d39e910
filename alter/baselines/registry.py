"""Every method ALTER's tools run, by name: the reference models, the baselines, ALTER and its ablation.

One registry for :func:`alter.baselines.run_unlearning` (:func:`resolve_method`), the CLI
(``alter-train --method``), the comparison (``alter-bench --methods``) and their help text. Each
entry says how the method is trained:

- ``reference``: ``finetune`` (the model before unlearning) and ``retain`` (taught the retain set
  only: what a perfect unlearner would match), classes of :mod:`alter.baselines`;
- ``baseline``: an unlearning baseline, a class of :mod:`alter.baselines` run by
  :func:`alter.baselines.run_unlearning`;
- ``alter``: trained by :class:`alter.train.AlterTrainer` with ``AlterConfig`` overrides:
  ``alter`` with none, ``asymlora`` (the entropy-free ablation, docs/method.md §5) with
  ``token_entropy=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Type, Union

from alter.baselines.base import Method
from alter.baselines.finetune import FineTune
from alter.baselines.ga import GradientAscent
from alter.baselines.graddiff import GradDiff
from alter.baselines.kl import KLMin
from alter.baselines.lora import LoRAGradDiff
from alter.baselines.npo import NPO
from alter.baselines.npo_gd import NPOGradDiff
from alter.baselines.npo_kl import NPOKL
from alter.baselines.retain import RetainOnly
from alter.baselines.rl import RandomLabels
from alter.baselines.rmu import RMU
from alter.baselines.task_vector import TaskVector
from alter.baselines.whp import WHP


@dataclass(frozen=True)
class MethodInfo:
    name: str
    kind: str                                   # "reference", "baseline" or "alter"
    summary: str
    alter_config: Mapping[str, object] = field(default_factory=dict)   # kind "alter": AlterConfig overrides
    cls: Optional[Type[Method]] = None          # kinds "reference" and "baseline": what run_unlearning runs


def _class_entry(cls: Type[Method], summary: str) -> MethodInfo:
    kind = "reference" if cls.name in ("finetune", "retain") else "baseline"
    return MethodInfo(cls.name, kind, summary, cls=cls)


REGISTRY: Dict[str, MethodInfo] = {m.name: m for m in (
    _class_entry(GradientAscent, "gradient ascent on the forget set"),
    _class_entry(GradDiff, "gradient ascent on forget + descent on retain"),
    _class_entry(KLMin, "gradient ascent on forget + KL to the original model on retain"),
    _class_entry(NPO, "negative preference optimisation on the forget set"),
    _class_entry(NPOGradDiff, "NPO + descent on retain"),
    _class_entry(NPOKL, "NPO + KL to the original model on retain"),
    _class_entry(RandomLabels, "fine-tune the forget questions on random answers"),
    _class_entry(RMU, "steer a middle layer's activations on forget text to a random direction"),
    _class_entry(LoRAGradDiff, "GradDiff through a single LoRA adapter"),
    _class_entry(TaskVector, "learn the forget set further, then subtract that change (task-vector negation)"),
    _class_entry(WHP, "Who's Harry Potter without anchored terms: fine-tune the forget inputs on generic labels "
                      "argmax(v_0 - alpha relu(v_reinforced - v_0))"),
    _class_entry(FineTune, "the model before unlearning (taught forget + retain)"),
    _class_entry(RetainOnly, "taught the retain set only (what a perfect unlearner matches)"),
    MethodInfo("asymlora", "alter", "ALTER without token entropy (its ablation: top-1 routing for every token)",
               {"token_entropy": False}),
    MethodInfo("alter", "alter", "ALTER: asymmetric LoRA, token-entropy routing, hinge forget loss"),
)}

METHODS: Dict[str, Type[Method]] = {n: m.cls for n, m in REGISTRY.items() if m.cls is not None}
"""name -> class of every method :func:`alter.baselines.run_unlearning` runs."""

BASELINE_NAMES = tuple(METHODS)
"""Every name :func:`alter.baselines.run_unlearning` accepts."""

REFERENCE_NAMES = tuple(n for n, m in REGISTRY.items() if m.kind == "reference")
BASELINES = tuple(n for n, m in REGISTRY.items() if m.kind == "baseline")
UNLEARNING_NAMES = BASELINES
"""The unlearning baselines (those with a forget loss)."""
ALTER_NAMES = tuple(n for n, m in REGISTRY.items() if m.kind == "alter")

# the comparison's order: the reference models, the baselines, then ALTER's ablation and ALTER
ALL_METHODS: List[str] = ["finetune", "retain"] + list(BASELINES) + ["asymlora", "alter"]
# what alter-train --method trains (a reference model is not an unlearning method)
TRAINABLE = ("alter", "asymlora") + BASELINES


def method_info(name: str) -> MethodInfo:
    """The registry entry of ``name`` (case-insensitive); a clear error listing the known names."""
    key = str(name).strip().lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(ALL_METHODS)}")
    return REGISTRY[key]


def help_text(names=TRAINABLE) -> str:
    """``name: summary`` for the CLI help."""
    return "; ".join(f"{n}: {REGISTRY[n].summary}" for n in names)


def resolve_method(method: Union[str, Method], method_kwargs: Optional[dict] = None) -> Method:
    """A method instance from a registry name (plus its hyperparameters) or an instance."""
    kwargs = dict(method_kwargs or {})
    if isinstance(method, Method):
        if kwargs:
            raise ValueError("method_kwargs apply to a method given by name; set them on the instance instead")
        return method
    if not isinstance(method, str):
        raise ValueError(f"method must be a name or an UnlearningMethod instance, got {type(method).__name__}")
    key = method.strip().lower()
    if key in ALTER_NAMES:
        raise ValueError(f"{method!r} is ALTER's own method, not a baseline: train it with alter.train.AlterTrainer "
                         "(asymlora: AlterConfig(token_entropy=False)). Baselines: " + ", ".join(BASELINE_NAMES))
    if key not in METHODS:
        raise ValueError(f"unknown unlearning method {method!r}; known: {', '.join(BASELINE_NAMES)} "
                         "(and 'alter' / 'asymlora' through alter.train.AlterTrainer)")
    cls = METHODS[key]
    fields = sorted(cls.__dataclass_fields__)
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(f"method {key!r} has no hyperparameter {', '.join(unknown)}; it has: "
                         f"{', '.join(fields) or '(none)'}")
    return cls(**kwargs)
