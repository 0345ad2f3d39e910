"""``alter-train``: unlearn a forget set from a model with ALTER (or a baseline), or run the demo.

    alter-train --forget PATH|NAME --retain PATH|NAME [--model smollm2-135m] [--output DIR]
                [--config YAML] [--resume] [--<hyperparameter> VALUE ...]
    alter-train --demo [--quick]
    alter-train --adapter DIR --forget PATH|NAME --retain PATH|NAME [--request-name NAME] [--output OUT]
    alter-train --adapter DIR --remove-request NAME [--output OUT]

``--adapter`` adds a forget request to an earlier run's adapter, or removes one (:mod:`alter.cli.requests`).

Comparisons of methods, the TOFU benchmark and learning-rate sweeps are ``alter-bench``'s job
(:mod:`alter.cli.bench`); given their flags (``--compare``, ``--benchmark``, ``--tune``, ...),
``alter-train`` says so in one line and does nothing.

Bad input (a missing file, an empty forget set, an unknown model, an unknown config key) is
reported in one line, without a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

from alter.cli.errors import run_command
from alter.cli.options import DTYPES, UsageError, add_config_flags, build_config, config_overrides

# alter-bench's flags: given to alter-train, they are answered with a pointer to alter-bench
BENCH_FLAGS = ("--compare", "--benchmark", "--tune", "--tuned", "--tofu-split", "--methods", "--seeds")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alter-train", allow_abbrev=False,
        usage="alter-train --forget PATH|NAME --retain PATH|NAME [options] [--<hyperparameter> VALUE ...]\n"
              "       alter-train --demo [--quick]\n"
              "       alter-train --adapter DIR --forget PATH|NAME --retain PATH|NAME [--request-name NAME] "
              "[options]\n"
              "       alter-train --adapter DIR --remove-request NAME [--output OUT]",
        description="Unlearn a forget set from a causal LM with ALTER (asymmetric LoRA + token-entropy routing) "
                    "or a baseline, or run the demo on the embedded SmolLM2-135M-Instruct. Comparisons, "
                    "benchmarks and sweeps: alter-bench.")
    p.add_argument("--forget", metavar="PATH|NAME", help="forget set: a .json/.jsonl/.csv/.parquet file, a directory "
                   "of them, or a hub dataset such as locuslab/TOFU:forget10")
    p.add_argument("--retain", metavar="PATH|NAME", help="retain set, same forms (e.g. locuslab/TOFU:retain90)")
    p.add_argument("--model", default="smollm2-135m", help="embedded model name, local directory or hub name "
                   "(default: smollm2-135m, the embedded SmolLM2-135M-Instruct)")
    from alter.baselines.registry import help_text

    p.add_argument("--method", default="alter", help="unlearning method (default: alter). " + help_text())
    p.add_argument("--lr", type=float, default=None, help="with a baseline --method: its learning rate (default: "
                   "the method's own)")
    p.add_argument("--epochs", type=float, default=None, help="with a baseline --method: epochs over the forget "
                   "set (default: the method's own)")
    p.add_argument("--output", default=None, help="output directory (default: alter_runs/<method>-<time>)")
    p.add_argument("--config", default=None, metavar="YAML", help="YAML file of hyperparameters (keys as below)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="write a checkpoint every N optimisation steps (always at the end of each phase)")
    p.add_argument("--stop-reference", metavar="PATH|NAME", default=None, help="a forget set of passages (raw "
                   "text): text of the same kind the model never saw (same forms as --forget); the forget-level "
                   "stop then ends phase II once the forget passages' Min-K%% is that text's under the starting "
                   "model, checked every step (docs/method.md §4, Passages)")
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
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    _add_request_flags(p)
    add_config_flags(p)
    return p


def _add_request_flags(p: argparse.ArgumentParser) -> None:
    from alter.cli.requests import REQUEST_HELP

    g = p.add_argument_group("sequential forget requests (docs/training.md)", REQUEST_HELP)
    g.add_argument("--adapter", default=None, metavar="DIR",
                   help="an earlier alter-train --output folder (or its adapter/): add --forget as one new forget "
                        "request to its adapter, training only the new expert (everything trained before stays "
                        "bit-identical), or remove one with --remove-request; --model must be the earlier run's; "
                        "writes --output/adapter")
    g.add_argument("--request-name", default=None, metavar="NAME",
                   help="with --adapter: the new request's name (default: request_<k>, k = its requests + 1)")
    g.add_argument("--remove-request", default=None, metavar="NAME",
                   help="with --adapter: write the adapter without request NAME (no training, no --forget)")


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


def load_reference(source: Optional[str]):
    """``--stop-reference``: its texts (passages as read by ``load_examples``), or None."""
    if not source:
        return None
    from alter.data.readers import load_examples

    texts = [e.answer for e in load_examples(source)]
    if not texts:
        raise UsageError(f"--stop-reference {source}: no texts in it")
    return texts


def run_train(args) -> int:
    import torch

    from alter.modeling import model_loading
    from alter.train import AlterTrainer

    from alter.baselines.registry import REGISTRY, TRAINABLE

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
                           stop_reference=load_reference(args.stop_reference),
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


def moved_to_bench(argv: List[str]) -> List[str]:
    """The flags in ``argv`` that belong to ``alter-bench`` (``--benchmark=tofu`` counts as ``--benchmark``)."""
    return [a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] in BENCH_FLAGS]


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    moved = moved_to_bench(argv)
    if moved:
        same = shlex.join(a for a in argv if a != "--demo")
        print(f"alter-train: error: comparisons, benchmarks and sweeps ({', '.join(dict.fromkeys(moved))}) have "
              f"their own command; run: alter-bench {same}".rstrip(), file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    return run_command("alter-train", args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from alter.cli import requests

    requests.check_combination(args)
    if args.adapter is not None and args.remove_request is not None:
        return requests.run_remove_request(args)
    if args.adapter is not None:
        return requests.run_add_request(args, _load_sets)
    if args.demo:
        from alter.experiments.demo import run_demo
        build_config(args)                       # bad flags or YAML: one usage line before any work
        return run_demo(args, config_overrides(args))
    if args.quick:
        raise UsageError("--quick only applies to --demo")
    return run_train(args)


if __name__ == "__main__":
    sys.exit(main())
