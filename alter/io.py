"""Atomic writes: a saved adapter or checkpoint is either the old one or the new one, never a mix
(and the one JSON writer, :func:`atomic_write_json`, and JSONL reader, :func:`read_jsonl`).

Files are written to a temporary name in the same folder, flushed to disk, then renamed over
the target (``os.replace`` is atomic on POSIX). A directory (config + weights) is built in a
sibling temporary directory and swapped in: at no point does the target hold new weights with
an old config. Tensors go through safetensors only — never pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from safetensors.torch import load_file, save_file


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename) to disk; best effort, as some filesystems refuse it."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path, data: bytes) -> None:
    with _replacing(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path, obj, *, lines: bool = False, sort_keys: bool = True, ensure_ascii: bool = True) -> Path:
    """Write ``obj`` as indented JSON, or with ``lines`` the records of ``obj`` one object per line (JSONL),
    atomically (a temporary file in the same folder, fsync, ``os.replace``); returns ``path``.
    The one JSON writer: results, reports, configs and data files all go through it."""
    def dump(value, indent):
        return json.dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=str)

    text = "".join(dump(rec, None) + "\n" for rec in obj) if lines else dump(obj, 2) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return Path(path)


def append_jsonl(path, record) -> None:
    """Append one object as a line to a JSONL log (a training log grows line by line, so it is not
    rewritten atomically; a crash loses at most the last line)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(path) -> List[dict]:
    """The objects of a JSONL file, one per non-blank line; a malformed line is a ``ValueError`` naming
    the file and the line. The one JSONL reader."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(value, dict):
                raise ValueError(f"{path} line {n}: each line must be a JSON object, got {type(value).__name__}")
            rows.append(value)
    return rows


def atomic_save_tensors(path, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> None:
    """safetensors file written atomically; tensors are made contiguous CPU copies first."""
    with _replacing(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_tensors(path, device="cpu") -> Dict[str, torch.Tensor]:
    return load_file(str(path), device=str(device))


def _backup_path(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def recover_directory(target) -> None:
    """Finish a directory swap that a crash interrupted between its two renames.

    The swap moves ``target`` to a fixed backup name, then the new copy to ``target``. If the
    process died in between, ``target`` is missing and the backup holds the last good copy: it
    is moved back. A backup left beside a complete ``target`` is removed."""
    target = Path(target)
    old = _backup_path(target)
    if not old.exists():
        return
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, target)
        _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_directory(target) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target`` as a whole.

    If the block raises, ``target`` is left exactly as it was and the temporary is removed; if the
    process dies during the swap, the next :func:`recover_directory` (called here and by the
    readers of adapters and checkpoints) brings the old copy back.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent)))
    try:
        yield tmp
        _fsync_dir(tmp)
        old = None
        if target.exists():
            old = _backup_path(target)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
