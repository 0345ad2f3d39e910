"""MUSE-News (real BBC articles) from a local directory, cut to the size a 2-core CPU can teach.

The directory holds the MUSE authors' public News files, ``<subset>_<split>.json`` (see the benchmark
docs, docs/benchmarks/muse_news.md): ``raw_forget`` (whole forget articles), ``verbmem_forget``
(``prompt``/``gt``: an excerpt and its true continuation), ``knowmem_{forget,retain2}_qa`` (+ ``_icl``
few-shot exemplars) and ``privleak_{forget,retain2,holdout}`` passages.

What the benchmark is built from (every choice is a function below):

- **Forget windows** (passages, no question): each ``verbmem`` item cut to its last ``verbmem_words``
  words of prompt and first ``verbmem_words`` words of ``gt`` (the window is prompt tail + gt head); and,
  for each knowledge question matched to a forget article (:func:`match_question`), a window of
  ``window_words`` words of that article around the answer.
- **Folds**: each window belongs to the article it comes from (a ``verbmem`` item's article is the
  ``raw_forget`` article that holds its ``gt``); articles alternate between the ``report`` fold and
  the ``tune`` fold, so no article is in both. Both folds are taught; one is forgotten.
- **Retain windows**: a window around each knowledge question matched to a ``privleak_retain2``
  passage, and one window from each of the first ``retain_extra`` other retain passages.
- **Holdout windows**: one window from each of the first ``holdout`` ``privleak_holdout`` passages (never
  taught: the membership-inference negatives).
- **Reference windows**: one window from each of the other ``privleak_holdout`` passages (never taught, never
  scored): unseen news the forget-level stop may calibrate on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from alter.data.chunking import split_window  # noqa: F401  (re-exported: the benchmark cuts windows with it)
from alter.data.schema import QAExample, RETAIN_DOMAIN

FILES = ("raw_forget.json", "verbmem_forget.json", "knowmem_forget_qa.json", "knowmem_forget_qa_icl.json",
         "knowmem_retain2_qa.json", "knowmem_retain2_qa_icl.json", "privleak_retain2.json",
         "privleak_holdout.json")
FOLDS = ("report", "tune")

_STOP = frozenset("""a an the of in on at to for from by with and or but is was were are be been being has have had
do does did what which who whom whose when where why how that this these those it its as into about after before
during than then there their they them he she his her him according did said says year years many much""".split())
_WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> List[str]:
    """Lower-cased words of at least 3 characters that are not function words."""
    return [w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP]


def match_question(question: str, answer: str, documents: Sequence[str], min_share: float = 0.6) -> Optional[int]:
    """The document that holds ``answer`` (case-insensitive) and the largest share (at least
    ``min_share``) of the question's content words; None when no document qualifies."""
    needle = answer.strip().lower()
    words = set(content_words(question))
    if not needle or not words:
        return None
    best, best_share = None, min_share
    for i, doc in enumerate(documents):
        low = doc.lower()
        if needle not in low:
            continue
        share = len(words & set(_WORD.findall(low))) / len(words)
        if share >= best_share and (best is None or share > best_share):
            best, best_share = i, share
    return best


def _words(text: str) -> List[str]:
    return text.split()


def window_around(document: str, needle: str, n_words: int, before: float = 0.6) -> str:
    """``n_words`` consecutive words of ``document`` holding ``needle``, about ``before`` of them ahead of it."""
    words = _words(document)
    at = document.lower().find(needle.strip().lower())
    first = len(_words(document[:at])) if at >= 0 else 0
    start = max(0, min(first - int(n_words * before), len(words) - n_words))
    return " ".join(words[start:start + n_words])


def middle_window(document: str, n_words: int) -> str:
    """``n_words`` words from the middle of ``document`` (all of it when shorter)."""
    words = _words(document)
    start = max(0, (len(words) - n_words) // 2)
    return " ".join(words[start:start + n_words])


@dataclass
class ForgetItem:
    """One forget window, the article it comes from and what it was cut for."""

    text: str
    article: int
    kind: str                                    # "verbmem" or "knowmem"
    prompt: Optional[str] = None                 # verbmem: the excerpt's tail; the window is prompt + " " + gt
    gt: Optional[str] = None
    question: Optional[str] = None               # knowmem: the matched question and its answer
    answer: Optional[str] = None

    @property
    def fold(self) -> str:
        return FOLDS[self.article % 2]


@dataclass
class MuseNews:
    forget: List[ForgetItem]
    retain_windows: List[str]
    retain_qa: List[QAExample]                   # knowledge questions whose answer a retain window holds
    holdout_windows: List[str]
    icl_forget: List[QAExample]
    icl_retain: List[QAExample]
    counts: Dict[str, int] = field(default_factory=dict)
    reference_windows: List[str] = field(default_factory=list)

    def fold(self, name: str) -> List[ForgetItem]:
        if name not in FOLDS:
            raise ValueError(f"MUSE-News fold must be one of {FOLDS}, got {name!r}")
        return [f for f in self.forget if f.fold == name]


def _load(directory: Path, name: str):
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"MUSE-News: {path} is missing (the directory needs {', '.join(FILES)})")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _qa(rows, source: str) -> List[QAExample]:
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or "question" not in r or "answer" not in r:
            raise ValueError(f"{source} row {i}: needs 'question' and 'answer'")
        out.append(QAExample(question=str(r["question"]).strip(), answer=str(r["answer"]).strip(),
                             domain=RETAIN_DOMAIN, id=f"{source}#{i}"))
    return out


def _source_article(item: dict, articles: Sequence[str]) -> Optional[int]:
    """The forget article that holds a verbmem item's continuation (its first 80 characters)."""
    probe = str(item["gt"]).strip()[:80]
    for i, a in enumerate(articles):
        if probe and probe in a:
            return i
    return None


def load_muse_news(directory, *, verbmem_words: int = 48, window_words: int = 96, retain_extra: int = 60,
                   holdout: int = 60, verbmem_limit: Optional[int] = None) -> MuseNews:
    """The benchmark's windows and questions (module docstring); ``counts`` says how many matched."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"MUSE-News: no such directory {d}")
    articles = [str(a) for a in _load(d, "raw_forget.json")]
    verbmem = _load(d, "verbmem_forget.json")
    forget_qa = _qa(_load(d, "knowmem_forget_qa.json"), "knowmem_forget_qa")
    retain_qa = _qa(_load(d, "knowmem_retain2_qa.json"), "knowmem_retain2_qa")
    retain_passages = [str(p) for p in _load(d, "privleak_retain2.json")]
    holdout_passages = [str(p) for p in _load(d, "privleak_holdout.json")]
    counts: Dict[str, int] = {"verbmem_items": len(verbmem), "knowmem_forget_questions": len(forget_qa),
                              "knowmem_retain_questions": len(retain_qa)}

    items: List[ForgetItem] = []
    for row in verbmem[:verbmem_limit] if verbmem_limit else verbmem:
        art = _source_article(row, articles)
        if art is None:
            continue
        prompt = " ".join(_words(str(row["prompt"]))[-verbmem_words:])
        gt = " ".join(_words(str(row["gt"]))[:verbmem_words])
        items.append(ForgetItem(f"{prompt} {gt}", art, "verbmem", prompt=prompt, gt=gt))
    counts["verbmem_matched"] = len(items)
    for qa in forget_qa:
        art = match_question(qa.question, qa.answer, articles)
        if art is None:
            continue
        items.append(ForgetItem(window_around(articles[art], qa.answer, window_words), art, "knowmem",
                                question=qa.question, answer=qa.answer))
    counts["knowmem_forget_matched"] = sum(1 for f in items if f.kind == "knowmem")

    matched_retain, windows, used = [], [], set()
    for qa in retain_qa:
        p = match_question(qa.question, qa.answer, retain_passages)
        if p is None:
            continue
        matched_retain.append(qa)
        windows.append(window_around(retain_passages[p], qa.answer, window_words))
        used.add(p)
    counts["knowmem_retain_matched"] = len(matched_retain)
    extra = [p for i, p in enumerate(retain_passages) if i not in used][:retain_extra]
    windows += [middle_window(p, window_words) for p in extra]
    hold = [middle_window(p, window_words) for p in holdout_passages[:holdout]]
    reference = [middle_window(p, window_words) for p in holdout_passages[holdout:]]
    icl_f = _qa(_load(d, "knowmem_forget_qa_icl.json"), "knowmem_forget_qa_icl")
    icl_r = _qa(_load(d, "knowmem_retain2_qa_icl.json"), "knowmem_retain2_qa_icl")
    for name in FOLDS:
        counts[f"forget_windows_{name}"] = sum(1 for f in items if f.fold == name)
    counts.update(retain_windows=len(windows), holdout_windows=len(hold), reference_windows=len(reference))
    return MuseNews(items, windows, matched_retain, hold, icl_f, icl_r, counts, reference)


def passages(texts: Sequence[str], domain: str, prefix: str) -> List[QAExample]:
    """Raw-text examples (empty question: every token is a label) of ``texts``."""
    return [QAExample(question="", answer=t, domain=domain, id=f"{prefix}#{i}") for i, t in enumerate(texts)]


def requests(items: Sequence[ForgetItem], n: int) -> List[List[ForgetItem]]:
    """``n`` disjoint requests of whole articles (round robin over the articles in order)."""
    if n < 1:
        raise ValueError(f"the number of requests must be at least 1, got {n}")
    arts = sorted({f.article for f in items})
    if len(arts) < n:
        raise ValueError(f"{len(arts)} articles cannot make {n} disjoint requests")
    which = {a: k % n for k, a in enumerate(arts)}
    return [[f for f in items if which[f.article] == k] for k in range(n)]
