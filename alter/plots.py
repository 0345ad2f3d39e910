"""Figures: the token-entropy histogram with the threshold marked (ALTER_SPEC section 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np


def entropy_histogram(groups: Dict[str, Sequence[float]], theta: float, path, *, q: float, bins: int = 60,
                      title: str = "Token entropy of the answer tokens (base model)") -> Path:
    """One histogram per group (e.g. forget / retain answers), a vertical line at theta; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    finite = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in groups.values()]
    upper = max([float(v.max()) for v in finite if v.size] + [theta, 1e-3])
    edges = np.linspace(0.0, upper * 1.02, bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for (name, _), values in zip(groups.items(), finite):
        if values.size:
            frac_high = float((values >= theta).mean())
            ax.hist(values, bins=edges, alpha=0.55, label=f"{name} (n={values.size}, {frac_high:.0%} high)")
    ax.axvline(theta, color="black", linestyle="--", linewidth=1.5, label=f"theta = {theta:.3f}")
    ax.set_xlabel(f"Tsallis entropy S_q (q = {q:g}) of the distribution predicting the token")
    ax.set_ylabel("tokens")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
