"""``alter-train``: unlearn a forget set from a model with ALTER (or a baseline), or run the demo.

    alter-train --forget PATH|NAME --retain PATH|NAME [--model smollm2-135m] [--output DIR]
                [--config YAML] [--resume] [--<hyperparameter> VALUE ...]
    alter-train --demo [--quick]
    alter-train --demo --compare [--methods ...]             # the side-by-side run on synthetic authors
    alter-train --benchmark tofu [--data DIR] [--tofu-split report|tune] [--methods ...]
    alter-train --benchmark tofu --tune [--methods graddiff,npo,rmu,lora]   # lr sweep on the tune split
    alter-train --benchmark tofu --tuned alter_runs/tofu-tune-sweep/tuned.json [--seeds 3] [--methods ...]

Bad input (a missing file, an empty forget set, an unknown model, an unknown config key) is
reported in one line, without a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from alter.cli.options import DTYPES, UsageError, add_config_flags, build_config, config_overrides
from alter.cli.progress import quiet_progress_off_terminal


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alter-train", allow_abbrev=False,
        description="Unlearn a forget set from a causal LM with ALTER (asymmetric LoRA + token-entropy routing), "
                    "or run the demo on the embedded SmolLM2-135M-Instruct.")
    p.add_argument("--forget", metavar="PATH|NAME", help="forget set: a .json/.jsonl/.csv/.parquet file, a directory "
                   "of them, or a hub dataset such as locuslab/TOFU:forget10")
    p.add_argument("--retain", metavar="PATH|NAME", help="retain set, same forms (e.g. locuslab/TOFU:retain90)")
    p.add_argument("--model", default="smollm2-135m", help="embedded model name, local directory or hub name "
                   "(default: smollm2-135m, the embedded SmolLM2-135M-Instruct)")
    from alter.methods import ALL_METHODS, help_text

    p.add_argument("--method", default="alter", help="unlearning method (default: alter). " + help_text())
    p.add_argument("--lr", type=float, default=None, help="with a baseline --method: its learning rate (default: "
                   "the method's own)")
    p.add_argument("--epochs", type=float, default=None, help="with a baseline --method: epochs over the forget "
                   "set (default: the method's own)")
    p.add_argument("--output", default=None, help="output directory (default: alter_runs/<method>-<time>)")
    p.add_argument("--config", default=None, metavar="YAML", help="YAML file of hyperparameters (keys as below)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output; with "
                   "--compare: keep the methods whose results are already in --output (same settings)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="write a checkpoint every N optimisation steps (always at the end of each phase)")
    p.add_argument("--forget-limit", type=int, default=None, metavar="N", help="use the first N forget examples")
    p.add_argument("--retain-limit", type=int, default=None, metavar="N", help="use the first N retain examples")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the base model's weights "
                   "(default float32; bfloat16 halves memory on GPU; the adapters stay float32, see --adapter-dtype)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--demo", action="store_true", help="the main job on a fresh machine: teach the embedded SmolLM2 "
                   "synthetic authors, unlearn 10%% of them with ALTER, print a before/after table")
    p.add_argument("--quick", action="store_true", help="with --demo: a short smoke run (a few steps, small sets)")
    p.add_argument("--compare", action="store_true", help="with --demo: run every method (or --methods) on the "
                   "synthetic authors and print one table (forget ROUGE-L, forget quality, utility, fluency, time, "
                   "memory)")
    p.add_argument("--benchmark", choices=("tofu",), default=None, help="the side-by-side comparison on real TOFU "
                   "rows (--data): teach SmolLM2 authors 0-9 and 180-189, forget 5 of them, score every method")
    p.add_argument("--data", default=None, metavar="DIR", help="with --benchmark tofu: the TOFU directory "
                   "(authors.jsonl, world_facts.jsonl, real_authors.jsonl; default: ../shared/data/tofu)")
    p.add_argument("--tofu-split", choices=("report", "tune"), default=None, help="with --benchmark tofu: "
                   "forget authors 185-189 ('report', the table; the default) or 180-184 ('tune', to choose "
                   "settings on; the default of --tune)")
    p.add_argument("--tune", action="store_true", help="with --benchmark tofu: sweep each baseline's learning rate "
                   "(3 values each) on the tune split, apply the selection rule (best retain ROUGE-L among runs "
                   "whose forget ROUGE-L is at most the never-taught floor + 0.05) and write tuned.json")
    p.add_argument("--tuned", default=None, metavar="JSON", help="with --benchmark tofu: the learning rates that "
                   "--tune selected (its tuned.json)")
    p.add_argument("--seeds", type=int, default=None, metavar="N", help="with --compare or --benchmark: run every "
                   "unlearning method with N seeds; the table shows mean ± standard deviation")
    p.add_argument("--methods", default=None, help="with --compare or --benchmark: comma-separated subset of "
                   + ",".join(ALL_METHODS))
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    add_config_flags(p)
    return p


def _load_sets(args):
    from alter.data.readers import load_examples
    from alter.data.schema import FORGET_DOMAIN, QAExample, RETAIN_DOMAIN

    if not args.forget:
        raise UsageError("--forget is required (or use --demo)")
    if not args.retain:
        raise UsageError("--retain is required (or use --demo)")
    forget = load_examples(args.forget, domain=FORGET_DOMAIN, limit=args.forget_limit)
    retain = load_examples(args.retain, domain=RETAIN_DOMAIN, limit=args.retain_limit)
    for name, rows in (("forget", forget), ("retain", retain)):
        if rows and not isinstance(rows[0], QAExample):
            raise UsageError(f"--{name} {getattr(args, name)} holds multiple-choice items; training needs "
                             "question/answer pairs or text passages")
    if not forget:
        raise UsageError(f"empty forget set: {args.forget} has no examples")
    return forget, retain


def run_train(args) -> int:
    import torch

    from alter import model_loading
    from alter.train import AlterTrainer

    from alter.methods import REGISTRY, TRAINABLE

    method = args.method.strip().lower()
    if method not in TRAINABLE:
        raise UsageError(f"--method {args.method}: unknown method; known: {', '.join(TRAINABLE)}")
    info = REGISTRY[method]
    if info.kind == "alter" and (args.lr is not None or args.epochs is not None):
        raise UsageError("--lr and --epochs apply to a baseline --method; ALTER takes --lr-phase2, --phase2-epochs, ...")
    config = build_config(args)
    if info.alter_config:
        config = config.replace(**info.alter_config)
    forget, retain = _load_sets(args)
    output = Path(args.output or f"alter_runs/{method}-{time.strftime('%Y%m%d-%H%M%S')}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = model_loading.load(args.model, device=device, dtype=DTYPES[args.dtype])
    if info.kind != "alter":
        from alter.baselines import run_unlearning

        result = run_unlearning(method, model, tokenizer, forget, retain, epochs=args.epochs, lr=args.lr,
                                batch_size=config.batch_size, seed=config.seed, system_prompt=config.system_prompt,
                                max_length=config.max_length, output_dir=output, progress=not args.no_progress)
        rep = result.report
        print(f"{method}: {rep.trainable_parameters:,} trainable parameters; saved to {output} "
              f"(alter-eval --model {args.model} --adapter {output} ...)")
        return 0
    trainer = AlterTrainer(model, tokenizer, config, forget, retain, output_dir=output,
                           checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
    wrapped = trainer.train(resume=args.resume)
    rep = trainer.report
    print(f"theta = {rep.theta:.4f} ({config.theta}); {rep.entropy_summary['frac_high']:.0%} of "
          f"{rep.entropy_summary['answer_tokens']} answer tokens are high entropy")
    for phase, stats in rep.phases.items():
        print(f"{phase}: {stats['steps']} steps, {stats['seconds']:.0f} s, peak memory "
              f"{stats['peak_memory_bytes'] / 2**30:.2f} GiB")
    print(f"adapter ({wrapped.adapter_parameter_count():,} parameters, domains {wrapped.domains}) saved to "
          f"{output / 'adapter'}")
    return 0


def _tofu_dir(given: Optional[str]) -> str:
    if given:
        if not Path(given).is_dir():
            raise UsageError(f"--data {given}: no such directory")
        return str(Path(given).resolve())
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        found = root.parent / "shared" / "data" / "tofu"
        if found.is_dir():
            return str(found)
    raise UsageError("--benchmark tofu needs --data DIR (a directory with authors.jsonl, world_facts.jsonl and "
                     "real_authors.jsonl)")


def run_comparison(args) -> int:
    from alter.compare import QUICK, CompareSettings, parse_methods, run_compare
    from alter.compare.settings import TOFU

    from alter.compare.tuning import TUNED_BY_DEFAULT, seed_specs, sweep_specs
    from alter.compare.variants import parse_spec
    from alter.config import AlterConfig

    if not args.benchmark and (args.tune or args.tuned or args.tofu_split):
        raise UsageError("--tune, --tuned and --tofu-split only apply to --benchmark tofu")
    if args.tune and args.tofu_split == "report":
        raise UsageError("--tune sweeps on the tune split; the report split is for the table (use --tuned)")
    if args.tune and args.tuned:
        raise UsageError("--tune and --tuned do not go together: sweep first, then report with --tuned")
    split = args.tofu_split or ("tune" if args.tune else "report")
    values = {"model": args.model, "methods": parse_methods(args.methods)}
    if args.benchmark == "tofu":
        values.update(TOFU, data_dir=_tofu_dir(args.data), tofu_split=split)
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
        swept = [parse_spec(m).method for m in parse_methods(args.methods)] if args.methods else TUNED_BY_DEFAULT
        values["methods"] = sweep_specs(swept, CompareSettings().method_lr)
        values["eval_lean"] = True
    if args.seeds is not None:
        values["methods"] = seed_specs(values["methods"], args.seeds)
    # ALTER flags and --config YAML apply to the alter and asymlora runs (recorded in settings.json, so a
    # --resume with other values is refused); a method spec's @lr / @epochs still wins over them
    defaults = AlterConfig().to_dict()
    values["alter"] = {**values.get("alter", {}),           # the benchmark's own (TOFU: ALTER's phase II cap)
                       **{k: v for k, v in build_config(args).to_dict().items() if v != defaults[k]}}
    settings = CompareSettings(**values)
    default = (f"alter_runs/tofu-{split}" + ("-sweep" if args.tune else "")) if args.benchmark else "alter_runs/compare"
    out = Path(args.output or ("alter_runs/compare-quick" if args.quick else default))
    run_compare(settings, out, progress=not args.no_progress, threads=args.threads, resume=args.resume,
                tuning=args.tune)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_progress_off_terminal()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        if (args.demo and args.compare) or args.benchmark:
            return run_comparison(args)
        if args.methods or args.seeds is not None:
            raise UsageError("--methods and --seeds only apply to --demo --compare or --benchmark")
        if args.tune or args.tuned or args.tofu_split:
            raise UsageError("--tune, --tuned and --tofu-split only apply to --benchmark tofu")
        if args.demo:
            from alter.demo import run_demo
            build_config(args)                       # bad flags or YAML: one usage line before any work
            return run_demo(args, config_overrides(args))
        if args.quick or args.compare:
            raise UsageError("--quick and --compare only apply to --demo")
        return run_train(args)
    except KeyboardInterrupt:
        print("alter-train: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for user errors; --debug for the rest
        from alter.cli.errors import report
        return report("alter-train", exc, args.debug)


if __name__ == "__main__":
    sys.exit(main())
