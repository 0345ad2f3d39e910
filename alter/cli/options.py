"""Command-line flags for every ``AlterConfig`` field, and config merging (defaults < YAML < flags)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any, Dict, Optional

import torch

from alter import config as config_module
from alter.config import AlterConfig, field_choices, field_help


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""``--dtype`` names -> torch dtypes (the base model's weights)."""


class UsageError(ValueError):
    """A user mistake on the command line or in a config file: printed as one line, no traceback."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_theta(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _parse_targets(text: str):
    text = text.strip()
    if text == "all-linear":
        return text
    if "," in text:
        return [t.strip() for t in text.split(",") if t.strip()]
    if re.fullmatch(r"[A-Za-z0-9_]+", text):
        return [text]
    return text          # a regex


def _parse_list(text: str):
    return [t.strip() for t in text.split(",") if t.strip()]


def _optional_str(text: str):
    return None if text.lower() in ("none", "null") else text


_PARSERS = {"theta": _parse_theta, "target_modules": _parse_targets, "forget_domains": _parse_list,
            "system_prompt": _optional_str}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; its help shows the default. Unset flags stay None (no override)."""
    group = parser.add_argument_group("ALTER hyperparameters (docs/method.md; also settable in --config YAML)")
    helps = field_help()     # what a flag does; why its default is what it is: docs/method.md
    choices = field_choices()
    defaults = AlterConfig()
    hints = typing.get_type_hints(AlterConfig)
    for f in dataclasses.fields(AlterConfig):
        default = getattr(defaults, f.name)
        if f.name in _PARSERS:
            kind = _PARSERS[f.name]
        elif hints[f.name] is bool:
            kind = lambda s: s.lower() in ("1", "true", "yes")  # noqa: E731
        elif hints[f.name] in (int, float, str):
            kind = hints[f.name]
        else:
            kind = str
        shown = ",".join(default) if isinstance(default, list) else default
        group.add_argument(_flag(f.name), dest=f"cfg_{f.name}", type=kind, default=None,
                           choices=choices.get(f.name), metavar=f.name.upper(),
                           help=f"{helps[f.name]} (default: {shown})")


def config_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The AlterConfig fields given as flags (``--lr-phase2 1e-3`` -> ``{"lr_phase2": 1e-3}``)."""
    return {name: getattr(args, f"cfg_{name}") for name in AlterConfig.field_names()
            if getattr(args, f"cfg_{name}", None) is not None}


def build_config(args: argparse.Namespace, base: Optional[Dict[str, Any]] = None) -> AlterConfig:
    """AlterConfig from (optional preset) < ``--config`` YAML < explicit flags; bad values are a UsageError."""
    try:
        return config_module.build_config(base, getattr(args, "config", None), config_overrides(args))
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
