"""Column names of the real benchmarks, and how one table row becomes a QAExample / MCExample.

Aliases (first match wins) cover the real field names on the Hugging Face hub:

- ``locuslab/TOFU``: ``question``, ``answer``; the ``*_perturbed`` configs add
  ``paraphrased_answer`` (str) and ``perturbed_answer`` (list of str), and ``forget*_perturbed``
  also ``paraphrased_question`` (not used). ``real_authors_perturbed`` / ``world_facts_perturbed``
  have ``question``, ``answer``, ``perturbed_answer``. Columns ``option1``, ``option2``, ... (the
  multiple-choice options of the plain ``real_authors`` / ``world_facts`` configs) become the
  perturbed answers when no ``perturbed_answer`` column exists: every option but the answer.
- ``muse-bench/MUSE-Books`` / ``MUSE-News``: ``knowmem`` has ``question``, ``answer``; ``verbmem``
  has ``prompt`` (the prefix) and ``gt`` (its true continuation), read as question and answer;
  ``raw`` / ``privleak`` / ``train`` have ``text``.
- ``cais/wmdp-corpora``: ``text``. ``cais/wmdp``: ``question``, ``choices``, ``answer`` (int).
  ``cais/mmlu``: ``question``, ``subject``, ``choices``, ``answer`` (ClassLabel 0-3). Local copies
  may spell the answer as a letter ``A``-``D`` and the choices as columns ``A``..``D`` or
  ``option1``..; both are accepted.

A ``field_map`` ``{our_field: column}`` overrides the aliases, e.g. ``{"domain": "author"}`` labels
each row by an ``author`` column. A ``domain`` column in the data wins over a caller's default domain.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from alter.data.schema import (MCExample, QAExample, RETAIN_DOMAIN, missing_field, record_error, validate_mc,
                               validate_qa)

QA_ALIASES: Dict[str, Sequence[str]] = {
    "question": ("question", "prompt"),
    "answer": ("answer", "gt"),
    "paraphrased_answer": ("paraphrased_answer",),
    "perturbed_answers": ("perturbed_answer", "perturbed_answers"),
    "domain": ("domain",),
    "id": ("id",),
}
TEXT_ALIASES: Dict[str, Sequence[str]] = {
    "text": ("text",),
    "domain": ("domain",),
    "id": ("id",),
}
MC_ALIASES: Dict[str, Sequence[str]] = {
    "question": ("question",),
    "choices": ("choices",),
    "answer": ("answer",),
    "subject": ("subject",),
    "id": ("id",),
}
REQUIRED = {"qa": ("question", "answer"), "text": ("text",), "mc": ("question", "answer")}
_ALIASES = {"qa": QA_ALIASES, "text": TEXT_ALIASES, "mc": MC_ALIASES}
_OPTION = re.compile(r"^option(\d+)$")
_LETTER_COLUMNS = ("A", "B", "C", "D", "E", "F")


@dataclass
class Columns:
    """Which column of one table feeds each field (``None`` where the table has none)."""

    kind: str
    source: str
    by_field: Dict[str, Optional[str]]
    options: List[str]

    def column(self, field: str) -> Optional[str]:
        return self.by_field.get(field)


def resolve_columns(kind: str, columns: Sequence[str], field_map: Optional[Mapping[str, str]],
                    source: str) -> Columns:
    """Map our fields to the table's columns; raise naming the file when a required field has no column."""
    aliases = _ALIASES[kind]
    field_map = dict(field_map or {})
    unknown = [k for k in field_map if k not in aliases]
    if unknown:
        raise ValueError(f"{source}: field_map key(s) {unknown} not among the {kind} fields {sorted(aliases)}")
    by_field: Dict[str, Optional[str]] = {}
    for field, names in aliases.items():
        if field in field_map:
            col = field_map[field]
            if col not in columns:
                raise ValueError(f"{source}: field_map maps {field!r} to column {col!r}, which is not among "
                                 f"the columns {list(columns)}")
            by_field[field] = col
        else:
            by_field[field] = next((n for n in names if n in columns), None)
    options = sorted((c for c in columns if _OPTION.match(c)), key=lambda c: int(_OPTION.match(c).group(1)))
    if kind == "mc" and by_field["choices"] is None and not options:
        options = [c for c in _LETTER_COLUMNS if c in columns]
    for field in REQUIRED[kind]:
        if by_field[field] is None:
            raise ValueError(f"{source} row 0: missing field {field!r} (columns: {list(columns)}; "
                             f"accepted names: {list(aliases[field])}, or pass field_map)")
    if kind == "mc" and by_field["choices"] is None and not options:
        raise ValueError(f"{source} row 0: missing field 'choices' (columns: {list(columns)}; expected a "
                         f"'choices' list, option1.. or A..D columns)")
    return Columns(kind, source, by_field, options)


def _text(value: Any) -> Any:
    """Numbers read from JSON/CSV become strings; everything else is left for validation to judge."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _as_list(value: Any) -> Any:
    """A list field: real lists pass; a CSV cell holding a JSON list is parsed; a lone string is [string]."""
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except json.JSONDecodeError:
                return value
            return parsed
        return [value]
    return value


def _get(record: Mapping[str, Any], cols: Columns, field: str) -> Any:
    col = cols.column(field)
    return None if col is None else record.get(col)


def qa_from_record(record: Mapping[str, Any], cols: Columns, *, row: int,
                   default_domain: str = RETAIN_DOMAIN) -> QAExample:
    """One row -> validated ``QAExample``; ``default_domain`` applies where the row has no domain."""
    answer = _text(_get(record, cols, "answer"))
    perturbed = _as_list(_get(record, cols, "perturbed_answers"))
    if isinstance(perturbed, list):
        perturbed = [_text(p) for p in perturbed]
    if perturbed is None and cols.options:
        options = [_text(record.get(c)) for c in cols.options]
        perturbed = [o for o in options if o is not None and o != answer] or None
    domain = _get(record, cols, "domain")
    ident = _get(record, cols, "id")
    ex = QAExample(
        question=_text(_get(record, cols, "question")),
        answer=answer,
        domain=_text(domain) if domain is not None else default_domain,
        paraphrased_answer=_text(_get(record, cols, "paraphrased_answer")),
        perturbed_answers=perturbed,
        id=_text(ident) if ident is not None else f"{cols.source}#{row}",
    )
    return validate_qa(ex, source=cols.source, row=row)


def text_from_record(record: Mapping[str, Any], cols: Columns, *, row: int) -> Optional[str]:
    """The passage of one corpus row; ``None`` for a blank one (corpora have blank lines)."""
    text = _text(_get(record, cols, "text"))
    if text is None:
        raise missing_field(cols.source, row, "text")
    if not isinstance(text, str):
        raise record_error(cols.source, row, f"field 'text' must be a string, got {type(text).__name__}")
    return text if text.strip() else None


def row_domain(record: Mapping[str, Any], cols: Columns, default_domain: str) -> str:
    domain = _get(record, cols, "domain")
    return _text(domain) if domain is not None else default_domain


def _answer_index(value: Any, choices: List[Any], cols: Columns, row: int) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.lstrip("-").isdigit():
            return int(s)
        if len(s) == 1 and s.upper() in _LETTER_COLUMNS:
            return _LETTER_COLUMNS.index(s.upper())
        if s in choices:
            return choices.index(s)
        last = _LETTER_COLUMNS[min(max(len(choices), 1), len(_LETTER_COLUMNS)) - 1]
        raise record_error(cols.source, row, f"field 'answer' = {value!r} is neither an index, a letter "
                                             f"A-{last} nor one of the choices")
    return value


def mc_from_record(record: Mapping[str, Any], cols: Columns, *, row: int,
                   default_subject: Optional[str] = None) -> MCExample:
    """One row -> validated ``MCExample``."""
    if cols.column("choices") is not None:
        choices = _as_list(_get(record, cols, "choices"))
    else:
        choices = [record.get(c) for c in cols.options]
    if isinstance(choices, list):
        choices = [_text(c) for c in choices]
    answer = _get(record, cols, "answer")
    if answer is None:
        raise missing_field(cols.source, row, "answer")
    subject = _get(record, cols, "subject")
    ident = _get(record, cols, "id")
    ex = MCExample(
        question=_text(_get(record, cols, "question")),
        choices=choices,
        answer=_answer_index(answer, choices if isinstance(choices, list) else [], cols, row),
        subject=_text(subject) if subject is not None else default_subject,
        id=_text(ident) if ident is not None else f"{cols.source}#{row}",
    )
    return validate_mc(ex, source=cols.source, row=row)
