"""One method of the comparison, in its own process: unlearn, time it, evaluate it, write JSON.

    python -m alter.experiments.compare.worker --settings S.json --method NAME --output R.json [--reference RETAIN.json]

A fresh process per method makes wall time and peak memory comparable (a process's peak RSS
only grows). Every method starts from the same cached fine-tuned model; ``retain`` is the
base model fine-tuned on the retain set alone, whose forget-set statistics are the reference
for forget quality (TOFU's KS test).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import torch

from alter import io as alter_io
from alter.baselines.registry import method_info
from alter.experiments.compare.settings import CompareSettings
from alter.experiments.compare.variants import MethodSpec, parse_spec


@dataclasses.dataclass
class CompareData:
    forget: list
    retain: list
    forget_eval: list
    retain_eval: list
    real_authors: list
    world_facts: list
    holdout: list
    replay: list          # general-knowledge QA mixed into fine-tuning, disjoint from the utility sets
    teach: list = dataclasses.field(default_factory=list)   # what the starting model learnt (besides replay)
    forget_reworded: list = dataclasses.field(default_factory=list)
    retain_reworded: list = dataclasses.field(default_factory=list)


def _every(examples: list, per_group: int, group_size: int) -> list:
    """The first ``per_group`` of each consecutive group of ``group_size`` examples."""
    return [e for i, e in enumerate(examples) if i % group_size < per_group]


def build_tofu_data(s: CompareSettings) -> CompareData:
    from alter.experiments.compare.settings import TOFU_AUTHORS
    from alter.data.tofu import load_tofu, reworded

    if s.tofu_split not in ("tune", "report"):
        raise ValueError(f"tofu_split must be 'tune' or 'report', got {s.tofu_split!r}")
    if not s.data_dir:
        raise ValueError("the TOFU benchmark needs data_dir (--data DIR): a directory with authors.jsonl, "
                         "world_facts.jsonl and real_authors.jsonl")
    tofu = load_tofu(s.data_dir)
    forget = tofu.of(TOFU_AUTHORS[s.tofu_split])
    retain = tofu.of(TOFU_AUTHORS["retain"], domain="retain")
    taught = tofu.of(TOFU_AUTHORS["retain"] + TOFU_AUTHORS["tune"] + TOFU_AUTHORS["report"], domain="retain")
    never = tofu.of(TOFU_AUTHORS["never_taught"], domain="retain")
    per = len(tofu.authors[TOFU_AUTHORS["retain"][0]])
    forget_eval = forget[::max(1, len(forget) // s.eval_forget)][:s.eval_forget] if s.eval_forget else forget
    retain_eval = _every(retain, s.eval_retain_per_author, per)
    holdout = _every(never, max(1, s.eval_never_taught // len(TOFU_AUTHORS["never_taught"])), per)
    # general knowledge: even items are scored, odd items replayed while teaching (as the synthetic run)
    replay = (tofu.real_authors[1::2] + tofu.world_facts[1::2]) if s.replay_general else []
    # reworded questions: taken from the items *not* scored in the trained wording where possible
    n = s.eval_reworded
    forget_rw = reworded(forget[::-1], n)
    retain_rw = reworded([e for e in retain if e not in retain_eval] or retain, n)
    return CompareData(forget, retain, forget_eval, retain_eval, tofu.real_authors[0::2][:s.eval_general],
                       tofu.world_facts[0::2][:s.eval_general], holdout, replay, teach=taught,
                       forget_reworded=forget_rw, retain_reworded=retain_rw)


def build_data(s: CompareSettings) -> CompareData:
    if s.dataset == "tofu":
        return build_tofu_data(s)
    if s.dataset == "muse_news":
        from alter.experiments.compare.muse import build_muse_data
        return build_muse_data(s)
    if s.dataset != "synthetic":
        raise ValueError(f"unknown dataset {s.dataset!r}: 'synthetic', 'tofu' or 'muse_news'")
    from alter.data.general_knowledge import real_authors, world_facts
    from alter.data.synthetic import SyntheticAuthors

    bench = SyntheticAuthors(n_authors=s.n_authors, questions_per_author=s.questions_per_author, seed=s.seed)
    split = bench.split(s.forget_percent, per_author_domains=True)
    per = s.questions_per_author
    retain_eval = [e for i, e in enumerate(split.retain) if i % per < s.eval_retain_per_author]
    # Even items measure model utility; odd items are replayed while teaching the authors, so that
    # memorising 10 templated answers per author does not erase how the model answers anything
    # else (without replay every general question came back in the authors' format).
    real, world = real_authors(), world_facts()
    replay = (real[1::2] + world[1::2]) if s.replay_general else []
    return CompareData(split.forget, split.retain, split.forget, retain_eval, real[0::2][:s.eval_general],
                       world[0::2][:s.eval_general], split.holdout, replay)


def _finetune_settings(s: CompareSettings) -> dict:
    return dict(epochs=s.finetune_epochs, lr=s.finetune_lr, batch_size=s.finetune_batch_size,
                trainable=s.finetune_trainable, system_prompt=s.system_prompt, seed=s.seed)


def starting_model(s: CompareSettings, data: CompareData, progress: bool):
    """The model every unlearning method starts from: the base fine-tuned on forget + retain (cached)."""
    from alter.train.supervised import cached_finetune

    taught = data.teach or (data.forget + data.retain)
    return cached_finetune(s.model, taught + data.replay, tag=s.dataset if s.dataset != "synthetic" else "compare",
                           use_cache=s.use_cache,
                           progress=progress, desc="teach the authors", **_finetune_settings(s))


def _unlearn(spec: MethodSpec, s: CompareSettings, data: CompareData, progress: bool):
    """``(model to evaluate, tokenizer, efficiency dict)``; the spec's lr, epochs and seed override the settings'."""
    from alter.eval.efficiency import measure
    from alter.train.supervised import cached_finetune

    method = spec.method
    seed = s.seed if spec.seed is None else spec.seed
    epochs = s.unlearn_epochs if spec.epochs is None else spec.epochs

    if method == "retain":
        tag = "muse_news-retain" if s.dataset == "muse_news" else "retain"
        model, tok, rep = cached_finetune(s.model, data.retain + data.replay, tag=tag, use_cache=s.use_cache,
                                          progress=progress, desc="retain model", **_finetune_settings(s))
        return model, tok, {"train_seconds": rep.get("seconds"), "peak_memory_bytes": rep.get("peak_memory_bytes"),
                            "trainable_parameters": rep.get("trainable_parameters"), "from_cache": rep["cached"]}
    model, tok, _ = starting_model(s, data, progress)
    if method == "finetune":
        return model, tok, {"train_seconds": 0.0, "peak_memory_bytes": None, "trainable_parameters": 0}
    with measure() as rec:
        info = method_info(method)
        if info.kind == "alter":
            import alter
            from alter.train import AlterTrainer

            values = {"phase2_epochs": epochs, "batch_size": s.batch_size,
                      "system_prompt": s.system_prompt, **s.alter, **info.alter_config, "seed": seed}
            if spec.lr is not None:
                values["lr_phase2"] = spec.lr
            if spec.epochs is not None:
                values["phase2_epochs"] = spec.epochs
            trainer = AlterTrainer(model, tok, alter.AlterConfig.from_dict(values), data.forget, data.retain,
                                   progress=progress, stop_reference=stop_reference(data))
            model = trainer.train()
            trainable = model.adapter_parameter_count()
            steps = trainer.report.phases.get("phase2", {}).get("steps")   # fewer than planned when stopped early
            # the share of answer tokens below theta: the positions the hinge can act on
            low_share = 1.0 - float(trainer.report.entropy_summary.get("frac_high", 0.0))
        else:
            from alter.baselines import run_unlearning

            result = run_unlearning(method, model, tok, data.forget, data.retain, epochs=epochs,
                                    batch_size=s.batch_size, lr=spec.lr or s.method_lr.get(method), seed=seed,
                                    system_prompt=s.system_prompt, progress=progress)
            model = result.model
            trainable = result.report.trainable_parameters
            steps = result.report.steps
            low_share = None
    eff = rec.to_dict()
    return model, tok, {"train_seconds": eff["wall_s"], "peak_memory_bytes": eff.get("peak_rss_bytes")
                        or eff.get("cuda_peak_allocated_bytes"), "trainable_parameters": trainable,
                        "unlearn_steps": steps, "low_entropy_share": low_share}


def stop_reference(data: CompareData):
    """Unseen text of the forget set's kind for the forget-level stop (MUSE-News: the reference windows)."""
    muse = getattr(data, "muse", None)
    return muse.reference_windows if muse is not None else None


def _extra_sets(model, tok, s: CompareSettings, data: CompareData, progress: bool) -> Dict:
    """Never-taught authors and questions in a new wording (scored on generation), general-knowledge
    accuracy (the true answer more likely than every wrong option). Empty for the synthetic run."""
    from alter.eval.evaluators import evaluate_qa

    if s.dataset != "tofu":
        return {}
    out: Dict = {}
    kw = dict(batch_size=s.eval_batch_size, max_new_tokens=s.max_new_tokens, system_prompt=s.system_prompt,
              progress=progress)
    for name, exs in (("never_taught", data.holdout), ("forget_reworded", data.forget_reworded),
                      ("retain_reworded", data.retain_reworded)):
        if exs:
            r = evaluate_qa(model, tok, exs, name=name, **kw)
            out[f"{name}_rougeL_recall"] = r["rougeL_recall"]
            out[f"{name}_probability"] = r["probability"]
            out[f"{name}_generations"] = r["generations"]
    for name, exs in (("world_facts", data.world_facts), ("real_authors", data.real_authors)):
        if exs:
            r = evaluate_qa(model, tok, exs, name=name, generate=False, **kw)
            out[f"{name}_accuracy"] = _option_accuracy(r)
    return out


def _spread(examples: list, n: int) -> list:
    """``n`` examples spread evenly over the list (every author of a TOFU set gets its share)."""
    return examples[::max(1, len(examples) // n)][:n] if n else []


# the per-question outputs of the extra columns that a method's result keeps besides its row (the robustness
# table's intervals are computed from the scores: alter/experiments/compare/robustness_intervals.py)
KEPT_EXTRAS = ("robustness_generations", "robustness_scores")


def _robustness_columns(model, tok, s: CompareSettings, data: CompareData, progress: bool) -> Dict:
    """``robust_<side>:<variant>``: mean ROUGE-L recall of the answers under each prompt variant
    (:mod:`alter.eval.robustness`); the table turns them into leaks against finetune and retain."""
    if s.dataset != "tofu" or not s.eval_robustness:
        return {}
    from alter.eval.robustness import evaluate_robustness

    r = evaluate_robustness(model, tok, _spread(data.forget_eval, s.eval_robustness),
                            _spread(data.retain_eval, s.eval_robustness), data.world_facts,
                            forget_pool=data.forget, retain_pool=data.retain, system_prompt=s.system_prompt,
                            max_new_tokens=s.max_new_tokens, batch_size=s.eval_batch_size, progress=progress)
    out = {f"robust_{side}:{v}": value for side in ("forget", "retain") for v, value in r[side].items()}
    out["robustness_generations"] = r["generations"]
    out["robustness_scores"] = r["scores"]          # per question: the table's bootstrap interval of each leak
    return out


def _routing_columns(model, tok, s: CompareSettings, data: CompareData) -> Dict:
    """``routed_forget:<kind>``: the share of each kind of question the question router sends to a forget
    expert (``routed_own:forget*``: to the expert of its own author). Empty for other models."""
    router = getattr(model, "question_router", None)
    if s.dataset != "tofu" or router is None or not router.fitted:
        return {}
    from alter.data.prompts import collate, encode_qa, pad_id

    kinds = {"forget": data.forget, "forget_reworded": data.forget_reworded, "retain": data.retain,
             "retain_reworded": data.retain_reworded, "never_taught": data.holdout,
             "world_facts": data.world_facts, "real_authors": data.real_authors}
    out: Dict = {}
    for kind, exs in kinds.items():
        if not exs:
            continue
        routed = own = 0
        for start in range(0, len(exs), s.eval_batch_size):
            chunk = exs[start:start + s.eval_batch_size]
            enc = [encode_qa(tok, e.question, "", system_prompt=s.system_prompt) for e in chunk]
            batch = collate(enc, pad_id(tok))
            lengths = torch.tensor([e.prompt_length for e in enc])
            with torch.no_grad():
                u = model.route_questions(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device),
                                          lengths.to(model.device))[1]
            chosen = u[:, 1:].max(dim=1)
            to_forget = router.routed_to_forget(u).cpu()
            routed += int(to_forget.sum())
            for e, f, k in zip(chunk, to_forget.tolist(), chosen.indices.tolist()):
                own += bool(f) and e.domain in model.domains and model.domain_index(e.domain) == 1 + k
        out[f"routed_forget:{kind}"] = routed / len(exs)
        if kind.startswith("forget"):
            out[f"routed_own:{kind}"] = own / len(exs)
    return out


def _option_accuracy(result: Dict) -> Optional[float]:
    """Share of items whose answer has a lower mean NLL than every one of its wrong options."""
    pairs = [(m, p) for m, p in zip(result["avg_nll_per_item"], result.get("perturbed_avg_nll_per_item") or [])
             if m is not None and p]
    return sum(1 for m, p in pairs if m < min(p)) / len(pairs) if pairs else None


def _lean_row(model, tok, s: CompareSettings, data: CompareData, progress: bool) -> Dict:
    """The tuning sweep's scores: generated answers to forget, retain and never-taught questions only."""
    from alter.eval.evaluators import evaluate_qa

    row: Dict = {}
    kw = dict(batch_size=s.eval_batch_size, max_new_tokens=s.max_new_tokens, system_prompt=s.system_prompt,
              progress=progress)
    for name, exs in (("forget", data.forget_eval), ("retain", data.retain_eval), ("never_taught", data.holdout)):
        r = evaluate_qa(model, tok, exs, name=name, **kw)
        row[f"{name}_rougeL_recall"] = r["rougeL_recall"]
        row[f"{name}_probability"] = r["probability"]
    return row


def run_method(method: str, s: CompareSettings, reference: Optional[dict] = None, progress: bool = True) -> Dict:
    """Unlearn with one method spec (``alter``, ``npo@lr=1e-05``, ``alter@seed=1``) and score it."""
    from alter.modeling import model_loading
    from alter.eval.evaluators import evaluate_fluency, evaluate_tofu

    spec = parse_spec(method)
    torch.manual_seed(s.seed if spec.seed is None else spec.seed)
    data = build_data(s)
    if s.dataset == "muse_news" and s.muse_requests:
        from alter.experiments.compare.sequential import run_sequential
        return run_sequential(spec, s, data, progress)
    t0 = time.time()
    model, tok, efficiency = _unlearn(spec, s, data, progress)
    model.eval()
    if s.dataset == "muse_news":
        return _muse_result(spec, model, tok, s, data, reference, efficiency, t0, progress)
    if s.eval_lean:
        row = {"method": spec.name, **_lean_row(model, tok, s, data, progress), **efficiency,
               "total_seconds": round(time.time() - t0, 1)}
        return {"row": row}
    tofu = evaluate_tofu(model, tok, data.forget_eval, data.retain_eval, data.real_authors, data.world_facts,
                         data.holdout, reference, batch_size=s.eval_batch_size, max_new_tokens=s.max_new_tokens,
                         system_prompt=s.system_prompt, progress=progress)
    extra = _extra_sets(model, tok, s, data, progress)
    probs = [p for p in tofu["sets"]["forget"]["probability_per_item"] if p is not None]
    tofu["reference_stats"]["forget_probabilities"] = probs
    ref_probs = (reference or {}).get("forget_probabilities")
    if ref_probs and probs:
        from alter.eval.metrics.tofu import forget_quality
        extra["forget_probability_ks_p"] = forget_quality(probs, ref_probs)["forget_quality"]
    extra.update(_robustness_columns(model, tok, s, data, progress))
    extra.update(_routing_columns(model, tok, s, data))
    del model
    judge, judge_tok = model_loading.load(s.model)                  # the original model judges fluency
    sets = tofu.get("sets", {})
    questions = sets["forget"]["questions"] + sets["retain"]["questions"]
    generations = sets["forget"]["generations"] + sets["retain"]["generations"]
    fluency = evaluate_fluency(judge, judge_tok, questions, generations, batch_size=s.eval_batch_size,
                               system_prompt=s.system_prompt, progress=progress)
    row = {
        "method": spec.name,
        "forget_rougeL_recall": tofu["forget_rougeL_recall"], "forget_probability": tofu["forget_probability"],
        "forget_truth_ratio": tofu["forget_truth_ratio"], "forget_quality": tofu.get("forget_quality"),
        "model_utility": tofu["model_utility"], "retain_rougeL_recall": tofu.get("retain_rougeL_recall"),
        "privleak": tofu.get("privleak"), "fluency_mean": fluency["mean"], "fluency_var": fluency["var"],
        **efficiency, "total_seconds": round(time.time() - t0, 1),
        **{k: v for k, v in extra.items() if not isinstance(v, (list, dict))},
    }
    return {"row": row, "tofu": tofu, "fluency": fluency, "reference_stats": tofu.get("reference_stats"),
            **{k: extra.get(k) for k in KEPT_EXTRAS}}


def _muse_result(spec, model, tok, s, data, reference, efficiency, t0, progress) -> Dict:
    from alter.modeling import model_loading
    from alter.experiments.compare.muse import continuation_fluency, evaluate_muse

    r = evaluate_muse(model, tok, s, data, reference, progress)
    if spec.method == "retain":                 # the never-taught model is the reference: against itself, 0
        r["row"]["privleak"] = 0.0
    del model
    judge, judge_tok = model_loading.load(s.model)                  # the original model judges fluency
    fluency = continuation_fluency(judge, judge_tok, *r["fluency_inputs"], batch_size=s.eval_batch_size)
    row = {"method": spec.name, **r["row"], "fluency_mean": fluency["mean"], "fluency_var": fluency["var"],
           **efficiency, "total_seconds": round(time.time() - t0, 1)}
    return {"row": row, "muse": r["details"], "fluency": fluency, "reference_stats": r["reference_stats"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m alter.experiments.compare.worker")
    p.add_argument("--settings", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--reference", default=None, help="the retain model's result JSON (for forget quality)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from alter.cli.logs import configure_logging
    configure_logging()                      # as in the command that started it: library messages on stderr
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = CompareSettings.from_dict(json.loads(Path(args.settings).read_text()))
    reference = None
    if args.reference:
        reference = json.loads(Path(args.reference).read_text()).get("reference_stats")
    result = run_method(args.method, settings, reference, progress=not args.no_progress)
    alter_io.atomic_write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
