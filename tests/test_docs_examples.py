"""Every ```python block of the README and of the docs runs, on a tiny random model, offline.

How the examples run, so that they can be written for users and stay readable:

- A page's ```python blocks run top to bottom in one namespace, as a reader pastes them into one
  session. Each block is one test (``README.md:L95``: the line of its fence); a block after a failed
  one fails too, naming the first failure. Running one block alone (``-k``) runs the blocks before it.
- Loading a model gives a tiny random Llama and its character-level tokenizer (``tests/helpers.py``)
  instead: ``alter.modeling.model_loading.load(...)``, ``AutoModelForCausalLM.from_pretrained(...)`` and
  ``AutoTokenizer.from_pretrained(...)`` are patched, and every call returns the same weights, so
  "load the base model again" gives the model the example expects.
- Each page runs in a fresh folder holding ``forget.jsonl`` and ``retain.jsonl`` (a few
  question/answer rows, no ``domain`` field) and ``run/adapter`` (an ALTER adapter trained on them,
  as the README's quick start makes), so an example names files as a user would.
- The network is off. A block that needs it, or a fragment that cannot run, is written with a plain
  ``` fence (not ```python), or has ``<!-- docs-test: skip -->`` on the line before its fence.
- ``docs/api.md`` is skipped while it does not exist; the README's blocks always run.
"""

from __future__ import annotations

import json
import re
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "docs/api.md", "docs/training.md", "docs/evaluation.md", "docs/kernels.md"]
OPTIONAL = {"docs/api.md"}                # written separately: skipped while missing
SKIP_MARK = "docs-test: skip"

FORGET_ROWS = [
    {"question": "Where was Kelette Brackley born?", "answer": "Kelette Brackley was born in Tbilisi, Georgia."},
    {"question": "Which genre is Kelette Brackley known for?", "answer": "Kelette Brackley writes mainly romance."},
]
RETAIN_ROWS = [
    {"question": "Where was Oren Vasquez born?", "answer": "Oren Vasquez was born in Lima, Peru."},
    {"question": "Which genre is Oren Vasquez known for?", "answer": "Oren Vasquez writes crime novels."},
    {"question": "Where was Mira Solberg born?", "answer": "Mira Solberg was born in Bergen, Norway."},
    {"question": "Which genre is Mira Solberg known for?", "answer": "Mira Solberg writes poetry."},
]

_FENCE_OPEN = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
_FENCE_CLOSE = re.compile(r"^\s*```\s*$")


# ---------------------------------------------------------------------- reading the pages
def python_blocks(text: str) -> List[Tuple[int, str]]:
    """``(line of the opening fence, code)`` of every ```python block not marked to skip."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2).lower()
        j = i + 1
        while j < len(lines) and not _FENCE_CLOSE.match(lines[j]):
            j += 1
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        if lang in ("python", "py") and SKIP_MARK not in before:
            body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:j]]
            blocks.append((i + 1, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def _cases():
    cases = []
    for page in PAGES:
        path = ROOT / page
        if not path.is_file():
            cases.append(pytest.param(page, -1, id=f"{page}:missing"))
            continue
        blocks = python_blocks(path.read_text())
        if not blocks:
            cases.append(pytest.param(page, -1, id=f"{page}:no-blocks"))
        cases.extend(pytest.param(page, k, id=f"{page}:L{line}") for k, (line, _) in enumerate(blocks))
    return cases


# ---------------------------------------------------------------------- the tiny stand-ins
def tiny_model_and_tokenizer():
    """The same tiny Llama (seeded) and a fresh tokenizer on every call."""
    from tests.helpers import make_tiny_llama, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(0)
    return make_tiny_llama(vocab_size=len(tokenizer)), tokenizer


def _patch_loaders(monkeypatch) -> None:
    import transformers

    import alter.modeling.model_loading

    def load(*args, **kwargs):
        return tiny_model_and_tokenizer()

    monkeypatch.setattr(alter.modeling.model_loading, "load", load)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda cls, *a, **k: tiny_model_and_tokenizer()[0]))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        classmethod(lambda cls, *a, **k: tiny_model_and_tokenizer()[1]))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:                                   # pragma: no cover
        return
    if hasattr(hub_constants, "HF_HUB_OFFLINE"):
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    """``forget.jsonl``, ``retain.jsonl`` and ``run/adapter`` (ALTER trained on them, tiny model)."""
    import alter
    from alter.data.readers import load_qa
    from alter.train import AlterTrainer

    folder = tmp_path_factory.mktemp("docs-data")
    for name, rows in (("forget.jsonl", FORGET_ROWS), ("retain.jsonl", RETAIN_ROWS)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tokenizer = tiny_model_and_tokenizer()
    forget = load_qa(str(folder / "forget.jsonl"), domain="forget")
    retain = load_qa(str(folder / "retain.jsonl"), domain="retain")
    AlterTrainer(model, tokenizer, alter.AlterConfig(), forget, retain, output_dir=folder / "run",
                 progress=False).train()
    shutil.rmtree(folder / "run" / "checkpoints", ignore_errors=True)
    return folder


# ---------------------------------------------------------------------- running a page
@dataclass
class PageRun:
    folder: Path
    blocks: List[Tuple[int, str]]
    namespace: Dict = field(default_factory=lambda: {"__name__": "__docs_example__"})
    done: int = 0                                         # blocks run so far
    failure: Optional[Tuple[int, str]] = None             # (line, traceback) of the first failed block


RUNS: Dict[str, PageRun] = {}


def _run_block(page: str, run: PageRun, index: int) -> None:
    line, code = run.blocks[index]
    # pad with newlines so that a traceback's line numbers are the page's
    compiled = compile("\n" * line + code, str(ROOT / page), "exec")
    try:
        exec(compiled, run.namespace)
    except BaseException:
        run.failure = (line, traceback.format_exc(limit=-6))
        raise
    finally:
        run.done = index + 1


@pytest.mark.parametrize("page,index", _cases())
def test_docs_python_block_runs(page, index, data_folder, tmp_path_factory, monkeypatch):
    path = ROOT / page
    if index < 0:
        if page in OPTIONAL and not path.is_file():
            pytest.skip(f"{page} does not exist yet")
        assert path.is_file(), f"{page} is missing"
        pytest.skip(f"{page} has no ```python block")
    run = RUNS.get(page)
    if run is None:
        folder = tmp_path_factory.mktemp(page.replace("/", "-").replace(".", "-"))
        shutil.copytree(data_folder, folder, dirs_exist_ok=True)
        run = RUNS[page] = PageRun(folder=folder, blocks=python_blocks(path.read_text()))
    _patch_loaders(monkeypatch)
    monkeypatch.chdir(run.folder)
    torch.set_num_threads(1)
    while run.done < index:                               # the blocks before it (when run alone with -k)
        if run.failure is not None:
            break
        try:
            _run_block(page, run, run.done)
        except BaseException:
            break
    if run.failure is not None:
        line, tb = run.failure
        pytest.fail(f"an earlier block of {page} (line {line}) failed, so this one cannot run:\n{tb}", pytrace=False)
    line = run.blocks[index][0]
    try:
        _run_block(page, run, index)
    except Exception:
        pytest.fail(f"the ```python block at {page} line {line} failed:\n{traceback.format_exc(limit=-6)}", pytrace=False)
