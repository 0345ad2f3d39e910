"""Writing examples to JSON files that the readers read back (and a person can inspect).

QA examples are written with TOFU's field names (``question``, ``answer``, ``paraphrased_answer``,
``perturbed_answer``), plus ``domain`` and ``id``; multiple-choice items with ``cais/wmdp`` /
``cais/mmlu``'s (``question``, ``choices``, ``answer``, ``subject``). A ``.jsonl`` path gets one
object per line, any other path one indented JSON array. Output is deterministic (fixed key order)
and written atomically.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from alter import io as alter_io
from alter.data.schema import MCExample, QAExample


def qa_record(example: QAExample) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"question": example.question, "answer": example.answer}
    if example.paraphrased_answer is not None:
        rec["paraphrased_answer"] = example.paraphrased_answer
    if example.perturbed_answers is not None:
        rec["perturbed_answer"] = list(example.perturbed_answers)
    rec["domain"] = example.domain
    if example.id is not None:
        rec["id"] = example.id
    return rec


def mc_record(example: MCExample) -> Dict[str, Any]:
    rec = {k: v for k, v in asdict(example).items() if v is not None}
    return {k: rec[k] for k in ("question", "choices", "answer", "subject", "id") if k in rec}


def write_json(records: Sequence[Dict[str, Any]], path: Union[str, Path]) -> Path:
    """``records`` as one JSON array, or one object per line for a ``.jsonl`` path (atomically:
    :func:`alter.io.atomic_write_json`)."""
    path = Path(path)
    return alter_io.atomic_write_json(path, list(records), lines=path.suffix.lower() == ".jsonl",
                                      sort_keys=False, ensure_ascii=False)


def write_qa_json(examples: Sequence[QAExample], path: Union[str, Path]) -> Path:
    """Write QA examples (TOFU field names) to ``path`` (.json array or .jsonl lines)."""
    return write_json([qa_record(e) for e in examples], path)


def write_mc_json(examples: Sequence[MCExample], path: Union[str, Path]) -> Path:
    """Write multiple-choice items (WMDP/MMLU field names) to ``path``."""
    return write_json([mc_record(e) for e in examples], path)


def records_of(examples: Sequence[Union[QAExample, MCExample]]) -> List[Dict[str, Any]]:
    return [mc_record(e) if isinstance(e, MCExample) else qa_record(e) for e in examples]
