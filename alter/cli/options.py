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


# ``--help`` says what a flag does; why its default is what it is (and what was measured on the way)
# is in docs/method.md. These fields' config help carries that history, so the CLI shows this instead.
SHORT_HELP = {
    "router_layer": "decoder block whose output hidden states the question router compares (negative: the block "
                    "at a quarter of the depth)",
    "lambda_struct": "weight of the structural KL(p_base || p_model) on struct_tokens",
    "struct_kl_top_k": "the structural KL against the base model's top-k tokens plus one bucket for the rest, "
                       "computed once per example (no base pass per phase II step); 0: the exact KL against a base "
                       "pass at every step",
    "route_tokens": "tokens the router learns the domain from: 'all' or 'low' entropy only (the spec's choice)",
    "router_warmup": "also train the routers during phase I (their domain cross-entropy on detached features, "
                     "classes weighted by inverse frequency), so that phase II starts with trained routers",
    "phase1_epochs": "epochs of phase I (A + B_R on high-entropy tokens of retain and forget); 0 skips it",
    "phase2_epochs": "epochs of phase II (asymmetric unlearning), counted over the forget set: a cap, the stop "
                     "rules (stop_forget_probability, ...) can end phase II earlier",
    "phase2_min_steps": "phase II runs at least this many steps (more epochs over a small forget set); 0 disables",
    "stop_when_forgotten": "hinge-count stop: end phase II once, over the last stop_window_steps steps, at most this "
                           "fraction of the hinge's forget tokens were still above the margin, but not before "
                           "phase2_min_steps; negative: off",
    "stop_window_steps": "steps the hinge-count stop looks back over; 0: one epoch of forget batches",
    "stop_answer_overlap": "answer-overlap stop: end phase II once the greedy answers to stop_check_questions forget "
                           "questions have a mean ROUGE-L recall of at most this against the forget answers "
                           "(checked every stop_check_every steps from phase2_min_steps on); negative: off",
    "stop_forget_probability": "forget-probability stop: end phase II once the mean teacher-forced probability "
                               "exp(-mean NLL) of the forget answers of the last stop_probability_steps steps (read "
                               "from the training forward, no extra pass) is at most this, but not before "
                               "phase2_min_steps; negative: off",
    "lr_phase2": "learning rate of phase II (the experts it trains)",
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; its help shows the default. Unset flags stay None (no override)."""
    group = parser.add_argument_group("ALTER hyperparameters (docs/method.md; also settable in --config YAML)")
    helps = {**field_help(), **{k: v for k, v in SHORT_HELP.items() if k in field_help()}}
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
