"""The degenerate-answer columns of a benchmark run, from the generations its result file keeps.

:mod:`alter.eval.metrics.degeneration` counts loops and stray scripts answer by answer. Every run's JSON
holds its generations, so the columns are computed when the table is written, for runs made before they
existed too (no re-run):

- TOFU: ``forget_degenerate`` (the scored forget questions' answers, each against its question and true
  answer), ``forget_variants_degenerate`` (every robustness variant's forget answers; the scripts allowed are
  those of the forget questions and answers), ``retain_degenerate``;
- MUSE-News: ``verbmem_forget_degenerate`` (the continuations of forget excerpts, each against its true
  continuation) and ``knowmem_forget_degenerate``.
"""

from __future__ import annotations

from typing import Dict

from alter.eval.metrics.degeneration import degenerate_share


def _share(generations, contexts) -> float:
    return degenerate_share(generations, contexts)["degenerate"]


def degeneration_columns(result: Dict) -> Dict[str, float]:
    """The columns the stored ``result`` (a method's JSON under ``methods/``) allows; {} when it keeps none."""
    out: Dict[str, float] = {}
    sets = (result.get("tofu") or {}).get("sets") or {}
    for side in ("forget", "retain"):
        s = sets.get(side) or {}
        if s.get("generations"):
            ctx = [f"{q} {a}" for q, a in zip(s.get("questions") or [], s.get("references") or [])]
            if len(ctx) == len(s["generations"]):
                out[f"{side}_degenerate"] = _share(s["generations"], ctx)
    variants = (result.get("robustness_generations") or {}).get("forget") or {}
    gens = [g for v in variants.values() for g in v]
    if gens:
        forget = sets.get("forget") or {}
        allowed = " ".join(list(forget.get("questions") or []) + list(forget.get("references") or []))
        out["forget_variants_degenerate"] = _share(gens, [allowed] * len(gens))
    muse = result.get("muse") or {}
    verb = muse.get("verbmem_forget") or {}
    if verb.get("generations") and len(verb.get("references") or []) == len(verb["generations"]):
        out["verbmem_forget_degenerate"] = _share(verb["generations"], verb["references"])
    know = muse.get("knowmem_forget") or {}
    if know.get("generations") and len(know.get("questions") or []) == len(know["generations"]):
        answers = know.get("answers") or [""] * len(know["generations"])
        out["knowmem_forget_degenerate"] = _share(know["generations"],
                                                  [f"{q} {a}" for q, a in zip(know["questions"], answers)])
    return out
