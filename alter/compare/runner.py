"""``alter-train --demo --compare``: every method on the same model and data, one table.

The retain model runs first (its forget-set truth ratios are the reference of forget quality),
then each requested method, each in a fresh worker process (``alter.compare.worker``). Writes
``compare_table.md``, ``compare_table.csv``, ``compare.json`` (every number, per item too) and
one bar chart per column under ``charts/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from alter import io as alter_io
from alter.compare.settings import ALL_METHODS, CompareSettings
from alter.compare.table import COLUMNS, pareto_front, to_csv, to_markdown

KNOWN = set(ALL_METHODS)


def parse_methods(text: Optional[str]) -> List[str]:
    if not text:
        return list(ALL_METHODS)
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in KNOWN]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(ALL_METHODS)}")
    return methods


def _run_worker(method: str, settings_path: Path, out: Path, reference: Optional[Path], progress: bool,
                threads: Optional[int]) -> Dict:
    cmd = [sys.executable, "-m", "alter.compare.worker", "--settings", str(settings_path), "--method", method,
           "--output", str(out)]
    if reference is not None:
        cmd += ["--reference", str(reference)]
    if threads:
        cmd += ["--threads", str(threads)]
    if not progress:
        cmd.append("--no-progress")
    proc = subprocess.run(cmd, env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(f"method {method!r} failed (exit {proc.returncode}); see its output above")
    return json.loads(out.read_text())


def run_compare(settings: CompareSettings, out_dir, *, progress: bool = True, threads: Optional[int] = None) -> Dict:
    out_dir = Path(out_dir)
    runs = out_dir / "methods"
    runs.mkdir(parents=True, exist_ok=True)
    settings_path = out_dir / "settings.json"
    alter_io.atomic_write_json(settings_path, settings.to_dict())
    order = ["retain"] + [m for m in settings.methods if m != "retain"]
    results: Dict[str, Dict] = {}
    reference = runs / "retain.json"
    t0 = time.time()
    for method in order:
        print(f"[compare] {method} ...", flush=True)
        results[method] = _run_worker(method, settings_path, runs / f"{method}.json",
                                      reference if method != "retain" else None, progress, threads)
    # the retain model's own forget quality is against itself: the KS test of a sample with itself
    rows = [results[m]["row"] for m in order if m in settings.methods]
    front = pareto_front(rows)
    for row in rows:
        row["pareto"] = row["method"] in front
    table = to_markdown(rows)
    alter_io.atomic_write_bytes(out_dir / "compare_table.md", (table + "\n").encode())
    alter_io.atomic_write_bytes(out_dir / "compare_table.csv", to_csv(rows).encode())
    from alter.plots import bar_charts
    charts = bar_charts(rows, COLUMNS, out_dir / "charts")
    summary = {"settings": settings.to_dict(), "rows": rows, "pareto_front": front,
               "seconds": round(time.time() - t0, 1), "charts": [str(c) for c in charts]}
    alter_io.atomic_write_json(out_dir / "compare.json", summary)
    print("\n" + table + "\n")
    print(f"Pareto front (forget ROUGE-L vs model utility): {', '.join(front)}")
    print(f"wrote {out_dir / 'compare_table.md'}, {out_dir / 'compare_table.csv'}, {out_dir / 'charts'}/")
    return summary
