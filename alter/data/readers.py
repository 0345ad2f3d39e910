"""Readers: any source (local file, local directory, hub name) -> a list of schema examples.

``source`` is a local ``.json``/``.jsonl``/``.csv``/``.parquet`` file, a directory of such files
(optionally ``dir:config``), or a registered hub name such as ``"locuslab/TOFU:forget10"``,
``"cais/wmdp:wmdp-bio"``, ``"cais/mmlu:all"``, ``"muse-bench/MUSE-News:raw"`` (see
:mod:`alter.data.hub`). Local files and hub datasets are both read with ``datasets.load_dataset``
(:mod:`alter.data.sources`) and converted by the same code (:mod:`alter.data.fields`).

Domains: a ``domain`` column in the data wins; otherwise the caller's ``domain``; otherwise the hub
entry's label for the split (e.g. TOFU ``forget10`` -> ``"forget"``, ``cyber-forget-corpus`` ->
``"cyber"``); otherwise :data:`~alter.data.schema.RETAIN_DOMAIN`.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Mapping, Optional, Union

from alter.data.chunking import chunk_text
from alter.data.fields import mc_from_record, qa_from_record, resolve_columns, row_domain, text_from_record
from alter.data.schema import MCExample, QAExample, RETAIN_DOMAIN
from alter.data.sources import Table, open_source

def _check_limit(limit: Optional[int]) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def _tables(source, kind: str, split, config) -> List[Table]:
    return open_source(source, split=split, config=config, kind=kind)


def _field_map(table: Table, field_map: Optional[Mapping[str, str]]) -> Dict[str, str]:
    merged = dict(table.spec.field_map) if table.spec is not None else {}
    merged.update(field_map or {})
    return merged


def _default_domain(table: Table, domain: Optional[str]) -> str:
    if domain is not None:
        return domain
    if table.spec is not None:
        return table.spec.domain_for(table.split)
    return RETAIN_DOMAIN


def _rows(table: Table, limit: Optional[int]) -> Iterator:
    rows = table.rows
    if limit is not None and limit < len(rows) and hasattr(rows, "select"):
        rows = rows.select(range(limit))
    return iter(rows)


def _nonempty(tables: List[Table]) -> List[Table]:
    """Tables with at least one row: an empty file contributes no examples (and needs no columns)."""
    return [t for t in tables if len(t.rows) > 0]


def _read_qa(tables: List[Table], domain, field_map, limit) -> List[QAExample]:
    out: List[QAExample] = []
    for table in _nonempty(tables):
        cols = resolve_columns("qa", table.columns, _field_map(table, field_map), table.source)
        default = _default_domain(table, domain)
        for row, record in enumerate(_rows(table, None if limit is None else limit - len(out))):
            if limit is not None and len(out) >= limit:
                return out
            out.append(qa_from_record(record, cols, row=row, default_domain=default))
    return out


def _read_mc(tables: List[Table], subject, field_map, limit) -> List[MCExample]:
    out: List[MCExample] = []
    for table in _nonempty(tables):
        cols = resolve_columns("mc", table.columns, _field_map(table, field_map), table.source)
        default_subject = subject if subject is not None else (table.spec.subject if table.spec else None)
        for row, record in enumerate(_rows(table, None if limit is None else limit - len(out))):
            if limit is not None and len(out) >= limit:
                return out
            out.append(mc_from_record(record, cols, row=row, default_subject=default_subject))
    return out


def _read_text(tables: List[Table], domain, field_map, limit, max_chars, max_words) -> List[QAExample]:
    out: List[QAExample] = []
    for table in _nonempty(tables):
        cols = resolve_columns("text", table.columns, _field_map(table, field_map), table.source)
        default = _default_domain(table, domain)
        id_col = cols.column("id")
        for row, record in enumerate(_rows(table, None)):
            if limit is not None and len(out) >= limit:
                return out
            text = text_from_record(record, cols, row=row)
            if text is None:
                continue
            label = row_domain(record, cols, default)
            own_id = record.get(id_col) if id_col is not None else None
            base = str(own_id) if own_id is not None else f"{table.source}#{row}"
            passages = chunk_text(text, max_chars=max_chars, max_words=max_words)
            for k, passage in enumerate(passages):
                if limit is not None and len(out) >= limit:
                    return out
                ident = base if len(passages) == 1 else f"{base}.{k}"
                out.append(QAExample(question="", answer=passage, domain=label, id=ident))
    return out


def load_qa(source, *, domain: Optional[str] = None, split: Optional[str] = None,
            field_map: Optional[Mapping[str, str]] = None, limit: Optional[int] = None,
            config: Optional[str] = None) -> List[QAExample]:
    """Question/answer pairs (TOFU, MUSE knowmem/verbmem, or any file with question/answer columns).

    ``field_map`` maps our fields (question, answer, paraphrased_answer, perturbed_answers, domain,
    id) to the data's columns where the aliases of :mod:`alter.data.fields` do not find them, e.g.
    ``{"domain": "author"}``. ``limit`` keeps the first ``limit`` examples.
    """
    _check_limit(limit)
    return _read_qa(_tables(source, "qa", split, config), domain, field_map, limit)


def load_mc(source, *, split: Optional[str] = None, field_map: Optional[Mapping[str, str]] = None,
            limit: Optional[int] = None, config: Optional[str] = None,
            subject: Optional[str] = None) -> List[MCExample]:
    """Multiple-choice items (``cais/wmdp``, ``cais/mmlu`` or files of their schema).

    ``subject`` labels rows that carry none (``cais/wmdp`` has no subject column: its config name,
    e.g. ``wmdp-bio``, is used).
    """
    _check_limit(limit)
    return _read_mc(_tables(source, "mc", split, config), subject, field_map, limit)


def load_text(source, *, domain: Optional[str] = None, split: Optional[str] = None,
              field_map: Optional[Mapping[str, str]] = None, limit: Optional[int] = None,
              config: Optional[str] = None, max_chars: Optional[int] = None,
              max_words: Optional[int] = None) -> List[QAExample]:
    """Corpus passages as raw-text examples (empty question, passage in ``answer``).

    Each row's ``text`` is cut into passages of at most ``max_words`` words / ``max_chars``
    characters (whole rows when both are ``None``); blank rows are skipped. ``limit`` caps the
    number of passages returned. Ids are ``<source>#<row>`` plus ``.<k>`` for the k-th passage.
    """
    _check_limit(limit)
    return _read_text(_tables(source, "text", split, config), domain, field_map, limit, max_chars, max_words)


def detect_kind(columns) -> str:
    """The reader local data needs, from its columns: ``mc`` (a ``choices`` list or A-D columns),
    ``text`` (``text`` without ``answer``) or ``qa``."""
    cols = set(columns)
    if "choices" in cols or {"A", "B", "C", "D"} <= cols:
        return "mc"
    if "text" in cols and "answer" not in cols:
        return "text"
    return "qa"


def load_examples(source, *, domain: Optional[str] = None, split: Optional[str] = None,
                  field_map: Optional[Mapping[str, str]] = None, limit: Optional[int] = None,
                  config: Optional[str] = None, subject: Optional[str] = None,
                  max_chars: Optional[int] = None,
                  max_words: Optional[int] = None) -> Union[List[QAExample], List[MCExample]]:
    """Read ``source`` with the reader its kind needs: the hub entry's kind, or :func:`detect_kind`
    of a local source's first file. Arguments that do not apply to that kind are ignored."""
    _check_limit(limit)
    tables = open_source(source, split=split, config=config)
    kind = tables[0].spec.kind if tables[0].spec is not None else detect_kind(tables[0].columns)
    if kind == "mc":
        return _read_mc(tables, subject, field_map, limit)
    if kind == "text":
        return _read_text(tables, domain, field_map, limit, max_chars, max_words)
    return _read_qa(tables, domain, field_map, limit)
