"""`alter-bench --compare` on a tiny saved model: two methods, one table, charts, JSON."""

import csv
import json

import pytest
import torch

import alter
from alter.cli import bench as cli
from alter.experiments.compare import parse_methods
from alter.experiments.compare.table import pareto_front, to_markdown
from tests.helpers import make_tiny_llama, make_tiny_tokenizer


def test_method_list_is_validated():
    assert parse_methods("ga, alter") == ["ga", "alter"]
    assert "asymlora" in parse_methods(None)
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("ga,magic")


def test_pareto_front_and_table_shape():
    rows = [{"method": "a", "forget_rougeL_recall": 0.2, "model_utility": 0.5},
            {"method": "b", "forget_rougeL_recall": 0.3, "model_utility": 0.4},
            {"method": "c", "forget_rougeL_recall": 0.1, "model_utility": 0.3},
            {"method": "retain", "forget_rougeL_recall": 0.0, "model_utility": 1.0}]
    assert pareto_front(rows) == ["a", "c"]
    for r, fq in zip(rows, [0.01, 0.5, None, 1.0]):
        r["forget_quality"] = fq
    # higher forget quality is better; a method without it (None) is left out
    assert pareto_front(rows, efficacy="forget_quality", efficacy_higher_is_better=True) == ["a", "b"]
    table = to_markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "| b |" in table and "forget quality" in table
    rows[0].update(trainable_parameters=5379840.0, peak_memory_bytes=2 ** 31)   # a seed mean is a float
    assert "| 5,379,840 |" in to_markdown(rows) and "| 2.00 |" in to_markdown(rows)


def test_compare_smoke_two_methods_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    tok = make_tiny_tokenizer()
    model = make_tiny_llama(len(tok))
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    monkeypatch.setenv("ALTER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    code = cli.main(["--compare", "--quick", "--methods", "ga,alter", "--model", str(tmp_path / "tiny"),
                     "--output", str(out), "--no-progress", "--threads", "1"])
    assert code == 0
    summary = json.loads((out / "compare.json").read_text())
    rows = {r["method"]: r for r in summary["rows"]}
    assert set(rows) == {"ga", "alter"}
    for row in rows.values():
        assert row["forget_quality"] is not None and 0.0 <= row["forget_quality"] <= 1.0
        assert row["model_utility"] is not None and row["train_seconds"] > 0
        assert row["trainable_parameters"] > 0 and row["fluency_mean"] is not None
        assert row["unlearn_steps"] > 0       # phase II steps for alter, optimiser steps for a baseline
    assert rows["alter"]["trainable_parameters"] < rows["ga"]["trainable_parameters"]
    with open(out / "compare_table.csv") as fh:
        assert [r["method"] for r in csv.DictReader(fh)] == ["ga", "alter"]
    assert "| alter |" in (out / "compare_table.md").read_text()
    assert (out / "charts" / "forget_rougeL_recall.png").is_file()
    # --resume keeps finished methods (ga, retain) and runs the missing one (alter) again
    kept = {m: (out / "methods" / f"{m}.json").stat().st_mtime_ns for m in ("ga", "retain")}
    (out / "methods" / "alter.json").unlink()
    args = ["--compare", "--quick", "--methods", "ga,alter", "--model", str(tmp_path / "tiny"),
            "--output", str(out), "--no-progress", "--threads", "1", "--resume"]
    assert cli.main(args) == 0
    assert {m: (out / "methods" / f"{m}.json").stat().st_mtime_ns for m in kept} == kept
    assert (out / "methods" / "alter.json").is_file()
    assert {r["method"] for r in json.loads((out / "compare.json").read_text())["rows"]} == {"ga", "alter"}
    # other settings in the same folder: refused, in one line
    settings = json.loads((out / "settings.json").read_text())
    original = settings["seed"]
    settings["seed"] = original + 1
    (out / "settings.json").write_text(json.dumps(settings))
    assert cli.main(args) == 2
    # the same settings but runs made with other AlterConfig defaults (an older ALTER): refused too
    settings["seed"] = original
    (out / "settings.json").write_text(json.dumps(settings))
    defaults = json.loads((out / "alter_defaults.json").read_text())
    assert defaults["lr_phase2"] == alter.AlterConfig().lr_phase2
    (out / "alter_defaults.json").write_text(json.dumps({**defaults, "lr_phase2": 1e-3}))
    assert cli.main(args) == 2
    assert "lr_phase2" in capsys.readouterr().err
