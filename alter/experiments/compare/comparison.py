"""``alter-train --demo --compare``: every method on the same model and data, one table.

The retain model runs first (its forget-set truth ratios are the reference of forget quality),
then each requested method, each in a fresh worker process (``alter.experiments.compare.worker``). Writes
``compare_table.md``, ``compare_table.csv``, ``compare.json`` (every number, per item too) and
one bar chart per column under ``charts/``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from alter import io as alter_io
from alter.config import AlterConfig
from alter.experiments.compare.degeneration_columns import degeneration_columns
from alter.experiments.compare.settings import ALL_METHODS, CompareSettings
from alter.experiments.compare.table import (columns_for, pareto_front, robustness_markdown, routing_markdown, to_csv,
                                            to_markdown)
from alter.experiments.compare.tuning import average_seeds, floor_of, select, select_muse
from alter.experiments.compare.variants import parse_spec

ALTER_DEFAULTS = "alter_defaults.json"    # AlterConfig's defaults when the folder's runs were made

logger = logging.getLogger(__name__)

KNOWN = set(ALL_METHODS)


def parse_methods(text: Optional[str]) -> List[str]:
    """Comma-separated method specs (``npo``, ``npo@lr=1e-05``, ``alter@seed=1``), normalised."""
    if not text:
        return list(ALL_METHODS)
    specs = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in specs if parse_spec(m).method not in KNOWN]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(ALL_METHODS)}")
    return [parse_spec(m, KNOWN).name for m in specs]


def _run_worker(method: str, settings_path: Path, out: Path, reference: Optional[Path], progress: bool,
                threads: Optional[int]) -> Dict:
    cmd = [sys.executable, "-m", "alter.experiments.compare.worker", "--settings", str(settings_path),
           "--method", method, "--output", str(out)]
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


def _ks_against_retain(results: Dict[str, Dict]) -> None:
    """Fill the KS p-value (forget-set probabilities vs the retain model's) of runs made before the
    retain model was: each run stores its per-item forget probabilities, so the test needs no re-run."""
    ref = (results.get("retain", {}).get("reference_stats") or {}).get("forget_probabilities")
    if not ref:
        return
    from alter.eval.metrics.tofu import forget_quality

    for method, result in results.items():
        probs = (result.get("reference_stats") or {}).get("forget_probabilities")
        if method != "retain" and probs and result["row"].get("forget_probability_ks_p") is None:
            result["row"]["forget_probability_ks_p"] = forget_quality(probs, ref)["forget_quality"]


def _alter_defaults_unchanged(out_dir: Path, resume: bool) -> Dict:
    """``AlterConfig``'s defaults now; on resume, a folder whose runs used other defaults (an upgraded
    ALTER) is refused, since its ``alter`` / ``asymlora`` results would be kept under the same names."""
    now = json.loads(json.dumps(AlterConfig().to_dict()))
    path = out_dir / ALTER_DEFAULTS
    if resume and path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            raise ValueError(f"cannot resume the comparison in {out_dir}: ALTER's defaults changed since its runs "
                             f"({', '.join(changed)}), so its alter/asymlora results are stale; use a new --output "
                             "or delete those methods' JSON files and the folder's alter_defaults.json")
    return now


def _write_sequential(settings: CompareSettings, results: Dict[str, Dict], order: List[str], out_dir: Path,
                      t0: float) -> Dict:
    """The sequential-requests table (:mod:`alter.experiments.compare.sequential`) and its JSON."""
    from alter.experiments.compare.sequential import sequential_markdown

    shown = {m: results[m] for m in order if m in settings.methods or m == "retain"}
    table = sequential_markdown(shown, settings.muse_requests)
    alter_io.atomic_write_bytes(out_dir / "sequential_table.md", (table + "\n").encode())
    summary = {"settings": settings.to_dict(), "runs": {m: r.get("stages") for m, r in shown.items()},
               "seconds": round(time.time() - t0, 1)}
    alter_io.atomic_write_json(out_dir / "compare.json", summary)
    logger.info("\n" + table + "\n")
    logger.info(f"wrote {out_dir / 'sequential_table.md'}")
    return summary


def run_compare(settings: CompareSettings, out_dir, *, progress: bool = True, threads: Optional[int] = None,
                resume: bool = False, tuning: bool = False) -> Dict:
    """Run every method of ``settings`` and write the table.

    Runs that differ only by seed (``alter``, ``alter@seed=1``) are one row of the table (mean and
    sample standard deviation); ``compare.json`` keeps every run. With ``tuning`` (a learning-rate
    sweep, :mod:`alter.experiments.compare.tuning`) the selection rule is applied and ``tuned.json`` written.

    With ``resume``, a method whose result is already under ``out_dir/methods`` from a run with the
    same settings (the method list aside) is kept, not re-run (delete its JSON to re-run it); a
    folder holding other settings is refused."""
    out_dir = Path(out_dir)
    runs = out_dir / "methods"
    settings_path = out_dir / "settings.json"
    if resume and settings_path.is_file():
        previous = json.loads(settings_path.read_text())
        now = json.loads(json.dumps(settings.to_dict()))
        changed = sorted(k for k in set(previous) | set(now) if k != "methods" and previous.get(k) != now.get(k))
        if changed:
            raise ValueError(f"cannot resume the comparison in {out_dir}: its settings differ ({', '.join(changed)})")
    defaults = _alter_defaults_unchanged(out_dir, resume)
    runs.mkdir(parents=True, exist_ok=True)
    alter_io.atomic_write_json(settings_path, settings.to_dict())
    alter_io.atomic_write_json(out_dir / ALTER_DEFAULTS, defaults)
    # the retain model (the reference of forget quality) runs first when asked for, or on the synthetic
    # run always; a TOFU run without it reports no KS p-value (teaching it costs ~10 min on 2 cores)
    with_retain = "retain" in settings.methods or settings.dataset == "synthetic"
    order = (["retain"] if with_retain else []) + [m for m in settings.methods if m != "retain"]
    results: Dict[str, Dict] = {}
    reference = runs / "retain.json"
    t0 = time.time()
    for method in order:
        done = runs / f"{method}.json"
        if resume and done.is_file():
            logger.info(f"[compare] {method}: kept from {done}")
            results[method] = json.loads(done.read_text())
            continue
        logger.info(f"[compare] {method} ...")
        results[method] = _run_worker(method, settings_path, done,
                                      reference if (method != "retain" and with_retain) else None,
                                      progress, threads)
    if settings.muse_requests:
        return _write_sequential(settings, results, order, out_dir, t0)
    # the retain model's own forget quality is against itself: the KS test of a sample with itself
    _ks_against_retain(results)
    for result in results.values():        # loops and stray scripts, from the stored generations
        result["row"].update(degeneration_columns(result))
    runs_rows = [results[m]["row"] for m in order if m in settings.methods]
    rows = average_seeds(runs_rows)
    utility = {"tofu": "retain_rougeL_recall", "muse_news": "knowmem_retain"}.get(settings.dataset, "model_utility")
    efficacy = "verbmem_forget" if settings.dataset == "muse_news" else "forget_rougeL_recall"
    front = pareto_front(rows, efficacy=efficacy, utility=utility)
    front_fq = pareto_front(rows, efficacy="forget_quality", efficacy_higher_is_better=True)
    for row in rows:
        row["pareto"] = row["method"] in front
        row["pareto_forget_quality"] = row["method"] in front_fq
    table = to_markdown(rows)
    # imported here: the module is also run as a command (python -m ...), which a package-level import warns about
    from alter.experiments.compare.robustness_intervals import leak_intervals

    intervals = leak_intervals({m: results[m] for m in order if m in settings.methods or m == "retain"})
    for title, extra in (("Prompt variants (leak 0: as never taught, 1: as taught; in brackets the 95% bootstrap "
                          "interval over the questions)", robustness_markdown(rows, intervals=intervals)),
                         ("Question router: share of each kind of question sent to a forget expert",
                          routing_markdown(rows))):
        if extra:
            table += f"\n\n{title}:\n\n{extra}"
    alter_io.atomic_write_bytes(out_dir / "compare_table.md", (table + "\n").encode())
    alter_io.atomic_write_bytes(out_dir / "compare_table.csv", to_csv(rows).encode())
    from alter.experiments.plots import bar_charts, front_plot
    charts = bar_charts(rows, columns_for(rows), out_dir / "charts")
    if settings.dataset == "muse_news":         # the never-taught model's VerbMem is the floor
        floors = [r["verbmem_forget"] for r in rows if r["method"] == "retain" and r.get("verbmem_forget") is not None]
        axes = {"x": efficacy, "y": utility}
    else:
        floors = [r["never_taught_rougeL_recall"] for r in rows
                  if r["method"] == "finetune" and r.get("never_taught_rougeL_recall") is not None]
        axes = {}
    front_png = front_plot(rows, out_dir / "charts" / "front_forget_vs_retain.png",
                           floor=floors[0] if floors else None, **axes)
    if front_png is not None:
        charts.append(front_png)
    summary = {"settings": settings.to_dict(), "rows": rows, "runs": runs_rows, "pareto_front": front,
               "pareto_front_forget_quality": front_fq,
               "seconds": round(time.time() - t0, 1), "charts": [str(c) for c in charts]}
    if tuning and settings.dataset == "muse_news":
        chosen = select_muse(runs_rows)
        never = next(r for r in runs_rows if r["method"] == "retain")
        summary["tuned"] = {"floor": {k: never[k] for k in ("verbmem_forget", "knowmem_forget")},
                            "rule": "best KnowMem retain (then VerbMem retain) among VerbMem forget and KnowMem "
                            "forget <= the never-taught model's + 0.05, else the lowest VerbMem forget",
                            "selected": chosen, "method_lr": {m: c["lr"] for m, c in chosen.items()}}
        alter_io.atomic_write_json(out_dir / "tuned.json", summary["tuned"])
    elif tuning:
        floor = floor_of(rows)
        if floor is None:
            raise RuntimeError("the sweep needs the finetune row's never-taught ROUGE-L (the floor)")
        chosen = select(runs_rows, floor)
        summary["tuned"] = {"floor": floor, "rule": "best retain ROUGE-L among forget ROUGE-L <= floor + 0.05, "
                            "else the lowest forget ROUGE-L", "selected": chosen,
                            "method_lr": {m: c["lr"] for m, c in chosen.items()}}
        alter_io.atomic_write_json(out_dir / "tuned.json", summary["tuned"])
    alter_io.atomic_write_json(out_dir / "compare.json", summary)
    logger.info("\n" + table + "\n")
    if tuning:
        floor = summary["tuned"]["floor"]
        floor = (", ".join(f"{k} {v:.3f}" for k, v in floor.items()) if isinstance(floor, dict) else f"{floor:.3f}")
        for m, c in summary["tuned"]["selected"].items():
            logger.info(f"[tune] {m}: lr {c['lr']:g} selected ({'reaches' if c['reaches_floor'] else 'does not reach'} "
                        f"the floor {floor} + 0.05)")
        bench = "muse-news" if settings.dataset == "muse_news" else "tofu"
        logger.info(f"[tune] wrote {out_dir / 'tuned.json'}; report with: alter-bench --benchmark {bench} --tuned "
                    f"{out_dir / 'tuned.json'}")
    logger.info(f"Pareto front ({efficacy.replace('_', ' ')} vs {utility.replace('_', ' ')}): {', '.join(front)}")
    logger.info(f"Pareto front (forget quality vs model utility): {', '.join(front_fq)}")
    logger.info(f"wrote {out_dir / 'compare_table.md'}, {out_dir / 'compare_table.csv'}, {out_dir / 'charts'}/")
    return summary
