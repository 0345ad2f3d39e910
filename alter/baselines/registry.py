"""Every baseline by name, and the one lookup that turns a name (or an instance) into a method.

``alter`` and ``asymlora`` are not baselines: they are ALTER itself and its entropy-free ablation,
trained by :class:`alter.train.AlterTrainer`; :mod:`alter.methods` is the registry of all of them.
"""

from __future__ import annotations

from typing import Dict, Optional, Type, Union

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

METHODS: Dict[str, Type[Method]] = {cls.name: cls for cls in (
    GradientAscent, GradDiff, KLMin, NPO, NPOGradDiff, NPOKL, RandomLabels, RMU, LoRAGradDiff, FineTune, RetainOnly)}
"""name -> class of every method :func:`alter.baselines.run_unlearning` runs."""

BASELINE_NAMES = tuple(METHODS)
"""Every name :func:`alter.baselines.run_unlearning` accepts."""

UNLEARNING_NAMES = tuple(n for n in METHODS if n not in ("finetune", "retain"))
"""The unlearning baselines (those with a forget loss)."""

ALTER_NAMES = ("alter", "asymlora")     # named here only to point a misdirected call to the right trainer


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
