"""What the question router's banks are built from, before phase II (docs/method.md §3, §4).

- :func:`configure_units`: a fresh router learns from the tokenizer what its unit is (the chat's last
  user turn, its header's ids), which words refer back, and that it reads each unit alone; from the forget
  set how many of a unit's tokens must match (:func:`evidence_share`); from the training prompts the casing
  a unit typed in lower case gets back (:mod:`alter.modeling.case_restore`);
- :func:`router_only_rows`: the rows whose only use is the bank (the retain rows when nothing trains
  on them), which then get no full base pass;
- :func:`unit_features`: each row's routing-unit features, from passes cut at the router's block (a
  passage, a row without a prompt, is read whole: a raw prompt is routed by all of it);
- :func:`configure_names`: with ``route_names``, each forget domain's person's name as token ids
  (:mod:`alter.modeling.name_match`), so a question naming them in part still reaches their expert; with
  ``route_forget_questions``, each forget question's own wording (:mod:`alter.modeling.question_match`);
- :func:`name_variant_features`: with ``router_name_variants``, the same for each forget question with its
  names altered (:mod:`alter.data.name_variants`), more rows of its domain's bank;
- :func:`fit_question_router` / :func:`fill_new_bank`: the banks and threshold fitted from those features
  (or, in continual unlearning, only a new domain's bank filled) and each forget item's held-out strength.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from alter.config import AlterConfig
from alter.data.name_variants import name_variants
from alter.data.prompts import EncodedExample, collate, prompt_ids
from alter.modeling.case_restore import build_case_map
from alter.modeling.name_match import build_name_matcher
from alter.modeling.question_match import build_question_matcher
from alter.modeling.routing_unit import referring_token_ids, user_turn_marker


PASSAGE_EVIDENCE_SHARE = 0.1     # router_evidence_share when the forget set is passages (docs/method.md §4, Passages)


def configure_units(router, tokenizer, config: AlterConfig, forget: Sequence = (), retain: Sequence = (),
                    items: Sequence = ()) -> None:
    """``forget``: the forget examples, whose kind (passages or questions) sets the automatic evidence share;
    with ``retain``, their prompts teach the case restorer the training prompts' casing; with ``items`` (the
    trainer's, item ``i`` made from ``(forget + retain)[i]``), the forget persons' names (:func:`configure_names`).
    A router calibrated before (a new forget request added to an adapter) keeps its unit, its map and its
    names, and gains the casing and the names of the new request's prompts (:meth:`CaseRestorer.merged`)."""
    if items:
        configure_names(router, tokenizer, config, items, list(forget) + list(retain))
    if router.calibration:
        if router.case_restorer is not None and config.route_restore_case:
            router.case_restorer = router.case_restorer.merged(
                build_case_map(tokenizer, unit_texts(list(forget) + list(retain))), owner=router.num_domains - 1)
        return
    router.turn_marker = user_turn_marker(tokenizer) if config.route_unit == "turn" else None
    router.referring_ids = referring_token_ids(tokenizer) if router.turn_marker and config.route_follow_ups else None
    router.isolated = router.turn_marker is not None
    router.evidence_share = evidence_share(config, forget)
    router.case_restorer = None
    if router.isolated and config.route_restore_case:
        router.case_restorer = build_case_map(tokenizer, unit_texts(list(forget) + list(retain)))


def configure_names(router, tokenizer, config: AlterConfig, items: Sequence, examples: Sequence) -> None:
    """With ``config.route_names``: the router's name matcher from the forget questions of each domain
    (``examples[i]`` is item ``i``'s example) against the retain questions; with ``config.route_forget_questions``
    its question matcher from the same. A router calibrated before (a new request) keeps its names and questions
    and gains those of its new, still empty, domains."""
    if not (config.route_names or config.route_forget_questions):
        return
    asked = [(items[i].domain_id, q) for i, e in enumerate(examples[:len(items)])
             for q in [getattr(e, "question", None)] if q]
    new = {k for k, b in enumerate(router.banks) if k > 0 and b.numel() == 0} if router.calibration else None
    forget: Dict[int, List[str]] = {}
    for d, q in asked:
        if d > 0 and (new is None or d in new):
            forget.setdefault(d, []).append(q)
    retain = [q for d, q in asked if d == 0]
    if config.route_names and new is None:
        router.name_matcher = build_name_matcher(tokenizer, forget, retain)
    elif config.route_names and forget:
        old = router.name_matcher
        added = build_name_matcher(tokenizer, forget, retain, flags=None if old is None else old.flags)
        router.name_matcher = added if old is None else old.merged(added)
    if config.route_forget_questions and (new is None or forget):
        added = build_question_matcher(tokenizer, forget, retain)
        old = router.question_matcher if new is not None else None
        router.question_matcher = added if old is None else old.merged(added)


def unit_texts(examples: Sequence) -> List[str]:
    """The text of each example's routing unit: its question, or a passage's whole text."""
    return [getattr(e, "question", None) or getattr(e, "answer", "") or "" for e in examples]


def evidence_share(config: AlterConfig, forget: Sequence) -> float:
    """``config.router_evidence_share``, or when negative: :data:`PASSAGE_EVIDENCE_SHARE` for a forget set of
    passages (every example without a question: text is recognised by how much of it matches), 0 for
    questions (a question is recognised by a name, a few tokens). Measured in docs/method.md §4, "Passages"."""
    if config.router_evidence_share >= 0:
        return float(config.router_evidence_share)
    passages = bool(forget) and all(not getattr(e, "question", None) for e in forget)
    return PASSAGE_EVIDENCE_SHARE if passages else 0.0


def router_only_rows(config: AlterConfig, model, items: Sequence) -> set:
    """The rows whose only use is the question router's bank: the retain rows, when nothing trains on
    them (question router, phase I off, no retain anchors in phase II, no centroid init). They need
    their prompt's unit features, not entropies or KL targets."""
    if (model.question_router is None or (config.phase1_epochs > 0 and config.token_entropy)
            or config.anchor_per_forget > 0 or config.init == "centroid"):
        return set()
    return {i for i, it in enumerate(items) if it.domain_id == 0}


def unit_features(model, items: Sequence, rows: List[int], batch_size: int, pad_token_id: int,
                  progress: bool = False) -> Dict[int, torch.Tensor]:
    """The routing unit's features ``[n, d]`` of each row's prompt (:meth:`AlterModel.unit_features`)."""
    out: Dict[int, torch.Tensor] = {}
    for s in tqdm(range(0, len(rows), batch_size), desc="router features", disable=not progress, leave=False):
        idx = rows[s:s + batch_size]
        prompts = []
        for i in idx:
            e = items[i].encoded
            n = e.prompt_length or len(e.input_ids)          # a passage (no prompt) is its own unit
            prompts.append(EncodedExample(e.input_ids[:n], e.labels[:n], n))
        batch = collate(prompts, pad_token_id)
        ids = batch["input_ids"].to(model.device)
        mask = batch["attention_mask"].to(model.device)
        for i, f in zip(idx, model.unit_features(ids, mask)):
            out[i] = f.float().cpu()
    return out


def name_variant_features(model, tokenizer, config: AlterConfig, items: Sequence, examples: Sequence,
                          rows: List[int], batch_size: int, pad_token_id: int) -> List[Tuple[int, torch.Tensor]]:
    """``(row, features)`` for each forget row's question (``examples[row]``, the example item ``row`` was made
    from) with its names altered (the surname alone, a letter dropped, a letter doubled:
    :func:`alter.data.name_variants.name_variants`), read as :func:`unit_features` reads the row; ``[]``
    unless ``config.router_name_variants``. Passages and questions without a name add nothing."""
    if not config.router_name_variants:
        return []
    asked = [(i, v) for i in rows if i < len(examples) and items[i].domain_id > 0
             for v in name_variants(getattr(examples[i], "question", None) or "", seed=config.seed)]
    out: List[Tuple[int, torch.Tensor]] = []
    for s in range(0, len(asked), batch_size):
        part = asked[s:s + batch_size]
        prompts = [prompt_ids(tokenizer, v, config.system_prompt) for _, v in part]
        batch = collate([EncodedExample(p, p, len(p)) for p in prompts], pad_token_id)
        feats = model.unit_features(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device))
        out += [(i, f.float().cpu()) for (i, _), f in zip(part, feats)]
    return out


def positioned(variants: Sequence[Tuple[int, torch.Tensor]], rows: Sequence[int]) -> List[Tuple[int, torch.Tensor]]:
    """``variants`` keyed by row, re-keyed by each row's position in ``rows`` (the order the router is fitted in)."""
    at = {i: p for p, i in enumerate(rows)}
    return [(at[i], f) for i, f in variants if i in at]


def fit_question_router(model, items: Sequence, features: Dict[int, torch.Tensor], variants: Sequence,
                        config: AlterConfig) -> Optional[dict]:
    """Banks and threshold of ``model.question_router`` from the training prompts' ``features`` (row ->
    unit features; ``variants``: their altered names, more bank rows), and each forget item's held-out
    strength (``route_strength``). Returns the calibration for the report. Continual unlearning (a router
    already calibrated, new empty domains): only the new domains' banks are filled
    (:func:`fill_new_bank`), the threshold and earlier banks stay."""
    router = model.question_router
    order = sorted(features)
    domains = [items[i].domain_id for i in order]
    empty = [k for k, b in enumerate(router.banks) if b.numel() == 0]
    if router.calibration and empty:
        cal = None
        for k in empty:
            cal = fill_new_bank(model, items, k, [i for i, d in zip(order, domains) if d == k], features, variants,
                                config)
        return cal
    cal = router.fit([features[i] for i in order], domains, max_bank=config.router_bank_size, seed=config.seed,
                     retain_quantile=config.router_retain_quantile,
                     extra=positioned(variants, order))           # a row's altered names join its bank
    for i, z in zip(order, router.loo_strength(domains).tolist()):
        items[i].route_strength = float(z)
    return cal


def fill_new_bank(model, items: Sequence, k: int, rows: List[int], features: Dict[int, torch.Tensor],
                  variants: Sequence, config: AlterConfig) -> dict:
    """A new domain's bank (capped at ``router_bank_size``) and its items' held-out router strength, as a
    fresh fit gives every forget item; returns the new domain's held-out recall at the kept threshold."""
    router = model.question_router
    if not rows:
        raise ValueError(f"no training prompt for the new domain {model.domains[k]!r}")
    scores = router.fill_bank(k, [features[i] for i in rows], max_bank=config.router_bank_size, seed=config.seed,
                              extra=positioned(variants, rows))
    for i, z in zip(rows, router.strength(scores).tolist()):
        items[i].route_strength = float(z)
    return {"new_domain": model.domains[k], "forget_prompts": len(rows),
            "loo_forget_recall": float((scores > router.threshold).float().mean()),
            "bank_rows": int(router.banks[k].shape[0])}
