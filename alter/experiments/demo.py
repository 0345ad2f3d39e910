"""``alter-train --demo``: the main job on a fresh machine, with nothing else given.

1. Build the synthetic fictitious-author benchmark (seeded) and its 10% forget split.
2. Load the embedded SmolLM2-135M-Instruct and fine-tune it on every author so that it *knows*
   them (the model to unlearn from; cached, so a second demo skips this step).
3. Measure, before and after unlearning: ROUGE-L recall of greedy answers and the answer
   probability on the forget authors and on the retained authors (plus never-seen authors, the
   floor an "unlearned" answer should fall to).
4. Unlearn the forget authors with ALTER (phase I + phase II) and save the adapter.
5. Print the before/after table and sample answers; write ``metrics.json``, ``demo_table.md``
   and ``entropy_histogram.png`` (threshold marked) next to the adapter.

Sized for a 2-core CPU (docs/benchmarks/synthetic.md gives the measured time); ``--quick`` is a smoke run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from alter import io as alter_io

logger = logging.getLogger(__name__)


@dataclass
class DemoPreset:
    n_authors: int = 20
    questions_per_author: int = 5
    forget_percent: float = 10.0
    finetune_epochs: float = 8.0             # measured: ROUGE-L 1.00 / 0.97 on forget / retain answers
    finetune_lr: float = 5e-4
    finetune_batch_size: int = 8
    finetune_trainable: str = "upper"        # upper half of the blocks: 2.5 s instead of 4.3 s a step here
    eval_retain_per_author: int = 2
    eval_holdout: int = 10
    max_new_tokens: int = 24
    eval_batch_size: int = 16
    system_prompt: Optional[str] = "Answer the question."
    seed: int = 0
    # AlterConfig defaults but the paper's 3-epoch phase II: the demo's 10 forget QA then run phase2_min_steps
    # (15 steps). Under the default 6-epoch cap they get 18 (the stop, at probability 0.05, does not fire on
    # them) and two of the three forget answers shown come out garbled ("in H法tởang ninhEdit."; measured)
    alter: Dict[str, object] = field(default_factory=lambda: {"phase2_epochs": 3.0})


QUICK = DemoPreset(n_authors=5, questions_per_author=3, finetune_epochs=1.0, eval_retain_per_author=1,
                   eval_holdout=2, max_new_tokens=8, alter={"phase2_epochs": 1.0, "phase2_min_steps": 4,
                                                           "batch_size": 4})


def _stage(name: str, timings: Dict[str, float], t0: float) -> float:
    now = time.time()
    timings[name] = round(now - t0, 1)
    logger.info(f"[demo] {name}: {now - t0:.0f} s")
    return now


def _finetuned_model(model_name: str, examples, preset: DemoPreset, progress: bool, use_cache: bool):
    """The base model fine-tuned on every author (from the cache when this exact run was done before)."""
    from alter.train.supervised import cached_finetune

    model, tokenizer, report = cached_finetune(
        model_name, examples, tag="demo", use_cache=use_cache, progress=progress, desc="teach the authors",
        epochs=preset.finetune_epochs, lr=preset.finetune_lr, batch_size=preset.finetune_batch_size,
        trainable=preset.finetune_trainable, system_prompt=preset.system_prompt, seed=preset.seed)
    if report["cached"]:
        logger.info(f"[demo] using the cached fine-tuned model {report['path']}")
    return model, tokenizer, report


def _without_truth_ratio_fields(examples):
    return [dataclasses.replace(e, paraphrased_answer=None, perturbed_answers=None) for e in examples]


def _evaluate(model, tokenizer, sets: Dict[str, list], preset: DemoPreset, progress: bool) -> Dict[str, dict]:
    from alter.eval.evaluators import evaluate_qa

    out = {}
    for name, examples in sets.items():
        r = evaluate_qa(model, tokenizer, examples, batch_size=preset.eval_batch_size,
                        max_new_tokens=preset.max_new_tokens, system_prompt=preset.system_prompt,
                        progress=progress, name=name)
        out[name] = {"rougeL_recall": r["rougeL_recall"], "probability": r["probability"],
                     "rougeL_recall_per_item": r["rougeL_recall_per_item"],
                     "probability_per_item": r["probability_per_item"], "generations": r["generations"],
                     "questions": r["questions"], "references": r["references"]}
    return out


def _table(before: Dict[str, dict], after: Dict[str, dict]) -> str:
    rows = ["| set | ROUGE-L recall before | after | probability before | after |", "|---|---|---|---|---|"]
    for name in before:
        b, a = before[name], after.get(name)
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        rows.append(f"| {name} | {fmt(b['rougeL_recall'])} | {fmt(a and a['rougeL_recall'])} | "
                    f"{fmt(b['probability'])} | {fmt(a and a['probability'])} |")
    return "\n".join(rows)


def _samples(before: Dict[str, dict], after: Dict[str, dict], per_set: int = 3) -> str:
    lines = []
    for name in ("forget", "retain"):
        b, a = before[name], after[name]
        for i in range(min(per_set, len(b["questions"]))):
            lines += [f"[{name}] Q: {b['questions'][i]}", f"    true  : {b['references'][i]}",
                      f"    before: {b['generations'][i].strip()}", f"    after : {a['generations'][i].strip()}"]
    return "\n".join(lines)


def _answer_entropies_by_domain(trainer) -> Dict[str, List[float]]:
    """The base model's entropies of the forget and retain answer tokens. Training computed them for the
    forget rows; the retain rows only fed the router (docs/method.md §4), so the histogram's base pass
    for them runs here."""
    from alter.train.batches import collate_items

    groups = {"forget answers": [], "retain answers": []}
    missing = [it for it in trainer.items if it.position_entropy is None]
    entropies = {id(it): it.position_entropy for it in trainer.items if it.position_entropy is not None}
    for start in range(0, len(missing), 16):
        chunk = missing[start:start + 16]
        batch = collate_items(chunk, trainer._pad())
        with torch.no_grad():
            ent = trainer.model.position_entropy(batch["input_ids"].to(trainer.model.device),
                                                 batch["attention_mask"].to(trainer.model.device)).float().cpu()
        for j, it in enumerate(chunk):
            entropies[id(it)] = ent[j, :len(it.encoded.input_ids)]
    for it in trainer.items:
        labels = torch.tensor(it.encoded.labels)
        sel = labels[1:] != -100
        values = entropies[id(it)][:-1][sel].tolist()
        groups["forget answers" if it.domain_id else "retain answers"].extend(values)
    return groups


def run_demo(args, config_overrides: Optional[Dict[str, object]] = None) -> int:
    """The demo; ``args`` carries its options (quick, output, model, no_progress, config: a YAML
    path), ``config_overrides`` the AlterConfig values given on the command line."""
    from alter.config import build_config
    from alter.data.synthetic import SyntheticAuthors
    from alter.experiments.plots import entropy_histogram
    from alter.train import AlterTrainer

    preset = QUICK if args.quick else DemoPreset()
    progress = not args.no_progress
    out_dir = Path(args.output or ("alter_runs/demo-quick" if args.quick else "alter_runs/demo"))
    timings: Dict[str, float] = {}
    t_start = t = time.time()
    torch.manual_seed(preset.seed)

    bench = SyntheticAuthors(n_authors=preset.n_authors, questions_per_author=preset.questions_per_author,
                             seed=preset.seed)
    split = bench.split(preset.forget_percent, per_author_domains=True)
    forget, retain = split.forget, split.retain
    per = preset.questions_per_author
    retain_eval = [e for i, e in enumerate(retain) if i % per < preset.eval_retain_per_author]
    holdout_eval = split.holdout[:preset.eval_holdout]
    logger.info(f"[demo] {preset.n_authors} synthetic authors x {per} questions; forgetting "
                f"{len(split.forget_authors)} author(s) ({len(forget)} QA), retaining {len(retain)} QA")

    model, tokenizer, ft_report = _finetuned_model(args.model, forget + retain, preset, progress,
                                                   use_cache=not args.quick)
    t = _stage("load + teach the authors (fine-tune)", timings, t)
    sets = {"forget": _without_truth_ratio_fields(forget), "retain": _without_truth_ratio_fields(retain_eval)}
    before = _evaluate(model, tokenizer, {**sets, "never-seen": _without_truth_ratio_fields(holdout_eval)},
                       preset, progress)
    t = _stage("evaluate before", timings, t)

    config = build_config({**preset.alter, "system_prompt": preset.system_prompt, "seed": preset.seed},
                          getattr(args, "config", None), config_overrides)
    trainer = AlterTrainer(model, tokenizer, config, forget, retain, output_dir=out_dir, progress=progress)
    wrapped = trainer.train()
    t = _stage("unlearn with ALTER", timings, t)
    after = _evaluate(wrapped, tokenizer, sets, preset, progress)
    t = _stage("evaluate after", timings, t)

    table = _table(before, after)
    samples = _samples(before, after)
    rep = trainer.report
    hist = entropy_histogram(_answer_entropies_by_domain(trainer), rep.theta, out_dir / "entropy_histogram.png",
                             q=config.q)
    f_b, f_a = before["forget"]["rougeL_recall"], after["forget"]["rougeL_recall"]
    r_b, r_a = before["retain"]["rougeL_recall"], after["retain"]["rougeL_recall"]
    if args.quick:   # the smoke run teaches 1 epoch, so its model barely knows the authors: it checks the direction
        checks = {
            "forget answer probability fell": after["forget"]["probability"] < before["forget"]["probability"],
            "retain ROUGE-L recall within 10% of before": r_a >= 0.9 * r_b,
        }
    else:
        checks = {
            "forget ROUGE-L recall at most half of before": f_a <= 0.5 * f_b,
            "retain ROUGE-L recall within 10% of before": r_a >= 0.9 * r_b,
        }
    timings["total"] = round(time.time() - t_start, 1)
    metrics = {
        "preset": dataclasses.asdict(preset), "quick": bool(args.quick), "model": args.model,
        "finetune": ft_report, "before": before, "after": after, "checks": checks,
        "train_report": rep.to_dict(), "config": config.to_dict(), "timings_seconds": timings,
        "adapter_parameters": wrapped.adapter_parameter_count(),
    }
    alter_io.atomic_write_json(out_dir / "metrics.json", metrics)
    alter_io.atomic_write_bytes(out_dir / "demo_table.md", (table + "\n\n```\n" + samples + "\n```\n").encode())

    print_report(table, samples, rep, config, checks,
                 f"wrote {out_dir / 'metrics.json'}, {out_dir / 'demo_table.md'}, {hist}, adapter in {out_dir / 'adapter'}")
    logger.info(f"[demo] total {timings['total']:.0f} s")
    if not all(checks.values()):
        logger.warning("[demo] a check FAILED: the unlearning did not meet the demo's targets")
        return 1
    return 0


def print_report(table: str, samples: str, rep, config, checks: dict, written: str) -> None:
    """The demo's result on standard output (its progress lines are logged to standard error)."""
    print("\n" + table + "\n")
    print(samples + "\n")
    print(f"theta = {rep.theta:.3f} (Otsu, q = {config.q:g}); {rep.entropy_summary['frac_high']:.0%} of the "
          f"trained (forget) answer tokens are high entropy")
    for name, ok in checks.items():
        print(f"[{'PASS' if ok else 'FAIL'}] {name}")
    print(written, flush=True)
