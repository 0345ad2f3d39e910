"""Forget sub-domains: labelling examples, listing and grouping domains, checking a forget set.

Spec section 3 splits the forget set into K sub-domains, each trained into its own expert. The
labels come from the data:

- TOFU (``locuslab/TOFU``) stores 20 QA pairs per fictitious author, authors in order, so within a
  file the author of row ``i`` is ``i // 20``: :func:`assign_domains_by_group`.
- WMDP forgets ``bio`` and ``cyber`` knowledge: read each corpus with its own label, or merge
  labelled sets with :func:`label_domains`.
- Any label column: ``load_qa(..., field_map={"domain": "<column>"})``.

Functions return new examples (``dataclasses.replace``); inputs are left untouched.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Mapping, Sequence

from alter.data.schema import FORGET_DOMAIN, QAExample, RETAIN_DOMAIN

TOFU_QA_PER_AUTHOR = 20


def assign_domain(examples: Sequence[QAExample], domain: str) -> List[QAExample]:
    """Every example labelled ``domain``."""
    if not domain:
        raise ValueError("domain must be a non-empty string")
    return [replace(e, domain=domain) for e in examples]


def assign_domains_by_group(examples: Sequence[QAExample], group_size: int = TOFU_QA_PER_AUTHOR, *,
                            prefix: str = "author_", offset: int = 0) -> List[QAExample]:
    """Example ``i`` gets domain ``f"{prefix}{offset + i // group_size}"`` (TOFU: 20 rows per author).

    ``offset`` numbers the groups globally, e.g. TOFU ``forget10`` holds the last 20 of 200 authors,
    so ``offset=180`` gives them their index in ``full``.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if len(examples) % group_size:
        raise ValueError(f"{len(examples)} examples do not split into whole groups of {group_size}")
    return [replace(e, domain=f"{prefix}{offset + i // group_size}") for i, e in enumerate(examples)]


def label_domains(sets: Mapping[str, Sequence[QAExample]]) -> List[QAExample]:
    """Concatenate labelled sets, e.g. ``{"bio": bio_passages, "cyber": cyber_passages}``."""
    out: List[QAExample] = []
    for domain, examples in sets.items():
        out.extend(assign_domain(examples, domain))
    return out


def collapse_forget_domains(examples: Sequence[QAExample], name: str = FORGET_DOMAIN) -> List[QAExample]:
    """One forget domain: every non-retain example relabelled ``name`` (retain examples unchanged)."""
    return [e if e.domain == RETAIN_DOMAIN else replace(e, domain=name) for e in examples]


def forget_domains(examples: Sequence[QAExample]) -> List[str]:
    """The forget sub-domains present, in order of first appearance (the experts' order)."""
    seen: Dict[str, None] = {}
    for e in examples:
        if e.domain != RETAIN_DOMAIN:
            seen.setdefault(e.domain, None)
    return list(seen)


def group_by_domain(examples: Sequence[QAExample]) -> Dict[str, List[QAExample]]:
    """Examples per domain, domains in order of first appearance."""
    groups: Dict[str, List[QAExample]] = {}
    for e in examples:
        groups.setdefault(e.domain, []).append(e)
    return groups


def check_forget_set(forget: Sequence[QAExample], *, name: str = "forget set") -> List[str]:
    """Raise if the forget set is empty or holds retain-labelled examples; return its sub-domains."""
    if len(forget) == 0:
        raise ValueError(f"empty {name}: there is nothing to unlearn (check the forget source, its split "
                         f"and any limit or domain filter)")
    for i, e in enumerate(forget):
        if e.domain == RETAIN_DOMAIN:
            raise ValueError(f"{name} row {i}: domain is {RETAIN_DOMAIN!r} (id {e.id!r}); forget examples need a "
                             f"forget sub-domain label")
    return forget_domains(forget)


def check_retain_set(retain: Sequence[QAExample], *, name: str = "retain set") -> None:
    """Raise if a retain example carries a forget label."""
    for i, e in enumerate(retain):
        if e.domain != RETAIN_DOMAIN:
            raise ValueError(f"{name} row {i}: domain is {e.domain!r} (id {e.id!r}), expected {RETAIN_DOMAIN!r}")
