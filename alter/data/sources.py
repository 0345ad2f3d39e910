"""Opening a data source as tables of rows: local files and hub datasets go through one function.

Both kinds are read with ``datasets.load_dataset``: a local ``.json``/``.jsonl`` with the ``json``
builder, ``.csv`` with ``csv`` (every column read as text, so that ``"007"`` stays ``"007"``), and
``.parquet`` with ``parquet``; a hub name is looked up in :mod:`alter.data.hub` and loaded with its
real path, config and split. The readers in :mod:`alter.data.readers` then treat every table alike.

A local directory is read file by file (sorted), so that an error can name the exact file. Its
layout may mirror a hub snapshot (``"<dir>:<config>"`` or ``config=``): with a config, the files of
``<dir>/<config>/`` are read (``cais/wmdp``, ``muse-bench/*``: one folder per config), or, where no
such folder exists, the files named ``<config>.<ext>`` (``locuslab/TOFU``: one file per config);
with ``split``, only files named ``<split>.<ext>`` or ``<split>-*.<ext>`` (the hub's parquet shards
are named ``<split>-00000-of-00001.parquet``). A single file is taken whole whatever the split.
"""

from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from alter import io as alter_io
from alter.data import hub

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class DatasetUnavailableError(RuntimeError):
    """A hub dataset could not be fetched (offline, gated or missing)."""


@dataclass
class Table:
    """Rows of one file or one hub split; ``source`` names it in error messages."""

    rows: Any
    source: str
    columns: List[str]
    spec: Optional[hub.DatasetSpec] = None
    split: Optional[str] = None

    def __len__(self) -> int:
        return len(self.rows)


def _looks_like_path(source: str) -> bool:
    """A missing local path, as opposed to a hub name ``owner/name[:config]``."""
    s = source.strip()
    if Path(s).suffix.lower() in BUILDERS or s.startswith(("/", "./", "../", "~")):
        return True
    return ":" not in s and s.count("/") >= 2


def local_target(source, config: Optional[str] = None) -> Optional[Tuple[Path, Optional[str]]]:
    """``(path, config)`` when ``source`` is an existing local file/directory (``dir:config`` too)."""
    p = Path(os.path.expanduser(str(source)))
    if p.exists():
        return p, config
    text = str(source)
    if ":" in text:
        head, _, cfg = text.rpartition(":")
        hp = Path(os.path.expanduser(head))
        if head and hp.is_dir():
            if config is not None and config != cfg:
                raise ValueError(f"{source!r} names config {cfg!r} but config={config!r} was passed")
            return hp, cfg
    return None


def _split_matches(path: Path, split: str) -> bool:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem == split or stem.startswith(split + "-")


def _data_files(directory: Path) -> List[Path]:
    return sorted(f for f in directory.iterdir() if f.is_file() and f.suffix.lower() in BUILDERS)


def list_files(path: Path, *, config: Optional[str] = None, split: Optional[str] = None) -> List[Path]:
    """The data files a local source stands for, in a fixed (sorted) order."""
    if path.is_file():
        if path.suffix.lower() not in BUILDERS:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(BUILDERS)}")
        return [path]
    root = path / config if config else path
    if config and not root.is_dir():
        flat = [f for f in _data_files(path) if _split_matches(f, config)]
        if flat:  # a flat snapshot such as locuslab/TOFU's: one file (or shards) per config, one split
            return flat
        raise FileNotFoundError(f"{path}: no config directory {config!r} and no file named {config!r} "
                                f"(files: {[f.name for f in _data_files(path)]})")
    files = _data_files(root)
    if split is not None:
        picked = [f for f in files if _split_matches(f, split)]
        if not picked:
            names = [f.name for f in files]
            raise FileNotFoundError(f"{root}: no file for split {split!r} (files: {names})")
        files = picked
    if not files:
        raise FileNotFoundError(f"{root}: no {'/'.join(sorted(BUILDERS))} files")
    return files


def _csv_header(path: Path) -> List[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh), [])


def _is_empty_json(path: Path) -> bool:
    """A .json/.jsonl file with no records (empty, blank, or ``[]``), which ``datasets`` cannot build."""
    if path.suffix.lower() not in (".json", ".jsonl"):
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096)
    text = head.decode("utf-8", errors="replace").strip()
    return text in ("", "[]") or (len(head) < 4096 and text.replace(" ", "").replace("\n", "") == "[]")


@contextlib.contextmanager
def _quiet_progress():
    """No "Generating train split" bars for local files (they take milliseconds)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def load_file(path: Path) -> Table:
    """One local file through ``datasets.load_dataset(<builder>, data_files=...)``."""
    import datasets

    builder = BUILDERS[path.suffix.lower()]
    if _is_empty_json(path):
        return Table(datasets.Dataset.from_list([]), str(path), [])
    if path.suffix.lower() == ".jsonl":
        alter_io.read_jsonl(path)        # a malformed line named by file and line (datasets: a long traceback)
    kwargs = {}
    if builder == "csv":
        header = _csv_header(path)
        kwargs["features"] = datasets.Features({c: datasets.Value("string") for c in header})
    with _quiet_progress():
        ds = datasets.load_dataset(builder, data_files=[str(path)], split="train", **kwargs)
    return Table(ds, str(path), list(ds.column_names))


def load_hub(spec: hub.DatasetSpec, split: Optional[str] = None) -> Table:
    """One split of a registered hub dataset through ``datasets.load_dataset(path, name=config, split=...)``."""
    import datasets

    split = spec.check_split(split)
    try:
        ds = datasets.load_dataset(spec.path, name=spec.config, split=split)
    except (ConnectionError, OSError) as err:
        reason = " ".join(str(err).split())[:200]
        raise DatasetUnavailableError(
            f"cannot load {spec.name!r} split {split!r} from the Hugging Face hub ({type(err).__name__}: {reason}); "
            f"download it where the hub is reachable (then set HF_DATASETS_OFFLINE=1 to use the cache) "
            f"or pass a local .json/.jsonl/.csv/.parquet file or directory of the same schema") from err
    return Table(ds, f"{spec.name}[{split}]", list(ds.column_names), spec=spec, split=split)


READERS = {"qa": "load_qa", "mc": "load_mc", "text": "load_text"}


def open_source(source, *, split: Optional[str] = None, config: Optional[str] = None,
                kind: Optional[str] = None) -> List[Table]:
    """The tables of a local path (file or directory) or a registered hub name.

    With ``kind``, a hub entry of another kind is refused before anything is downloaded.
    """
    target = local_target(source, config)
    if target is not None:
        path, cfg = target
        return [load_file(f) for f in list_files(path, config=cfg, split=split)]
    if _looks_like_path(str(source)):
        raise FileNotFoundError(f"no such file or directory: {source}")
    spec = hub.resolve(str(source), config)
    if kind is not None and spec.kind != kind:
        raise ValueError(f"{spec.name} holds {spec.kind} data: read it with {READERS[spec.kind]}(), "
                         f"not {READERS[kind]}()")
    return [load_hub(spec, split)]
