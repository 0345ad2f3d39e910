"""Tokenised training items and the exact order of every batch of both phases.

The order is a pure function of (seed, phase, epoch), so a run resumed from a checkpoint at
step k replays batches k+1, k+2, ... exactly as the uninterrupted run would have.

- Phase I (docs/method.md §4) iterates over D_R ∪ D_F.
- Phase II iterates over the forget set; each step takes ``batch_size`` forget examples and
  ``round(batch_size * retain_per_forget)`` retain examples drawn at random (the pairing of
  forget and retain batches that open-unlearning's unlearning trainers use), so an epoch's cost
  scales with the forget set, not with a large retain set. Each forget row that has a twin (the same
  question and answer under a prompt without the chat template, :func:`plain_twins`) is replaced by it
  with probability ``plain_prompt_share`` (:func:`swap_in_twins`, docs/method.md §4 "Prompt formats").
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from alter.data.prompts import IGNORE_INDEX, EncodedExample, encode_plain, encode_qa, has_chat_template


@dataclass
class TrainItem:
    encoded: EncodedExample
    domain_id: int                                   # expert index: 0 retain, k forget sub-domain k
    position_entropy: Optional[torch.Tensor] = None  # [T] base S_q of the distribution at each position
    content: Optional[List[bool]] = None             # [T] answer tokens that carry content (see content_flags)
    route_strength: float = 1.0                      # question router's held-out z of its own domain (training)
    kl_targets: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # ([T, k] ids, [T, k+1] log p): kl_targets.py
    twin_of: int = -1                                # the item this one repeats under a plain prompt (-1: none)


# Words the hinge leaves alone under ``hinge_tokens="content"``: pushing "the" or "was" below the
# runner-up breaks the grammar of an answer that should only get the fact wrong.
FUNCTION_WORDS = frozenset("""
a an the of in on at to for from by with about as into over under and or but nor so yet if than then
is are was were be been being am has have had do does did will would shall should can could may might must
it its he him his she her hers they them their theirs we us our you your i me my this that these those
who whom whose which what where when why how there here not no also very
""".split())


def _token_text(tokenizer, t: int, texts: dict) -> str:
    if t not in texts:
        texts[t] = tokenizer.decode([t]).strip().lower()
    return texts[t]


def content_flags(tokenizer, ids: Sequence[int], labels: Sequence[int],
                  cache: Optional[dict] = None, skip_copied: bool = False) -> List[bool]:
    """True for answer tokens that carry content: not special (EOS), not punctuation-only, not a function word.

    ``skip_copied``: also False for answer tokens whose text (stripped, lower case) occurs among the
    prompt's tokens (the names and words an answer restates from its question: a model that never
    learnt the fact copies them too; docs/method.md section 4). ``cache`` (token id -> text) may be
    shared between calls with the same tokenizer."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    cache = {} if cache is None else cache
    copied = ({_token_text(tokenizer, t, cache) for t, lab in zip(ids, labels)
               if lab == IGNORE_INDEX and t not in special} if skip_copied else set())
    out = []
    for t, lab in zip(ids, labels):
        if lab == IGNORE_INDEX or t in special:
            out.append(False)
            continue
        text = _token_text(tokenizer, t, cache)
        out.append(any(c.isalnum() for c in text) and text not in FUNCTION_WORDS and text not in copied)
    return out


def encode_items(tokenizer, examples: Sequence, domain_ids: Sequence[int], *, system_prompt=None,
                 max_length: int = 256, skip_copied: bool = False) -> List[TrainItem]:
    items = []
    flags: dict = {}
    for ex, d in zip(examples, domain_ids):
        enc = encode_qa(tokenizer, ex.question, ex.answer, system_prompt=system_prompt, max_length=max_length)
        if not any(label != IGNORE_INDEX for label in enc.labels):
            raise ValueError(f"example {getattr(ex, 'id', None) or ex.question[:60]!r} has no answer tokens left "
                             f"after truncation to max_length={max_length}")
        items.append(TrainItem(enc, int(d), content=content_flags(tokenizer, enc.input_ids, enc.labels, flags,
                                                                         skip_copied=skip_copied)))
    return items


# The prompts without a chat template that phase II also trains forget rows under (docs/method.md §4, "Prompt
# formats"): (prompt, separator before the answer). The robustness benchmark's raw variant, "Question: ...
# Answer:", is neither of them: it measures a format training never saw.
PLAIN_FORMATS = (("{question}\n", ""), ("Q: {question}\nA:", " "))


def plain_twins(tokenizer, examples: Sequence, items: Sequence[TrainItem], *, max_length: int = 256,
                skip_copied: bool = False, seed: int = 0) -> List[TrainItem]:
    """For ``items[i]`` (encoded from ``examples[i]`` under the chat template), the same question and answer
    under one of :data:`PLAIN_FORMATS` (chosen per example from ``seed``), marked ``twin_of=i``. No twin for a
    tokenizer without a chat template (its prompts are plain already) or a passage (no question)."""
    if not has_chat_template(tokenizer):
        return []
    pick = torch.randint(len(PLAIN_FORMATS), (len(examples),), generator=_generator(seed, "plain_formats")).tolist()
    twins, flags = [], {}
    for i, (ex, it) in enumerate(zip(examples, items)):
        if not getattr(ex, "question", None):
            continue
        prompt, sep = PLAIN_FORMATS[pick[i]]
        enc = encode_plain(tokenizer, prompt.format(question=ex.question), sep + ex.answer, max_length=max_length)
        if not any(label != IGNORE_INDEX for label in enc.labels):
            continue
        twins.append(TrainItem(enc, it.domain_id, content=content_flags(tokenizer, enc.input_ids, enc.labels, flags,
                                                                        skip_copied=skip_copied), twin_of=i))
    return twins


def swap_in_twins(plan: List[List[int]], twin: dict, share: float, seed: int, tag: str = "phase2") -> List[List[int]]:
    """Each row ``i`` of ``plan`` that has a twin (``twin[i]``) replaced by it with probability ``share``,
    drawn from ``(seed, tag)``: the same plan on every resume."""
    if share <= 0 or not twin:
        return plan
    gen = _generator(seed, tag, "plain_formats")
    out = []
    for step in plan:
        draws = torch.rand(len(step), generator=gen).tolist()
        out.append([twin[i] if i in twin and u < share else i for i, u in zip(step, draws)])
    return out


def forget_domain_of(example, retain_domain: str) -> str:
    """The forget sub-domain an example names; "forget" when it names none (or the retain domain)."""
    return example.domain if example.domain and example.domain != retain_domain else "forget"


def collate_items(items: Sequence[TrainItem], pad_token_id: int) -> dict:
    """Right-padded batch; ``position_entropy`` is +inf on padding (never selected: labels are -100 there)."""
    T = max(len(it.encoded.input_ids) for it in items)
    B = len(items)
    ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    ent = torch.full((B, T), float("inf"))
    content = torch.zeros((B, T), dtype=torch.bool)
    have_entropy = all(it.position_entropy is not None for it in items)
    for i, it in enumerate(items):
        n = len(it.encoded.input_ids)
        ids[i, :n] = torch.tensor(it.encoded.input_ids)
        labels[i, :n] = torch.tensor(it.encoded.labels)
        mask[i, :n] = 1
        if it.content is not None:
            content[i, :n] = torch.tensor(it.content, dtype=torch.bool)
        if have_entropy:
            ent[i, :n] = it.position_entropy
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
             "domain": torch.tensor([it.domain_id for it in items], dtype=torch.long), "content": content,
             "route_strength": torch.tensor([it.route_strength for it in items], dtype=torch.float32)}
    if have_entropy:
        batch["position_entropy"] = ent
    if items and all(it.kl_targets is not None for it in items):    # padding rows: never selected (mask 0)
        k = items[0].kl_targets[0].shape[1]
        kl_ids = torch.zeros((B, T, k), dtype=torch.long)
        kl_log_p = torch.zeros((B, T, k + 1), dtype=torch.float32)
        for i, it in enumerate(items):
            n = len(it.encoded.input_ids)
            kl_ids[i, :n], kl_log_p[i, :n] = it.kl_targets[0], it.kl_targets[1]
        batch["kl_ids"], batch["kl_log_p"] = kl_ids, kl_log_p
    return batch


def _generator(seed: int, *tags) -> torch.Generator:
    digest = hashlib.sha256(repr((seed,) + tags).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _epoch_orders(n: int, epochs: float, seed: int, phase: str) -> List[List[int]]:
    """One permutation per (possibly fractional) epoch; the last epoch may be a prefix."""
    orders = []
    full = int(math.floor(epochs))
    for e in range(full):
        orders.append(torch.randperm(n, generator=_generator(seed, phase, e)).tolist())
    frac = epochs - full
    if frac > 1e-9:
        perm = torch.randperm(n, generator=_generator(seed, phase, full)).tolist()
        orders.append(perm[:max(1, int(round(frac * n)))])
    return orders


def phase1_plan(n_items: int, batch_size: int, epochs: float, seed: int) -> List[List[int]]:
    plan = []
    for order in _epoch_orders(n_items, epochs, seed, "phase1"):
        plan += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return plan


def phase2_plan(forget_idx: Sequence[int], retain_idx: Sequence[int], batch_size: int, epochs: float,
                retain_per_forget: float, seed: int, tag: str = "phase2") -> List[List[int]]:
    if not forget_idx:
        raise ValueError("empty forget set: phase II needs at least one forget example")
    plan = []
    for e, order in enumerate(_epoch_orders(len(forget_idx), epochs, seed, tag)):
        gen = _generator(seed, tag, "retain", e)
        for i in range(0, len(order), batch_size):
            chunk = [forget_idx[j] for j in order[i:i + batch_size]]
            k = min(len(retain_idx), int(round(len(chunk) * retain_per_forget)))
            if k:
                picks = torch.randperm(len(retain_idx), generator=gen)[:k].tolist()
                chunk += [retain_idx[j] for j in picks]
            plan.append(chunk)
    return plan


def rank_share(step: Sequence[int], rank: int, world: int):
    """``(example indices, loss weight)`` of one process in a step of ``world`` data-parallel processes.

    Examples are dealt round-robin. DDP averages the processes' gradients, so a process's loss is
    weighted ``world / active`` (active: processes that got an example) and a process left without
    one runs the step's first example at weight 0: it takes part in the gradient all-reduce without
    counting an example twice. With one process: every example, weight 1."""
    mine = list(step[rank::world])
    active = min(len(step), world)
    if not mine:
        return list(step[:1]), 0.0
    return mine, world / active
