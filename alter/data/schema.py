"""The one example schema used everywhere in ALTER, and its validation.

``QAExample`` is a question/answer pair (or a raw-text passage when the question is empty), labelled
with the *domain* that decides which expert trains on it: :data:`RETAIN_DOMAIN` or the name of a
forget sub-domain (a TOFU author, WMDP ``bio``/``cyber``, ...). Its optional fields mirror the
evaluation fields of TOFU's ``*_perturbed`` configs on the Hugging Face hub (``locuslab/TOFU``):
``paraphrased_answer`` (one string) and ``perturbed_answer`` (a list of wrong answers), which the
truth-ratio metric compares.

``MCExample`` is a multiple-choice item as in ``cais/wmdp`` and ``cais/mmlu`` (``question``,
``choices``, ``answer`` = index of the correct choice, and MMLU's ``subject``).

Validation errors name the field and where the record came from, e.g.
``"tofu.json row 17: missing field 'answer'"``, so that a malformed file is fixed in one look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

RETAIN_DOMAIN = "retain"
"""Domain label of retain data (trained by the retain expert ``B_R``)."""

FORGET_DOMAIN = "forget"
"""Default label of a forget set that is not split into sub-domains."""


@dataclass
class QAExample:
    """One question/answer pair; an empty ``question`` means ``answer`` is raw text (a passage).

    ``domain`` is :data:`RETAIN_DOMAIN` or the name of the forget sub-domain the example belongs to.
    ``paraphrased_answer`` / ``perturbed_answers`` are evaluation-only (TOFU truth ratio).
    """

    question: str
    answer: str
    domain: str = RETAIN_DOMAIN
    paraphrased_answer: Optional[str] = None
    perturbed_answers: Optional[List[str]] = None
    id: Optional[str] = None

    @property
    def is_raw_text(self) -> bool:
        return not self.question

    @property
    def is_forget(self) -> bool:
        return self.domain != RETAIN_DOMAIN


@dataclass
class MCExample:
    """One multiple-choice item; ``answer`` is the 0-based index of the correct entry of ``choices``."""

    question: str
    choices: List[str]
    answer: int
    subject: Optional[str] = None
    id: Optional[str] = None


def _where(source: Optional[str], row: Optional[int]) -> str:
    if source is None and row is None:
        return "example"
    if row is None:
        return str(source)
    if source is None:
        return f"row {row}"
    return f"{source} row {row}"


def record_error(source: Optional[str], row: Optional[int], message: str) -> ValueError:
    """A ``ValueError`` whose text starts with where the bad record came from."""
    return ValueError(f"{_where(source, row)}: {message}")


def missing_field(source: Optional[str], row: Optional[int], field: str) -> ValueError:
    return record_error(source, row, f"missing field {field!r}")


def _check_text(value, field: str, source, row, *, allow_empty: bool) -> None:
    if value is None:
        raise missing_field(source, row, field)
    if not isinstance(value, str):
        raise record_error(source, row, f"field {field!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise record_error(source, row, f"field {field!r} is empty")


def validate_qa(example: QAExample, *, source: Optional[str] = None, row: Optional[int] = None) -> QAExample:
    """Check every field of ``example``; return it unchanged or raise a ``ValueError`` naming field and row."""
    _check_text(example.question, "question", source, row, allow_empty=True)
    _check_text(example.answer, "answer", source, row, allow_empty=False)
    _check_text(example.domain, "domain", source, row, allow_empty=False)
    if example.paraphrased_answer is not None:
        _check_text(example.paraphrased_answer, "paraphrased_answer", source, row, allow_empty=False)
    if example.perturbed_answers is not None:
        if not isinstance(example.perturbed_answers, list):
            raise record_error(source, row, "field 'perturbed_answers' must be a list of strings, "
                                            f"got {type(example.perturbed_answers).__name__}")
        if not example.perturbed_answers:
            raise record_error(source, row, "field 'perturbed_answers' is an empty list")
        for i, a in enumerate(example.perturbed_answers):
            _check_text(a, f"perturbed_answers[{i}]", source, row, allow_empty=False)
    if example.id is not None and not isinstance(example.id, str):
        raise record_error(source, row, f"field 'id' must be a string, got {type(example.id).__name__}")
    return example


def validate_mc(example: MCExample, *, source: Optional[str] = None, row: Optional[int] = None) -> MCExample:
    """Check a multiple-choice item: non-empty question, >= 2 non-empty choices, answer index in range."""
    _check_text(example.question, "question", source, row, allow_empty=False)
    if example.choices is None:
        raise missing_field(source, row, "choices")
    if not isinstance(example.choices, list) or len(example.choices) < 2:
        raise record_error(source, row, "field 'choices' must be a list of at least 2 strings")
    for i, c in enumerate(example.choices):
        _check_text(c, f"choices[{i}]", source, row, allow_empty=False)
    if example.answer is None:
        raise missing_field(source, row, "answer")
    if isinstance(example.answer, bool) or not isinstance(example.answer, int):
        raise record_error(source, row, f"field 'answer' must be an integer index, got {example.answer!r}")
    if not 0 <= example.answer < len(example.choices):
        raise record_error(source, row, f"field 'answer' = {example.answer} is not an index of the "
                                        f"{len(example.choices)} choices")
    if example.subject is not None and not isinstance(example.subject, str):
        raise record_error(source, row, f"field 'subject' must be a string, got {type(example.subject).__name__}")
    return example
