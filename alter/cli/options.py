"""Command-line flags for every ``AlterConfig`` field, and config merging (defaults < YAML < flags)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Dict, Optional

from alter.config import AlterConfig, field_choices, field_help


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
    helps = field_help()
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


def read_yaml(path) -> Dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def build_config(args: argparse.Namespace, base: Optional[Dict[str, Any]] = None) -> AlterConfig:
    """AlterConfig from (optional preset) < ``--config`` YAML < explicit flags."""
    values: Dict[str, Any] = dict(base or {})
    config_path = getattr(args, "config", None)
    if config_path:
        values.update(read_yaml(config_path))
    for name in AlterConfig.field_names():
        v = getattr(args, f"cfg_{name}", None)
        if v is not None:
            values[name] = v
    try:
        return AlterConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
