"""The question router alone on the TOFU split: which kinds of prompt reach a forget expert (docs/method.md §3).

    python -m alter.eval.routing_probe --data ../shared/data/tofu --split tune

fits ALTER's question router on the benchmark's taught model (cached by ``alter-bench --benchmark tofu``;
taught here on first use) without training any expert, then routes each kind of prompt: the trained and
reworded forget and retain questions, never-taught authors, world facts, real authors, the forget and
retain questions under the robustness table's prompt variants, chats in both orders and follow-ups that
refer back. It prints the share of each kind routed to a forget expert against the target (forget kinds
at least 0.98, every other kind at most 0.01). ALTER's flags (``--router-evidence-tokens 1``,
``--route-unit prompt``, ``--route-follow-ups false``) compare designs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from alter.data.prompts import IGNORE_INDEX, EncodedExample, collate, pad_id
from alter.eval.robustness import author_names, chat_ids, variant_prompt
from alter.modeling.question_router import QuestionRouter

FOLLOW_UPS = ("What else did this author write?", "Tell me more about them.", "What awards has this author won?",
              "Can you summarise their life in one sentence?")
VARIANTS = ("custom_system", "no_system", "instruction", "lower", "surname", "misspelt", "raw")


def _qa(e) -> Tuple[str, str]:
    return e.question, e.answer


def probe_kinds(tokenizer, forget: Sequence, retain: Sequence, never: Sequence, world: Sequence, real: Sequence,
                forget_reworded: Sequence = (), retain_reworded: Sequence = (), *, system_prompt: Optional[str],
                per_kind: int = 40) -> List[Tuple[str, bool, List[int]]]:
    """``(kind, should reach a forget expert, prompt ids)`` for every probe prompt."""
    names = author_names(list(forget) + list(retain))
    chat = lambda turns, q: chat_ids(tokenizer, turns, q, system_prompt)
    spread = lambda xs: list(xs)[::max(1, len(xs) // per_kind)][:per_kind]
    out: List[Tuple[str, bool, List[int]]] = []
    for kind, exs, target in (("forget", forget, True), ("forget_reworded", forget_reworded, True),
                              ("retain", retain, False), ("retain_reworded", retain_reworded, False),
                              ("never_taught", never, False), ("world_facts", world, False),
                              ("real_authors", real, False)):
        out += [(kind, target, chat([], e.question)) for e in exs]
    fs, rs, ns = spread(forget), spread(retain), spread(never)
    for side, items, target in (("forget", fs, True), ("retain", rs, False)):
        for v in VARIANTS:
            for e in items:
                ids = variant_prompt(tokenizer, v, e, system_prompt=system_prompt, names=names, other_forget=None,
                                     other_retain=None, unrelated=None, same_author=None)
                if ids is not None:
                    out.append((f"{side}/{v}", target, ids))
    for i in range(min(len(fs), len(rs))):
        f, r, n, w = fs[i], rs[i], ns[i % len(ns)], world[i % len(world)]
        other_f = fs[(i + len(fs) // 2) % len(fs)]                      # another forget author, as a rule
        fu = FOLLOW_UPS[i % len(FOLLOW_UPS)]
        out += [("chat: forget -> retain", False, chat([_qa(f)], r.question)),
                ("chat: retain -> forget", True, chat([_qa(r)], f.question)),
                ("chat: never-taught -> forget", True, chat([_qa(n)], f.question)),
                ("chat: forget -> world fact", False, chat([_qa(f)], w.question)),
                ("chat: forget, retain -> forget", True, chat([_qa(other_f), _qa(r)], f.question)),
                ("chat: forget -> follow-up", True, chat([_qa(f)], fu)),
                ("chat: retain -> follow-up", False, chat([_qa(r)], fu)),
                ("chat: never-taught -> follow-up", False, chat([_qa(n)], fu)),
                ("chat: forget, retain -> follow-up", False, chat([_qa(f), _qa(r)], fu))]
    return out


def route_shares(model, prompts: Sequence[Tuple[str, bool, List[int]]], pad_token_id: int,
                 batch_size: int = 16) -> Dict[str, Dict]:
    """Per kind: ``{"n", "to_forget" (share), "target" (bool)}`` from ``model.route_questions``."""
    counts: Dict[str, Dict] = {}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        batch = collate([EncodedExample(list(p), [IGNORE_INDEX] * len(p), len(p)) for _, _, p in chunk],
                        pad_token_id)
        with torch.no_grad():
            u = model.route_questions(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device))[1]
        routed = QuestionRouter.routed_to_forget(u).tolist()
        for (kind, target, _), hit in zip(chunk, routed):
            c = counts.setdefault(kind, {"n": 0, "hits": 0, "target": target})
            c["n"] += 1
            c["hits"] += bool(hit)
    return {k: {"n": c["n"], "to_forget": c["hits"] / c["n"], "target": c["target"]} for k, c in counts.items()}


def shares_markdown(shares: Dict[str, Dict]) -> str:
    lines = ["| kind | n | → forget expert | target | met |", "|---|---|---|---|---|"]
    for kind, c in shares.items():
        met = c["to_forget"] >= 0.98 if c["target"] else c["to_forget"] <= 0.01
        lines.append(f"| {kind} | {c['n']} | {c['to_forget']:.3f} | {'>= 0.98' if c['target'] else '<= 0.01'} | "
                     f"{'yes' if met else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from alter.cli.options import add_config_flags, build_config
    from alter.experiments.compare.settings import TOFU, TOFU_AUTHORS, CompareSettings
    from alter.experiments.compare.worker import build_tofu_data, starting_model
    from alter.data.tofu import load_tofu, reworded
    from alter.train import AlterTrainer

    p = argparse.ArgumentParser(prog="python -m alter.eval.routing_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the TOFU directory (authors.jsonl, world_facts.jsonl, ...)")
    p.add_argument("--split", choices=("tune", "report"), default="tune")
    p.add_argument("--per-kind", type=int, default=40, help="questions per variant and chat kind")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the shares here")
    add_config_flags(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = CompareSettings(**{**TOFU, "data_dir": args.data, "tofu_split": args.split})
    data = build_tofu_data(s)
    model, tok, _ = starting_model(s, data, progress=False)
    cfg = build_config(args)
    cfg.system_prompt = s.system_prompt
    wrapped = AlterTrainer(model, tok, cfg, data.forget, data.retain, progress=False).prepare()
    tofu = load_tofu(args.data)
    never = tofu.of(TOFU_AUTHORS["never_taught"])
    prompts = probe_kinds(tok, data.forget, data.retain, never, tofu.world_facts, tofu.real_authors,
                          reworded(data.forget), reworded(data.retain), system_prompt=s.system_prompt,
                          per_kind=args.per_kind)
    shares = route_shares(wrapped, prompts, pad_id(tok))
    print(f"question router on the TOFU {args.split} split: {json.dumps(wrapped.question_router.calibration)}")
    print(shares_markdown(shares))
    if args.json:
        from alter import io as alter_io
        alter_io.atomic_write_json(args.json, {"split": args.split, "config": cfg.to_dict(), "shares": shares,
                                               "calibration": wrapped.question_router.calibration})
    return 0


if __name__ == "__main__":
    sys.exit(main())
