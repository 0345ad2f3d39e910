"""The fair-comparison protocol: a learning-rate sweep per baseline on the tune split, a selection
rule fixed before looking, and seeds averaged into one row.

``alter-bench --benchmark tofu --tune`` runs every baseline at each learning rate of
:data:`TUNE_LRS` on the tune split (forget authors 180-184) and writes ``tuned.json``: per
method, the selected learning rate and every point. ``alter-bench --benchmark tofu --tuned
tuned.json`` then runs the report split (185-189) with those rates, so no method is tuned on
the questions it is scored on.

Selection rule (issue 9, fixed before the sweep ran): per method, the setting with the best retain
ROUGE-L among those whose forget ROUGE-L is at most the never-taught floor + 0.05; when none
reaches that, the setting with the lowest forget ROUGE-L.
"""

from __future__ import annotations

import math
import statistics
from typing import Dict, List, Optional, Sequence

from alter.experiments.compare.variants import parse_spec

# learning rates swept per baseline: around each method's reference rate, shifted where the
# first untuned TOFU run showed which side it fails on (GradDiff and NPO collapsed retain at
# 2e-5: lower; RMU and LoRA did not unlearn at all on the synthetic run: higher)
TUNE_LRS: Dict[str, List[float]] = {
    "graddiff": [5e-6, 1e-5, 2e-5],
    "npo": [5e-6, 1e-5, 2e-5],
    "rmu": [5e-5, 2e-4, 1e-3],
    "lora": [1e-4, 5e-4, 2e-3],
    # the reinforcement starts from a model that already knows the forget set (its loss near 0, small
    # gradients), so its grid sits higher than GradDiff's; not yet swept (docs/method.md §8)
    "task_vector": [1e-5, 5e-5, 2e-4],
}
TUNED_BY_DEFAULT = tuple(TUNE_LRS)
FLOOR_MARGIN = 0.05


def sweep_specs(methods: Sequence[str], method_lr: Dict[str, float]) -> List[str]:
    """``finetune`` (the floor) and every method at each learning rate of its grid."""
    specs = ["finetune"]
    for m in methods:
        if m in ("finetune", "retain"):
            continue
        lrs = TUNE_LRS.get(m)
        if lrs is None:
            if m not in method_lr:
                raise ValueError(f"--tune sweeps baselines' learning rates; {m!r} has none to sweep")
            lrs = [method_lr[m] * f for f in (0.5, 1.0, 2.0)]
        specs += [f"{m}@lr={lr:g}" for lr in lrs]
    return specs


def select(rows: Sequence[Dict], floor: float, margin: float = FLOOR_MARGIN) -> Dict[str, Dict]:
    """Per method, the selected point of a sweep (see the module docstring for the rule)."""
    by_method: Dict[str, List[Dict]] = {}
    for row in rows:
        spec = parse_spec(row["method"])
        if spec.method in ("finetune", "retain") or spec.lr is None:
            continue
        by_method.setdefault(spec.method, []).append(row)
    chosen: Dict[str, Dict] = {}
    for method, points in by_method.items():
        ok = [r for r in points if r["forget_rougeL_recall"] <= floor + margin]
        best = (max(ok, key=lambda r: r["retain_rougeL_recall"]) if ok
                else min(points, key=lambda r: r["forget_rougeL_recall"]))
        chosen[method] = {"lr": parse_spec(best["method"]).lr, "reaches_floor": bool(ok), "row": best,
                          "points": [{"lr": parse_spec(r["method"]).lr, "forget": r["forget_rougeL_recall"],
                                      "retain": r["retain_rougeL_recall"],
                                      "never_taught": r.get("never_taught_rougeL_recall")} for r in points]}
    return chosen


def average_seeds(rows: Sequence[Dict]) -> List[Dict]:
    """Rows that differ only by seed, merged: each number becomes the mean, with ``<key>_sd`` (the
    sample standard deviation) and ``seeds`` (how many). Rows without a twin pass through."""
    groups: Dict[str, List[Dict]] = {}
    for row in rows:
        groups.setdefault(parse_spec(row["method"]).setting, []).append(row)
    out = []
    for setting, group in groups.items():
        if len(group) == 1:
            out.append(dict(group[0]))
            continue
        merged: Dict = {"method": setting, "seeds": len(group)}
        for key in group[0]:
            values = [r.get(key) for r in group]
            if key == "method" or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                continue
            merged[key] = statistics.fmean(values)
            merged[f"{key}_sd"] = statistics.stdev(values)
        out.append(merged)
    return out


def seed_specs(methods: Sequence[str], seeds: int) -> List[str]:
    """Each method spec at seeds 0..n-1 (seed 0 is the spec itself); reference models run once."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    out = []
    for m in methods:
        spec = parse_spec(m)
        out.append(m)
        if spec.method in ("finetune", "retain") or spec.seed is not None:
            continue
        out += [f"{m}@seed={k}" for k in range(1, seeds)]
    return out


def floor_of(rows: Sequence[Dict]) -> Optional[float]:
    """The never-taught ROUGE-L of the taught model (what a perfect unlearner reaches)."""
    for row in rows:
        if row["method"] == "finetune":
            value = row.get("never_taught_rougeL_recall")
            return None if value is None or math.isnan(value) else value
    return None
