"""Saving a baseline's result atomically (:func:`alter.io.atomic_directory`).

Full-parameter models go to ``output_dir/model`` (``save_pretrained``, safetensors, with the
tokenizer so the folder loads on its own); PEFT adapters to ``output_dir/adapter`` (PEFT's
``save_pretrained``: ``adapter_config.json`` + ``adapter_model.safetensors``). The report goes to
``output_dir/report.json``. A crash while saving leaves the previous folder as it was.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Iterator

from alter import io as alter_io


def _save_kwargs(model) -> dict:
    params = inspect.signature(model.save_pretrained).parameters
    return {"safe_serialization": True} if "safe_serialization" in params else {}


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Hide transformers' own progress bars while saving (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if enabled and was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled and was_on:
            hf_logging.enable_progress_bar()


def save_model(model, tokenizer, output_dir, *, adapter: bool, quiet: bool = False) -> Path:
    """Write the trained model (or adapter) under ``output_dir``; returns the folder written."""
    target = Path(output_dir) / ("adapter" if adapter else "model")
    with _quiet(quiet), alter_io.atomic_directory(target) as tmp:
        model.save_pretrained(str(tmp), **_save_kwargs(model))
        if not adapter and tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return target


def save_report(report, output_dir) -> Path:
    path = Path(output_dir) / "report.json"
    alter_io.atomic_write_json(path, report.to_dict(include_log=False))
    return path
