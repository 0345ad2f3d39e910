"""Figures: the token-entropy histogram (docs/method.md §2), per-column bar charts, the forget-vs-retain front."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np


def entropy_histogram(groups: Dict[str, Sequence[float]], theta: float, path, *, q: float, bins: int = 60,
                      title: str = "Token entropy of the answer tokens (model before unlearning)") -> Path:
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
    ax.set_ylabel("tokens (log scale)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def bar_charts(rows: Sequence[dict], columns: Sequence[tuple], directory) -> list:
    """One bar chart per (key, title, _) column over the rows' methods; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, title, _ in columns:
        named = [(r["method"], r.get(key)) for r in rows if r.get(key) is not None]
        if not named:
            continue
        names, values = zip(*named)
        if key == "peak_memory_bytes":
            values = [v / 2 ** 30 for v in values]
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.5), dpi=120)
        colors = ["tab:red" if n == "alter" else "tab:gray" for n in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_title(title)
        fig.tight_layout()
        path = directory / f"{key}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def front_plot(rows: Sequence[dict], path, x: str = "forget_rougeL_recall", y: str = "retain_rougeL_recall",
               floor: Optional[float] = None):
    """Every run as a point (forget ROUGE-L, lower is better; retain ROUGE-L, higher is better), one
    colour per method; the points of one method's learning-rate sweep (``npo@lr=...``) are joined
    in order of learning rate, which draws that method's front. The never-taught floor is a
    vertical line. Returns the PNG path (None with no points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alter.experiments.compare.variants import parse_spec

    groups = {}
    for r in rows:
        if r.get(x) is None or r.get(y) is None:
            continue
        spec = parse_spec(r["method"])
        groups.setdefault(spec.method, []).append((spec.lr or 0.0, r[x], r[y], r["method"]))
    if not groups:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.8), dpi=120)
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]   # red is ALTER's alone
    others = iter(palette * 4)
    for method, pts in sorted(groups.items()):
        pts.sort()
        color = "tab:red" if method == "alter" else next(others)
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", color=color, label=method, zorder=3,
                linewidth=1 if len(pts) > 1 else 0)
        for lr, fx, fy, _ in pts:
            if lr:
                ax.annotate(f"{lr:g}", (fx, fy), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if floor is not None:
        ax.axvline(floor, color="tab:blue", linestyle="--", linewidth=1, label="never-taught floor")
    ax.legend(loc="best", fontsize=7)
    ax.margins(0.15)
    labels = {"forget_rougeL_recall": "forget ROUGE-L recall", "retain_rougeL_recall": "retain ROUGE-L recall",
              "verbmem_forget": "VerbMem forget (ROUGE-L F1)", "knowmem_retain": "KnowMem retain (ROUGE-L recall)"}
    ax.set_xlabel(f"{labels.get(x, x)} (lower is better, down to the floor)")
    ax.set_ylabel(f"{labels.get(y, y)} (higher is better)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
