"""Every method ALTER's tools run, by name: the reference models, the baselines, ALTER and its ablation.

One registry for the CLI (``alter-train --method``), the comparison (``--methods``) and their help
text. Each entry says how the method is trained:

- ``reference``: ``finetune`` (the model before unlearning) and ``retain`` (taught the retain set
  only: what a perfect unlearner would match), trained by :mod:`alter.baselines`;
- ``baseline``: an unlearning baseline of :mod:`alter.baselines.registry`, trained by
  :func:`alter.baselines.run_unlearning`;
- ``alter``: trained by :class:`alter.train.AlterTrainer` with ``AlterConfig`` overrides:
  ``alter`` with none, ``asymlora`` (the entropy-free ablation, docs/method.md §5) with
  ``token_entropy=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping

from alter.baselines.registry import METHODS as BASELINE_CLASSES


@dataclass(frozen=True)
class MethodInfo:
    name: str
    kind: str                                   # "reference", "baseline" or "alter"
    summary: str
    alter_config: Mapping[str, object] = field(default_factory=dict)   # kind "alter": AlterConfig overrides


SUMMARIES = {
    "finetune": "the model before unlearning (taught forget + retain)",
    "retain": "taught the retain set only (what a perfect unlearner matches)",
    "ga": "gradient ascent on the forget set",
    "graddiff": "gradient ascent on forget + descent on retain",
    "kl": "gradient ascent on forget + KL to the original model on retain",
    "npo": "negative preference optimisation on the forget set",
    "npo_gd": "NPO + descent on retain",
    "npo_kl": "NPO + KL to the original model on retain",
    "rl": "fine-tune the forget questions on random answers",
    "rmu": "steer a middle layer's activations on forget text to a random direction",
    "lora": "GradDiff through a single LoRA adapter",
}


def _summary(cls) -> str:
    return SUMMARIES.get(cls.name, cls.__name__)


REGISTRY: Dict[str, MethodInfo] = {}
for _name, _cls in BASELINE_CLASSES.items():
    REGISTRY[_name] = MethodInfo(_name, "reference" if _name in ("finetune", "retain") else "baseline", _summary(_cls))
REGISTRY["asymlora"] = MethodInfo("asymlora", "alter", "ALTER without token entropy (its ablation: top-1 routing "
                                  "for every token)", {"token_entropy": False})
REGISTRY["alter"] = MethodInfo("alter", "alter", "ALTER: asymmetric LoRA, token-entropy routing, hinge forget loss")

REFERENCE_NAMES = tuple(n for n, m in REGISTRY.items() if m.kind == "reference")
BASELINES = tuple(n for n, m in REGISTRY.items() if m.kind == "baseline")
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
    """``name (summary)`` for the CLI help."""
    return "; ".join(f"{n}: {REGISTRY[n].summary}" for n in names)
