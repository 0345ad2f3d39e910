"""``alter-eval``: the benchmarks' metrics for a model, with or without an unlearning adapter.

    alter-eval --model PATH|NAME [--adapter DIR] --benchmark tofu|wmdp|mmlu|muse|qa [--data ...]

- ``tofu``: forget quality (with ``--retain-stats``, the metrics.json of the retain model),
  model utility, forget ROUGE-L / probability / truth ratio, extraction strength, Min-k% privleak.
  ``--forget/--retain/--real-authors/--world-facts/--holdout`` take files or hub names;
  ``--data synthetic`` uses the built-in fictitious authors (10% forget split).
- ``wmdp`` / ``mmlu``: multiple-choice accuracy by option log-likelihood (``--data`` default
  ``cais/wmdp:wmdp-bio,cais/wmdp:wmdp-cyber`` / ``cais/mmlu:all``).
- ``muse``: BLEU and ROUGE-L F1 of the greedy continuation of a ``--prefix-tokens`` prefix.
- ``qa``: probability, ROUGE-L recall and (when the data has them) truth ratios on any QA set.

Writes ``metrics.json`` (aggregates and per-item values) into ``--output`` and prints a table.
The adapter may be an ALTER adapter (``alter-train``) or a PEFT adapter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from alter.cli.errors import run_command
from alter.cli.options import DTYPES, UsageError

BENCHMARKS = ("tofu", "wmdp", "mmlu", "muse", "qa")
DEFAULT_DATA = {
    "wmdp": "cais/wmdp:wmdp-bio,cais/wmdp:wmdp-cyber",
    "mmlu": "cais/mmlu:all",
    "tofu_forget": "locuslab/TOFU:forget10_perturbed", "tofu_retain": "locuslab/TOFU:retain_perturbed",
    "tofu_real_authors": "locuslab/TOFU:real_authors_perturbed",
    "tofu_world_facts": "locuslab/TOFU:world_facts_perturbed", "tofu_holdout": "locuslab/TOFU:holdout10",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alter-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="embedded model name, local directory or hub name")
    p.add_argument("--adapter", default=None, help="an ALTER or PEFT adapter directory to evaluate on the model")
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--data", default=None, help="data for wmdp/mmlu/muse/qa (comma-separated sources); "
                   "for tofu, 'synthetic' selects the built-in fictitious authors")
    p.add_argument("--forget", default=None, help="tofu: forget set with perturbed answers")
    p.add_argument("--retain", default=None, help="tofu: retain set with perturbed answers")
    p.add_argument("--real-authors", default=None, help="tofu: real-authors set")
    p.add_argument("--world-facts", default=None, help="tofu: world-facts set")
    p.add_argument("--holdout", default=None, help="tofu: never-trained holdout set (for privleak)")
    p.add_argument("--retain-stats", default=None, help="tofu: metrics.json of the retain model (forget quality)")
    p.add_argument("--limit", type=int, default=None, help="use the first N items of each set")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation length for ROUGE / continuations")
    p.add_argument("--prefix-tokens", type=int, default=200, help="muse: prefix length before the continuation")
    p.add_argument("--length-normalize", action="store_true", help="wmdp/mmlu: rank options by mean log-likelihood")
    p.add_argument("--system-prompt", default=None, help="system message for chat templates")
    p.add_argument("--output", default=None, help="directory for metrics.json (default: alter_runs/eval-<time>)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the base model's weights")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def load_model_with_adapter(model_name: str, adapter: Optional[str], device: Optional[str] = None,
                            dtype: str = "float32"):
    """``(model, tokenizer)``: the base model, wrapped by an ALTER adapter or a PEFT adapter if given."""
    from alter.modeling import model_loading

    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        run_model = Path(adapter) / "model"
        if (Path(adapter) / "adapter" / "adapter_config.json").is_file():   # an alter-train --output directory
            adapter = str(Path(adapter) / "adapter")
        elif (run_model / "config.json").is_file() and (Path(adapter) / "report.json").is_file():
            # a full-parameter baseline's alter-train --method run
            return model_loading.load(str(run_model), device=device, dtype=DTYPES[dtype])
        else:
            raise UsageError(f"--adapter {adapter}: no adapter_config.json there (nor in {adapter}/adapter, "
                             f"nor a model in {adapter}/model)")
    model, tokenizer = model_loading.load(model_name, device=device, dtype=DTYPES[dtype])
    if adapter is None:
        return model, tokenizer
    path = Path(adapter)
    cfg = path / "adapter_config.json"
    meta = json.loads(cfg.read_text())
    if meta.get("format") == "alter-adapter":
        import alter
        return alter.load_adapter(model, path), tokenizer
    if "peft_type" in meta:
        from peft import PeftModel
        return PeftModel.from_pretrained(model, str(path)).eval(), tokenizer
    raise UsageError(f"--adapter {adapter}: neither an ALTER nor a PEFT adapter")


def _sources(text: str) -> List[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _qa(source: Optional[str], limit):
    from alter.data.readers import load_qa
    if not source:
        return None
    rows = []
    for s in _sources(source):
        rows += load_qa(s, limit=limit)
    return rows


def run_tofu(args, model, tokenizer) -> Dict:
    from alter.eval.evaluators import evaluate_tofu

    if args.data == "synthetic":
        from alter.data.general_knowledge import real_authors, world_facts
        from alter.data.synthetic import SyntheticAuthors
        split = SyntheticAuthors().split(10)
        cut = (lambda xs: xs[:args.limit]) if args.limit else (lambda xs: xs)
        sets = dict(forget=cut(split.forget), retain=cut(split.retain), real_authors=cut(real_authors()),
                    world_facts=cut(world_facts()), holdout=cut(split.holdout))
    else:
        sets = {name: _qa(getattr(args, name) or DEFAULT_DATA[f"tofu_{name}"], args.limit)
                for name in ("forget", "retain", "real_authors", "world_facts", "holdout")}
    stats = json.loads(Path(args.retain_stats).read_text()) if args.retain_stats else None
    if stats is not None and "results" in stats:
        stats = stats["results"]
    return evaluate_tofu(model, tokenizer, sets["forget"], sets["retain"], sets["real_authors"], sets["world_facts"],
                         sets["holdout"], stats, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                         system_prompt=args.system_prompt, progress=not args.no_progress)


def run_mc(args, model, tokenizer) -> Dict:
    from alter.data.readers import load_mc
    from alter.eval.evaluators import evaluate_mc

    out = {}
    for source in _sources(args.data or DEFAULT_DATA[args.benchmark]):
        items = load_mc(source, limit=args.limit)
        out[source] = evaluate_mc(model, tokenizer, items, batch_size=args.batch_size,
                                  system_prompt=args.system_prompt, length_normalize=args.length_normalize,
                                  progress=not args.no_progress, name=source)
    return out


def run_muse(args, model, tokenizer) -> Dict:
    from alter.data.readers import load_text
    from alter.eval.evaluators import evaluate_continuation

    if not args.data:
        raise UsageError("--benchmark muse needs --data (e.g. muse-bench/MUSE-Books:raw or a local text file)")
    texts = []
    for s in _sources(args.data):
        texts += [e.answer for e in load_text(s, limit=args.limit)]
    return evaluate_continuation(model, tokenizer, texts, prefix_tokens=args.prefix_tokens,
                                 max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                 progress=not args.no_progress)


def run_qa(args, model, tokenizer) -> Dict:
    from alter.eval.evaluators import evaluate_qa

    if not args.data:
        raise UsageError("--benchmark qa needs --data")
    rows = _qa(args.data, args.limit)
    if not rows:
        raise UsageError(f"--data {args.data} has no examples")
    return evaluate_qa(model, tokenizer, rows, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                       system_prompt=args.system_prompt, progress=not args.no_progress, name="qa")


def _scalars(results: Dict, prefix: str = "") -> Dict[str, float]:
    out = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[name] = value
        elif isinstance(value, dict) and not key.endswith("per_item"):
            out.update(_scalars(value, prefix=f"{name}."))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("alter-eval", args, lambda: _run(args), interrupted="interrupted")


def _run(args: argparse.Namespace) -> int:
    from alter import io as alter_io

    t0 = time.time()
    model, tokenizer = load_model_with_adapter(args.model, args.adapter, args.device, args.dtype)
    runner = {"tofu": run_tofu, "wmdp": run_mc, "mmlu": run_mc, "muse": run_muse, "qa": run_qa}[args.benchmark]
    results = runner(args, model, tokenizer)
    out_dir = Path(args.output or f"alter_runs/eval-{args.benchmark}-{time.strftime('%Y%m%d-%H%M%S')}")
    record = {"model": args.model, "adapter": args.adapter, "benchmark": args.benchmark,
              "seconds": round(time.time() - t0, 1), "results": results}
    alter_io.atomic_write_json(out_dir / "metrics.json", record)
    scalars = _scalars(results)
    width = max([len(k) for k in scalars] + [6])
    print(f"{'metric':<{width}}  value")
    for k, v in scalars.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"wrote {out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
