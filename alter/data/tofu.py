"""TOFU rows from a local directory, the benchmark's split, and questions in a new wording.

The directory layout is the one of the project's offline TOFU subset (and of an export of the
hub copy in the same shape):

    authors.jsonl        question, answer, author (an integer id: TOFU's author order)
    world_facts.jsonl    question, answer, perturbed_answer (list of wrong answers)
    real_authors.jsonl   question, answer, perturbed_answer

A model is first taught the forget and retain authors, then unlearns the forget authors; the
never-taught authors give the floor an answer falls to when the model does not know the fact,
and the world-facts / real-authors questions measure general knowledge that must not move.

Rewording: :func:`reword` rewrites a question by a fixed grammar template ("Where was X born?"
-> "In which place was X born?"), names kept, so a benchmark scores questions in a wording that
was never trained on. Questions no template fits are left out of the reworded sets.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from alter import io as alter_io
from alter.data.schema import QAExample, RETAIN_DOMAIN, record_error, validate_qa

FILES = ("authors.jsonl", "world_facts.jsonl", "real_authors.jsonl")

# (pattern, replacement): applied to the first that matches; each keeps every name of the question.
_REWORD = (
    (r"^Where (was|is|were|are|did|does|do) (.+)\?$", r"In which place \1 \2?"),
    (r"^When (was|is|were|did|does) (.+)\?$", r"At what time \1 \2?"),
    (r"^How (has|have|did|does|do|is|was|are|were) (.+)\?$", r"In what way \1 \2?"),
    (r"^Can you (.+)\?$", r"Could you please \1?"),
    (r"^Could you (.+)\?$", r"Can you \1?"),
    (r"^What (is|was) the (.+?) of (.+)\?$", r"Can you tell me the \2 of \3?"),
    (r"^Who (is|was|are|were) (.+)\?$", r"Do you know who \2 \1?"),
    (r"^What (\w+) (is|was|are|were|did|does|do|has|have) (.+)\?$", r"Which \1 \2 \3?"),
    (r"^Which (.+)\?$", r"What \1?"),
    (r"^(Is|Was|Are|Were|Has|Have|Did|Does|Do) (.+)\?$", r"Tell me: \1 \2?"),
)


def reword(question: str) -> Optional[str]:
    """The question in a new wording by the first template that fits, or None when none does."""
    q = question.strip()
    for pattern, repl in _REWORD:
        if re.match(pattern, q):
            out = re.sub(pattern, repl, q, count=1)
            return out if out != q else None
    return None


def reworded(examples: Sequence[QAExample], limit: Optional[int] = None) -> List[QAExample]:
    """Copies of ``examples`` whose question a template rewrites (at most ``limit``), answers kept."""
    out = []
    for ex in examples:
        new = reword(ex.question)
        if new is None:
            continue
        out.append(dataclasses.replace(ex, question=new, id=f"{ex.id}-reworded" if ex.id else None))
        if limit is not None and len(out) >= limit:
            break
    return out


def _read_jsonl(path: Path) -> List[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"TOFU data: {path} is missing (a TOFU directory holds {', '.join(FILES)})")
    rows = alter_io.read_jsonl(path)
    if not rows:
        raise ValueError(f"TOFU data: {path} holds no rows")
    return rows


def _field(row: dict, name: str, path: Path, n: int):
    if name not in row:
        raise record_error(str(path), n, f"missing field {name!r}")
    return row[name]


@dataclass
class TofuData:
    """All rows of a TOFU directory: author QA by author id, and the two general-knowledge sets."""

    authors: Dict[int, List[QAExample]]
    world_facts: List[QAExample]
    real_authors: List[QAExample]

    def of(self, author_ids: Sequence[int], domain: Optional[str] = None) -> List[QAExample]:
        """The QA of ``author_ids`` in order; ``domain`` None labels each with ``author_<id>``."""
        missing = [a for a in author_ids if a not in self.authors]
        if missing:
            raise ValueError(f"TOFU data has no author(s) {missing}; it has {sorted(self.authors)}")
        return [dataclasses.replace(ex, domain=domain or f"author_{a}") for a in author_ids for ex in self.authors[a]]


def load_tofu(directory) -> TofuData:
    """Read a TOFU directory (see the module docstring); errors name the file, line and field."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"TOFU data: no such directory {directory}")
    authors: Dict[int, List[QAExample]] = {}
    path = directory / "authors.jsonl"
    for n, row in enumerate(_read_jsonl(path), 1):
        author = _field(row, "author", path, n)
        if isinstance(author, bool) or not isinstance(author, int):
            raise record_error(str(path), n, f"field 'author' must be an integer id, got {author!r}")
        ex = QAExample(question=_field(row, "question", path, n), answer=_field(row, "answer", path, n),
                       domain=f"author_{author}", id=f"tofu-{author}-{len(authors.get(author, []))}")
        authors.setdefault(author, []).append(validate_qa(ex, source=str(path), row=n))
    general = {}
    for name in ("world_facts", "real_authors"):
        path = directory / f"{name}.jsonl"
        items = []
        for n, row in enumerate(_read_jsonl(path), 1):
            wrong = row.get("perturbed_answer")
            wrong = [wrong] if isinstance(wrong, str) else wrong
            answer = _field(row, "answer", path, n)
            ex = QAExample(question=_field(row, "question", path, n), answer=answer, domain=RETAIN_DOMAIN,
                           paraphrased_answer=answer if wrong else None, perturbed_answers=wrong or None,
                           id=f"{name}-{n - 1}")
            items.append(validate_qa(ex, source=str(path), row=n))
        general[name] = items
    return TofuData(authors, general["world_facts"], general["real_authors"])
