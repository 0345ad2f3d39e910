"""The comparison table in the shape of the paper's tables: one row per method, markdown and CSV."""

from __future__ import annotations

import csv
import io
from typing import Dict, List, Optional, Sequence, Tuple

# (key in a result row, column title, format); arrows say which direction is better
COLUMNS = [
    ("forget_rougeL_recall", "forget ROUGE-L ↓", "{:.3f}"),
    ("forget_probability", "forget prob. ↓", "{:.3f}"),
    ("forget_quality", "forget quality ↑", "{:.3g}"),
    ("model_utility", "model utility ↑", "{:.3f}"),
    ("retain_rougeL_recall", "retain ROUGE-L ↑", "{:.3f}"),
    ("fluency_mean", "fluency proxy ↑", "{:.2f}"),
    ("trainable_parameters", "trainable params", "{:,}"),
    ("train_seconds", "wall time (s)", "{:.0f}"),
    ("peak_memory_bytes", "peak memory (GiB)", "{:.2f}"),
]

# the TOFU benchmark's columns (alter-bench --benchmark tofu): trained and reworded questions, the
# never-taught floor, general knowledge, and the KS test of per-item forget probabilities
TOFU_COLUMNS = [
    ("forget_rougeL_recall", "forget ROUGE-L ↓", "{:.3f}"),
    ("forget_reworded_rougeL_recall", "forget reworded ↓", "{:.3f}"),
    ("forget_probability", "forget prob. ↓", "{:.3f}"),
    ("retain_rougeL_recall", "retain ROUGE-L ↑", "{:.3f}"),
    ("retain_reworded_rougeL_recall", "retain reworded ↑", "{:.3f}"),
    ("never_taught_rougeL_recall", "never-taught ROUGE-L", "{:.3f}"),
    ("world_facts_accuracy", "world facts acc.", "{:.3f}"),
    ("real_authors_accuracy", "real authors acc.", "{:.3f}"),
    ("forget_probability_ks_p", "KS p (forget prob. vs retain)", "{:.3g}"),
    ("fluency_mean", "fluency proxy ↑", "{:.2f}"),
    ("forget_degenerate", "degenerate forget answers ↓", "{:.2f}"),
    ("train_seconds", "wall time (s)", "{:.0f}"),
    ("peak_memory_bytes", "peak memory (GiB)", "{:.2f}"),
]


# the MUSE-News benchmark's columns (alter-bench --benchmark muse-news): MUSE's metrics on the forget fold,
# the retain side, general knowledge, the fluency of continuations
MUSE_COLUMNS = [
    ("verbmem_forget", "VerbMem forget", "{:.3f}"),
    ("knowmem_forget", "KnowMem forget", "{:.3f}"),
    ("privleak", "PrivLeak", "{:+.1f}"),
    ("knowmem_retain", "KnowMem retain ↑", "{:.3f}"),
    ("verbmem_retain", "VerbMem retain ↑", "{:.3f}"),
    ("world_facts_accuracy", "world facts acc.", "{:.3f}"),
    ("real_authors_accuracy", "real authors acc.", "{:.3f}"),
    ("fluency_mean", "fluency proxy ↑", "{:.2f}"),
    ("verbmem_forget_degenerate", "degenerate continuations ↓", "{:.2f}"),
    ("unlearn_steps", "steps", "{:.0f}"),
    ("train_seconds", "wall time (s)", "{:.0f}"),
    ("peak_memory_bytes", "peak memory (GiB)", "{:.2f}"),
]


def columns_for(rows: Sequence[Dict]) -> List:
    if any("verbmem_forget" in r for r in rows):
        return MUSE_COLUMNS
    return TOFU_COLUMNS if any("never_taught_rougeL_recall" in r for r in rows) else COLUMNS


def _cell(row: Dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    scale = 2 ** -30 if key == "peak_memory_bytes" else 1
    if key == "trainable_parameters":
        value = int(value)                 # a count: "5,379,840", not "5,379,840.0"
    text = fmt.format(value * scale)
    sd = row.get(f"{key}_sd")
    if sd is not None and key != "trainable_parameters":
        text += " ± " + fmt.format(sd * scale)
    return text


def to_markdown(rows: Sequence[Dict]) -> str:
    COLUMNS = columns_for(rows)
    head = "| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    body = ["| " + row["method"] + (f" ({row['seeds']} seeds)" if row.get("seeds") else "") + " | " + " | ".join(_cell(row, k, f) for k, _, f in COLUMNS) + " |" for row in rows]
    return "\n".join([head, rule] + body)


def to_csv(rows: Sequence[Dict]) -> str:
    keys = ["method"] + [k for k, _, _ in columns_for(rows)] + ["forget_truth_ratio", "privleak", "fluency_var",
                                                      "total_seconds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in keys})
    return buf.getvalue()


def pareto_front(rows: Sequence[Dict], efficacy: str = "forget_rougeL_recall", utility: str = "model_utility",
                 skip: Sequence[str] = ("finetune", "retain"), efficacy_higher_is_better: bool = False) -> List[str]:
    """Methods not dominated in (efficacy, higher model utility); efficacy is lower-is-better (forget
    ROUGE-L) unless ``efficacy_higher_is_better`` (forget quality)."""
    sign = -1.0 if efficacy_higher_is_better else 1.0
    pts = [(r["method"], r.get(efficacy), r.get(utility)) for r in rows if r["method"].split("@")[0] not in skip]
    pts = [(name, sign * f, u) for name, f, u in pts if f is not None and u is not None]
    front = []
    for name, f, u in pts:
        dominated = any((f2 <= f and u2 >= u) and (f2 < f or u2 > u) for _, f2, u2 in pts)
        if not dominated:
            front.append(name)
    return front


def robustness_markdown(rows: Sequence[Dict], taught: str = "finetune", never: str = "retain",
                        intervals: Optional[Dict[str, Dict[str, Tuple[float, float]]]] = None) -> str:
    """The robustness table (alter.eval.robustness), one row per prompt variant: per method, the forget leak
    ``(method - never) / (taught - never)`` of ROUGE-L recall (0: as never taught, 1: as taught) and the
    retain change ``method - taught``; empty without the taught and never-taught rows. ``intervals``
    (``{method: {variant: (low, high)}}``, :func:`alter.experiments.compare.robustness_intervals.leak_intervals`)
    adds each leak's 95% bootstrap interval over the questions."""
    by = {r["method"]: r for r in rows}
    if taught not in by or never not in by:
        return ""
    variants = [k.split(":", 1)[1] for k in by[taught] if k.startswith("robust_forget:") and not k.endswith("_sd")]
    if not variants:
        return ""
    intervals = intervals or {}
    t, n = by[taught], by[never]
    methods = [r for r in rows if r["method"] not in (taught, never)]
    names = [r["method"] + (f" ({r['seeds']} seeds)" if r.get("seeds") else "") for r in methods]
    head = "| variant | " + " | ".join(f"{m}: forget leak" + (" [95% interval]" if r["method"] in intervals else "")
                                      for m, r in zip(names, methods)) + " | " + \
        " | ".join(f"{m}: retain Δ" for m in names) + " |"
    lines = [head, "|---" * (2 * len(methods) + 1) + "|"]
    for v in variants:
        cells = []
        fk, rk = f"robust_forget:{v}", f"robust_retain:{v}"
        span = (t.get(fk) or 0.0) - (n.get(fk) or 0.0)
        for r in methods:
            if r.get(fk) is None or span <= 1e-6:
                cells.append("-")
                continue
            cell = f"{(r[fk] - n[fk]) / span:.2f}"
            bounds = intervals.get(r["method"], {}).get(v)
            cells.append(cell + (f" [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds is not None else ""))
        for r in methods:
            cells.append("-" if r.get(rk) is None or t.get(rk) is None else f"{r[rk] - t[rk]:+.3f}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def routing_markdown(rows: Sequence[Dict]) -> str:
    """The question router's confusion per question kind: the share routed to a forget expert (and, for
    forget questions, to its own author's expert); rows of methods with a question router only."""
    kinds = []
    for r in rows:
        kinds += [k.split(":", 1)[1] for k in r if k.startswith("routed_forget:") and not k.endswith("_sd")
                  and k.split(":", 1)[1] not in kinds]
    if not kinds:
        return ""
    head = "| method | " + " | ".join(f"{k} → forget" for k in kinds) + " |"
    lines = [head, "|---" * (len(kinds) + 1) + "|"]
    for r in rows:
        if not any(f"routed_forget:{k}" in r for k in kinds):
            continue
        cells = []
        for k in kinds:
            v, own = r.get(f"routed_forget:{k}"), r.get(f"routed_own:{k}")
            cells.append("-" if v is None else f"{v:.3f}" + (f" (own {own:.3f})" if own is not None else ""))
        name = r["method"] + (f" ({r['seeds']} seeds)" if r.get("seeds") else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
