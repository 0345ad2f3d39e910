"""One registry of methods (alter.baselines.registry): the comparison's list and the CLI's help come from it."""

import pytest

from alter.baselines.registry import METHODS as BASELINE_CLASSES, REGISTRY, TRAINABLE, method_info
from alter.cli.train import build_parser
from alter.experiments.compare import ALL_METHODS


def test_every_method_is_registered_once_with_how_it_trains():
    assert set(REGISTRY) == set(BASELINE_CLASSES) | {"alter", "asymlora"}
    assert ALL_METHODS[:2] == ["finetune", "retain"] and ALL_METHODS[-2:] == ["asymlora", "alter"]
    assert sorted(ALL_METHODS) == sorted(REGISTRY)
    assert method_info("ALTER").kind == "alter" and method_info("asymlora").alter_config == {"token_entropy": False}
    assert method_info("npo").kind == "baseline" and method_info("retain").kind == "reference"
    assert "finetune" not in TRAINABLE and "alter" in TRAINABLE
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        method_info("magic")


def test_cli_help_lists_every_trainable_method():
    help_text = " ".join(build_parser().format_help().split())
    for name in TRAINABLE:
        assert f"{name}:" in help_text
