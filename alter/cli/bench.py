"""``alter-bench``: unlearning methods side by side, the TOFU benchmark and learning-rate sweeps.

    alter-bench --compare [--quick] [--methods ...] [--seeds N]     # the synthetic authors, one table
    alter-bench --benchmark tofu [--data DIR] [--tofu-split report|tune] [--methods ...]
    alter-bench --benchmark tofu --tune [--methods graddiff,npo,rmu,lora,task_vector,whp]   # lr sweep, tune split
    alter-bench --benchmark tofu --tuned alter_runs/tofu-tune-sweep/tuned.json [--seeds 3] [--methods ...]
    alter-bench --benchmark muse-news [--data DIR] [--split report|tune] [--methods ...]   # BBC articles
    alter-bench --benchmark muse-news --tune [--methods graddiff,npo,rmu,lora,task_vector,whp]   # lr sweep, tune fold
    alter-bench --benchmark muse-news --tuned alter_runs/muse-news-tune-sweep/tuned.json [--methods ...]

Every method runs in its own worker process (:mod:`alter.experiments.compare`); the run directory holds the
table, the charts and every number (``compare.json``). ALTER hyperparameter flags and ``--config``
apply to the ``alter`` and ``asymlora`` runs. Training one method on your own data is
``alter-train``'s job. Bad input is reported in one line, without a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from alter.cli.errors import run_command
from alter.cli.options import UsageError, add_config_flags, build_config

BENCHMARKS = ("tofu", "muse-news")


def build_parser() -> argparse.ArgumentParser:
    from alter.baselines.registry import ALL_METHODS

    p = argparse.ArgumentParser(
        prog="alter-bench", allow_abbrev=False,
        usage="alter-bench (--compare | --benchmark tofu|muse-news) [options] [--<hyperparameter> VALUE ...]",
        description="Run unlearning methods side by side on the same model and data and print one table: on "
                    "synthetic authors (--compare), on TOFU (--benchmark tofu) or on MUSE-News (--benchmark muse-news), "
                    "and sweep the baselines' "
                    "learning rates (--tune). Training on your own data: alter-train.")
    p.add_argument("--compare", action="store_true", help="every method (or --methods) on the synthetic authors "
                   "the demo uses; the table: forget ROUGE-L, forget quality, utility, fluency, time, memory")
    p.add_argument("--benchmark", choices=BENCHMARKS, default=None, help="tofu: every method on real TOFU rows "
                   "(--data): teach SmolLM2 authors 0-9 and 180-189, forget 5 of them, score every method; "
                   "muse-news: teach it BBC article windows (MUSE-News), forget one fold of them")
    p.add_argument("--demo", action="store_true", help=argparse.SUPPRESS)    # alter-train --demo --compare's flag
    p.add_argument("--methods", default=None, help="comma-separated subset of " + ",".join(ALL_METHODS)
                   + " (default: all; with --tune: the baselines it sweeps); NAME@lr=X or NAME@seed=N for a "
                   "variant")
    p.add_argument("--seeds", type=int, default=None, metavar="N", help="run every unlearning method with N seeds; "
                   "the table shows mean ± standard deviation")
    p.add_argument("--quick", action="store_true", help="a short smoke run (a few steps, small sets)")
    p.add_argument("--model", default="smollm2-135m", help="embedded model name, local directory or hub name "
                   "(default: smollm2-135m, the embedded SmolLM2-135M-Instruct)")
    tofu = p.add_argument_group("TOFU and MUSE-News (with --benchmark)")
    tofu.add_argument("--data", default=None, metavar="DIR", help="the benchmark's directory (TOFU: authors.jsonl, "
                      "world_facts.jsonl, real_authors.jsonl; MUSE-News: its JSON files; default: "
                      "../shared/data/tofu or ../shared/data/muse_news)")
    tofu.add_argument("--split", "--tofu-split", dest="tofu_split", choices=("report", "tune"), default=None,
                      help="what is forgotten: 'report' (the table; the default: TOFU authors 185-189, MUSE-News "
                      "the report fold of articles) or 'tune' (to choose settings on: TOFU 180-184, the other "
                      "fold; the default of --tune)")
    tofu.add_argument("--tune", action="store_true", help="sweep each baseline's learning rate (TOFU: 3 values "
                      "each, MUSE-News: 2) on the tune split, select one per method (TOFU: best retain ROUGE-L among "
                      "runs whose forget ROUGE-L is at most the never-taught floor + 0.05; MUSE-News: best KnowMem "
                      "retain among runs within the never-taught VerbMem and KnowMem forget + 0.05) and write "
                      "tuned.json")
    tofu.add_argument("--tuned", default=None, metavar="JSON", help="the learning rates that --tune selected (its "
                      "tuned.json)")
    tofu.add_argument("--requests", type=int, default=None, metavar="N", help="muse-news: unlearn the fold as N "
                      "sequential requests (ALTER: one new expert each; a baseline: each request fine-tunes the "
                      "previous model) and score every request after each one")
    tofu.add_argument("--robustness-questions", type=int, default=None, metavar="N", help="tofu: forget and retain "
                      "questions asked under each prompt variant of the robustness table (default 12; at most the 40 "
                      "forget and 30 retain questions the benchmark scores; 0: no robustness table)")
    p.add_argument("--output", default=None, help="output directory (default: alter_runs/compare, "
                   "alter_runs/tofu-<split>[-sweep], alter_runs/compare-quick with --quick)")
    p.add_argument("--resume", action="store_true", help="keep the methods whose results are already in --output "
                   "(same settings) and run the others")
    p.add_argument("--config", default=None, metavar="YAML", help="YAML file of ALTER hyperparameters for the alter "
                   "and asymlora runs (keys as below)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, in every worker (default: all "
                   "cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    add_config_flags(p)
    return p


def _data_dir(given: Optional[str], benchmark: str) -> str:
    if given:
        if not Path(given).is_dir():
            raise UsageError(f"--data {given}: no such directory")
        return str(Path(given).resolve())
    folder = {"tofu": "tofu", "muse-news": "muse_news"}[benchmark]
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        found = root.parent / "shared" / "data" / folder
        if found.is_dir():
            return str(found)
    what = {"tofu": "a directory with authors.jsonl, world_facts.jsonl and real_authors.jsonl",
            "muse-news": "the MUSE-News directory: raw_forget.json, verbmem_forget.json, knowmem_*.json, privleak_*.json"}
    raise UsageError(f"--benchmark {benchmark} needs --data DIR ({what[benchmark]})")


def _check(args) -> None:
    """Flag combinations that cannot run: one usage line before any work."""
    if not (args.compare or args.benchmark):
        raise UsageError("say what to run: --compare (the synthetic authors), --benchmark tofu or --benchmark muse-news")
    if args.compare and args.benchmark:
        raise UsageError(f"--compare (the synthetic authors) and --benchmark {args.benchmark} are two runs; give one")
    if not args.benchmark and (args.tune or args.tuned or args.tofu_split or args.data):
        raise UsageError("--data, --tune, --tuned and --split only apply to --benchmark")
    if args.requests is not None and (args.benchmark != "muse-news" or args.requests < 1):
        raise UsageError("--requests N (N >= 1) applies to --benchmark muse-news")
    if args.robustness_questions is not None and (args.benchmark != "tofu" or args.robustness_questions < 0):
        raise UsageError("--robustness-questions N (N >= 0) applies to --benchmark tofu")
    if args.tune and args.tofu_split == "report":
        raise UsageError("--tune sweeps on the tune split; the report split is for the table (use --tuned)")
    if args.tune and args.tuned:
        raise UsageError("--tune and --tuned do not go together: sweep first, then report with --tuned")


def run_comparison(args) -> int:
    from alter.experiments.compare import QUICK, CompareSettings, parse_methods, run_compare
    from alter.experiments.compare.settings import MUSE_NEWS, TOFU

    from alter.experiments.compare.tuning import MUSE_TUNED_BY_DEFAULT, TUNED_BY_DEFAULT, seed_specs, sweep_specs
    from alter.experiments.compare.variants import parse_spec
    from alter.config import AlterConfig

    _check(args)
    split = args.tofu_split or ("tune" if args.tune else "report")
    values = {"model": args.model, "methods": parse_methods(args.methods)}
    if args.benchmark == "tofu":
        values.update(TOFU, data_dir=_data_dir(args.data, "tofu"), tofu_split=split)
    if args.benchmark == "muse-news":
        values.update(MUSE_NEWS, data_dir=_data_dir(args.data, "muse-news"), tofu_split=split,
                      muse_requests=args.requests or 0)
    if args.robustness_questions is not None:
        values["eval_robustness"] = args.robustness_questions
    if args.quick:
        values.update(QUICK)
    if args.tuned:
        path = Path(args.tuned)
        if not path.is_file():
            raise UsageError(f"--tuned {args.tuned}: no such file (it is the tuned.json that --tune writes)")
        try:
            chosen = json.loads(path.read_text())["method_lr"]
        except (ValueError, KeyError):
            raise UsageError(f"--tuned {args.tuned}: not a tuned.json (no 'method_lr')") from None
        values["method_lr"] = {**CompareSettings().method_lr, **{k: float(v) for k, v in chosen.items()}}
    if args.tune:
        muse = args.benchmark == "muse-news"
        swept = ([parse_spec(m).method for m in parse_methods(args.methods)] if args.methods
                 else MUSE_TUNED_BY_DEFAULT if muse else TUNED_BY_DEFAULT)
        values["methods"] = sweep_specs(swept, CompareSettings().method_lr, values.get("dataset", "tofu"))
        values["eval_lean"] = not muse          # MUSE-News scores every column (its rule reads four of them)
    if args.seeds is not None:
        values["methods"] = seed_specs(values["methods"], args.seeds)
    # ALTER flags and --config YAML apply to the alter and asymlora runs (recorded in settings.json, so a
    # --resume with other values is refused); a method spec's @lr / @epochs still wins over them
    defaults = AlterConfig().to_dict()
    values["alter"] = {**values.get("alter", {}),           # the benchmark's own (TOFU: ALTER's phase II cap)
                       **{k: v for k, v in build_config(args).to_dict().items() if v != defaults[k]}}
    settings = CompareSettings(**values)
    default = (f"alter_runs/{args.benchmark}-{split}" + ("-sweep" if args.tune else "")
               + (f"-requests{args.requests}" if args.requests else "")) if args.benchmark \
        else "alter_runs/compare"
    out = Path(args.output or ("alter_runs/compare-quick" if args.quick else default))
    run_compare(settings, out, progress=not args.no_progress, threads=args.threads, resume=args.resume,
                tuning=args.tune)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("alter-bench", args, lambda: run_comparison(args))


if __name__ == "__main__":
    sys.exit(main())
