"""The fair-comparison protocol: a learning-rate sweep per baseline on the tune split, a selection
rule fixed before looking, and seeds averaged into one row.

``alter-bench --benchmark tofu --tune`` runs every baseline at each learning rate of
:data:`TUNE_LRS` on the tune split (forget authors 180-184) and writes ``tuned.json``: per
method, the selected learning rate and every point. ``alter-bench --benchmark tofu --tuned
tuned.json`` then runs the report split (185-189) with those rates, so no method is tuned on
the questions it is scored on. ``--benchmark muse-news`` does the same on the article folds with
:data:`MUSE_TUNE_LRS` and :func:`select_muse`.

Selection rule (issue 9, fixed before the sweep ran): per method, the setting with the best retain
ROUGE-L among those whose forget ROUGE-L is at most the never-taught floor + 0.05; when none
reaches that, the setting with the lowest forget ROUGE-L.

MUSE-News (fixed before its sweep ran): the floor is the never-taught model's (``retain`` row) VerbMem
forget and KnowMem forget; per method, the setting with the best KnowMem retain (then VerbMem retain)
among those within floor + 0.05 on both; when none is, the setting with the lowest VerbMem forget.
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
    # the rate of WHP's fine-tune on its fixed generic labels (its reinforcement keeps its own 5e-5): descent
    # towards bounded targets does not run away as ascent does, so the grid starts at the runner's default
    # 1e-5 and reaches a decade above it; not yet swept
    "whp": [1e-5, 3e-5, 1e-4],
}
# MUSE-News (text windows, 3 epochs over ~50 windows of ~130 tokens): two rates per baseline on the side
# the untuned run at the TOFU-selected rates showed each failing on (report fold, docs/benchmarks/muse_news.md):
# GradDiff and NPO forgot too little (higher), RMU barely moved the text (higher), LoRA collapsed (lower)
MUSE_TUNE_LRS: Dict[str, List[float]] = {
    "graddiff": [5e-5, 1e-4],
    "npo": [2e-5, 5e-5],
    "rmu": [5e-3, 2e-2],
    "lora": [2e-4, 5e-4],
    # the reinforcement learns text the taught model already reproduces (small gradients): TOFU's grid's
    # upper half
    "task_vector": [5e-5, 2e-4],
    # GradDiff and NPO needed rates above their TOFU grids on these windows: WHP's TOFU grid's upper two
    "whp": [3e-5, 1e-4],
}
TUNED_BY_DEFAULT = tuple(TUNE_LRS)
MUSE_TUNED_BY_DEFAULT = tuple(MUSE_TUNE_LRS)
FLOOR_MARGIN = 0.05


def sweep_specs(methods: Sequence[str], method_lr: Dict[str, float], dataset: str = "tofu") -> List[str]:
    """The reference rows (``finetune``; MUSE-News also ``retain``, its floor) and every method at each
    learning rate of its grid (:data:`TUNE_LRS`, or :data:`MUSE_TUNE_LRS` for ``dataset="muse_news"``)."""
    muse = dataset == "muse_news"
    grid = MUSE_TUNE_LRS if muse else TUNE_LRS
    specs = ["retain", "finetune"] if muse else ["finetune"]
    for m in methods:
        if m in ("finetune", "retain"):
            continue
        lrs = grid.get(m)
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


def select_muse(rows: Sequence[Dict], margin: float = FLOOR_MARGIN) -> Dict[str, Dict]:
    """Per method, the selected point of a MUSE-News sweep (module docstring); ``rows`` hold the ``retain``
    row (the never-taught floor). Raises ValueError without it."""
    never = next((r for r in rows if r["method"] == "retain"), None)
    if never is None or never.get("verbmem_forget") is None or never.get("knowmem_forget") is None:
        raise ValueError("the MUSE-News sweep needs the never-taught model's row (method 'retain') as its floor")
    verb_floor, know_floor = never["verbmem_forget"], never["knowmem_forget"]

    def retain_key(r):
        return (r.get("knowmem_retain") or 0.0, r.get("verbmem_retain") or 0.0)

    by_method: Dict[str, List[Dict]] = {}
    for row in rows:
        spec = parse_spec(row["method"])
        if spec.method not in ("finetune", "retain") and spec.lr is not None:
            by_method.setdefault(spec.method, []).append(row)
    chosen: Dict[str, Dict] = {}
    for method, points in by_method.items():
        ok = [r for r in points if r["verbmem_forget"] <= verb_floor + margin
              and r["knowmem_forget"] <= know_floor + margin]
        best = max(ok, key=retain_key) if ok else min(points, key=lambda r: r["verbmem_forget"])
        chosen[method] = {"lr": parse_spec(best["method"]).lr, "reaches_floor": bool(ok), "row": best,
                          "points": [{"lr": parse_spec(r["method"]).lr, **{k: r.get(k) for k in (
                              "verbmem_forget", "knowmem_forget", "knowmem_retain", "verbmem_retain",
                              "privleak", "fluency_mean")}} for r in points]}
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
