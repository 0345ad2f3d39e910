"""Method specs of the comparison: a method name with optional overrides, ``graddiff@lr=1e-05@seed=1``.

A spec names one run: the method, and the unlearning learning rate (``lr``: the baseline's
learning rate, or ALTER's ``lr_phase2``), the unlearning length (``epochs``: a baseline's epochs
over the forget set, or ALTER's ``phase2_epochs``) and the unlearning seed (``seed``: the order of
the forget/retain batches and the adapter's initialisation) it runs with. The teaching seed and the
data stay those of the comparison's settings, so every spec starts from the same taught model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

KEYS = ("lr", "epochs", "seed")


@dataclass(frozen=True)
class MethodSpec:
    method: str
    lr: Optional[float] = None
    seed: Optional[int] = None
    epochs: Optional[float] = None

    @property
    def name(self) -> str:
        """The spec as text (the row label and the result file's stem)."""
        text = self.method
        if self.lr is not None:
            text += f"@lr={self.lr:g}"
        if self.epochs is not None:
            text += f"@epochs={self.epochs:g}"
        if self.seed is not None:
            text += f"@seed={self.seed}"
        return text

    @property
    def setting(self) -> str:
        """The spec without its seed: runs that differ only by seed share it (and are averaged)."""
        return MethodSpec(self.method, self.lr, epochs=self.epochs).name


def parse_spec(text: str, known=None) -> MethodSpec:
    """``"npo@lr=1e-5@seed=2"`` -> ``MethodSpec("npo", 1e-5, 2)``; a clear error on anything else."""
    parts = [p.strip() for p in text.strip().lower().split("@")]
    method, values = parts[0], {}
    if known is not None and method not in known:
        raise ValueError(f"unknown method {method!r} in {text!r}; known: {', '.join(known)}")
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"method spec {text!r}: {part!r} is not one of {', '.join(k + '=VALUE' for k in KEYS)}")
        if key in values:
            raise ValueError(f"method spec {text!r}: {key} given twice")
        try:
            values[key] = int(value) if key == "seed" else float(value)
        except ValueError:
            raise ValueError(f"method spec {text!r}: {key}={value!r} is not a number") from None
        if key != "seed" and not values[key] > 0:
            raise ValueError(f"method spec {text!r}: {key} must be positive")
    if method in ("finetune", "retain") and values:
        raise ValueError(f"method spec {text!r}: the reference model {method!r} takes no lr or seed")
    return MethodSpec(method, values.get("lr"), values.get("seed"), values.get("epochs"))
