"""How sure the robustness table's leaks are: a bootstrap interval per method and variant.

The TOFU benchmark asks ``eval_robustness`` forget questions per prompt variant (12 by default); a leak
of 0.16 on 12 questions is not a leak of 0.16 in general. Each method's result keeps every answer's
ROUGE-L recall (``robustness_scores``, per side and variant); :func:`leak_intervals` resamples the
questions (paired across the taught, never-taught and method models, seeds averaged per question) with
:func:`alter.eval.robustness.leak_interval` and the table prints the interval next to each leak.

Results written before the scores were kept hold only the generations; this module's command scores them
again against the true answers (the same prompts and answers as the benchmark, rebuilt from its settings)
and adds ``robustness_scores`` to each method's JSON, then prints the table with intervals::

    python -m alter.experiments.compare.robustness_intervals alter_runs/tofu-report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from alter import io as alter_io
from alter.eval.robustness import leak_interval
from alter.experiments.compare.variants import parse_spec


def leak_intervals(results: Dict[str, Dict], taught: str = "finetune",
                   never: str = "retain") -> Dict[str, Dict[str, Tuple[float, float]]]:
    """``{row name: {variant: (low, high)}}`` for every method result that kept ``robustness_scores``;
    runs of one setting that differ only by seed are one row (the name :func:`average_seeds` gives it)."""
    t = (results.get(taught) or {}).get("robustness_scores")
    n = (results.get(never) or {}).get("robustness_scores")
    if not t or not n:
        return {}
    groups: Dict[str, List[Dict]] = {}
    for name, result in results.items():
        if name in (taught, never) or not result.get("robustness_scores"):
            continue
        groups.setdefault(parse_spec(name).setting, []).append(result["robustness_scores"])
    out: Dict[str, Dict[str, Tuple[float, float]]] = {}
    for setting, runs in groups.items():
        row = setting if len(runs) > 1 else next(k for k, r in results.items()
                                                 if r.get("robustness_scores") is runs[0])
        cells = {}
        for variant, taught_scores in t.get("forget", {}).items():
            never_scores = n.get("forget", {}).get(variant)
            per_run = [r.get("forget", {}).get(variant) for r in runs]
            if never_scores is None or any(p is None for p in per_run):
                continue
            bounds = leak_interval(per_run, taught_scores, never_scores)
            if bounds is not None:
                cells[variant] = bounds
        if cells:
            out[row] = cells
    return out


def rescore_folder(folder: Path) -> Dict[str, Dict]:
    """Add ``robustness_scores`` to every method JSON of a TOFU benchmark folder that has generations but
    no scores (atomically), and return every method's result."""
    from transformers import AutoTokenizer

    from alter.eval.metrics.text import rouge_l_recall
    from alter.eval.robustness import variant_prompts
    from alter.experiments.compare.settings import CompareSettings
    from alter.experiments.compare.worker import _spread, build_data
    from alter.modeling import model_loading

    settings = CompareSettings.from_dict(json.loads((folder / "settings.json").read_text()))
    if settings.dataset != "tofu":
        raise ValueError(f"{folder} holds a {settings.dataset} benchmark; the robustness table is TOFU's")
    data = build_data(settings)
    tokenizer = AutoTokenizer.from_pretrained(model_loading.resolve(settings.model))
    asked = variant_prompts(tokenizer, _spread(data.forget_eval, settings.eval_robustness),
                            _spread(data.retain_eval, settings.eval_robustness), data.world_facts,
                            forget_pool=data.forget, retain_pool=data.retain, system_prompt=settings.system_prompt)
    results = {}
    for path in sorted((folder / "methods").glob("*.json")):
        result = json.loads(path.read_text())
        generations = result.get("robustness_generations")
        if generations and not result.get("robustness_scores"):
            scores: Dict[str, Dict[str, List[float]]] = {}
            for side, by_variant in generations.items():
                for variant, texts in by_variant.items():
                    refs = asked.get(side, {}).get(variant, ([], []))[1]
                    if len(refs) != len(texts):
                        raise ValueError(f"{path.name}: {side}/{variant} has {len(texts)} answers, the benchmark's "
                                         f"settings ask {len(refs)} questions (another data or code version?)")
                    scores.setdefault(side, {})[variant] = [rouge_l_recall(g, r) for g, r in zip(texts, refs)]
            result["robustness_scores"] = scores
            alter_io.atomic_write_json(path, result)
        results[path.stem] = result
    return results


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alter.experiments.compare.robustness_intervals",
                                description="bootstrap intervals of a TOFU benchmark folder's robustness leaks")
    p.add_argument("folder", help="a folder written by alter-bench --benchmark tofu (settings.json, methods/)")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if not (folder / "settings.json").is_file():
        raise SystemExit(f"{folder} has no settings.json: not a benchmark folder")
    from alter.experiments.compare.table import robustness_markdown
    from alter.experiments.compare.tuning import average_seeds

    results = rescore_folder(folder)
    names = json.loads((folder / "settings.json").read_text()).get("methods", list(results))
    rows = average_seeds([results[m]["row"] for m in names if m in results])
    print(robustness_markdown(rows, intervals=leak_intervals({m: results[m] for m in names if m in results})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
