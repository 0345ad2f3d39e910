"""The fair-comparison protocol: method specs, the learning-rate sweep and its selection rule, seeds."""

import json

import pytest

from alter.cli import bench as cli
from alter.experiments.compare.table import to_markdown
from alter.experiments.compare.tuning import (MUSE_TUNE_LRS, TUNE_LRS, average_seeds, floor_of, seed_specs, select,
                                              select_muse, sweep_specs)
from alter.experiments.compare.variants import MethodSpec, parse_spec
from tests.helpers import save_tiny_model
from tests.test_data_tofu import _write_tofu


def test_method_specs_parse_and_print_back():
    assert parse_spec("NPO@lr=1e-5@seed=2") == MethodSpec("npo", 1e-5, 2)
    assert parse_spec("npo@lr=1e-5@seed=2").name == "npo@lr=1e-05@seed=2"
    assert parse_spec("npo@seed=2@lr=1e-5").setting == "npo@lr=1e-05"
    assert parse_spec("alter").name == "alter"
    assert parse_spec("alter@seed=1@epochs=1.5").name == "alter@epochs=1.5@seed=1"
    assert parse_spec("alter@epochs=1.5@seed=1").setting == "alter@epochs=1.5"
    for bad, match in [("npo@lr", "not one of"), ("npo@wd=1", "not one of"), ("npo@lr=x", "not a number"),
                       ("npo@lr=0", "positive"), ("npo@epochs=-1", "positive"), ("npo@seed=1@seed=2", "given twice"),
                       ("finetune@lr=1e-5", "takes no lr"), ("magic", "unknown method")]:
        with pytest.raises(ValueError, match=match):
            parse_spec(bad, known=("npo", "finetune"))


def test_sweep_covers_three_rates_per_baseline_and_the_floor():
    specs = sweep_specs(list(TUNE_LRS), {})
    assert specs[0] == "finetune" and len(specs) == 1 + 3 * len(TUNE_LRS)
    assert {"graddiff", "npo", "rmu", "lora", "task_vector", "whp"} <= set(TUNE_LRS)
    for method, lrs in TUNE_LRS.items():
        assert len(lrs) >= 3 and [parse_spec(s).lr for s in specs if s.startswith(method + "@")] == lrs
    assert sweep_specs(["ga"], {"ga": 2e-5})[1:] == ["ga@lr=1e-05", "ga@lr=2e-05", "ga@lr=4e-05"]
    with pytest.raises(ValueError, match="no rate to sweep|has none to sweep"):
        sweep_specs(["alter"], {})


def _row(method, forget, retain, never=None):
    return {"method": method, "forget_rougeL_recall": forget, "retain_rougeL_recall": retain,
            "never_taught_rougeL_recall": never}


def test_selection_rule_best_retain_at_the_floor_else_lowest_forget():
    rows = [_row("finetune", 0.97, 0.97, 0.40),
            _row("npo@lr=5e-06", 0.60, 0.95), _row("npo@lr=1e-05", 0.44, 0.80), _row("npo@lr=2e-05", 0.20, 0.30),
            _row("rmu@lr=5e-05", 0.90, 0.97), _row("rmu@lr=0.0002", 0.70, 0.90), _row("rmu@lr=0.001", 0.75, 0.5)]
    floor = floor_of(rows)
    assert floor == 0.40
    chosen = select(rows, floor)
    # npo: 1e-5 and 2e-5 are within floor + 0.05; 1e-5 keeps more retain
    assert chosen["npo"]["lr"] == 1e-5 and chosen["npo"]["reaches_floor"]
    # rmu: none reaches the floor; the lowest forget wins
    assert chosen["rmu"]["lr"] == 2e-4 and not chosen["rmu"]["reaches_floor"]
    assert len(chosen["npo"]["points"]) == 3 and "finetune" not in chosen


def test_muse_sweep_starts_from_both_reference_rows_and_its_rule_reads_knowmem_and_verbmem():
    specs = sweep_specs(["graddiff", "npo"], {}, dataset="muse_news")
    assert specs[:2] == ["retain", "finetune"]
    assert [parse_spec(s).lr for s in specs if s.startswith("npo@")] == MUSE_TUNE_LRS["npo"]

    def row(method, verb, know, know_retain, verb_retain=0.7):
        return {"method": method, "verbmem_forget": verb, "knowmem_forget": know, "knowmem_retain": know_retain,
                "verbmem_retain": verb_retain}

    rows = [row("retain", 0.14, 0.06, 0.25), row("finetune", 0.72, 0.15, 0.18),
            # graddiff: 5e-5 is at the floor on VerbMem but not on KnowMem; 1e-4 on both
            row("graddiff@lr=5e-05", 0.15, 0.13, 0.20), row("graddiff@lr=0.0001", 0.12, 0.08, 0.10),
            # npo: neither reaches the floor: the lowest VerbMem forget
            row("npo@lr=2e-05", 0.40, 0.12, 0.20), row("npo@lr=5e-05", 0.30, 0.14, 0.05),
            # lora: both at the floor: the better KnowMem retain, then VerbMem retain
            row("lora@lr=0.0002", 0.10, 0.05, 0.18, 0.6), row("lora@lr=0.0005", 0.05, 0.00, 0.18, 0.7)]
    chosen = select_muse(rows)
    assert chosen["graddiff"]["lr"] == 1e-4 and chosen["graddiff"]["reaches_floor"]
    assert chosen["npo"]["lr"] == 5e-5 and not chosen["npo"]["reaches_floor"]
    assert chosen["lora"]["lr"] == 5e-4
    assert set(chosen) == {"graddiff", "npo", "lora"}
    with pytest.raises(ValueError, match="never-taught"):
        select_muse(rows[1:])


def test_seeds_are_one_row_with_mean_and_spread():
    assert seed_specs(["finetune", "alter", "npo@lr=1e-05"], 3) == [
        "finetune", "alter", "alter@seed=1", "alter@seed=2", "npo@lr=1e-05", "npo@lr=1e-05@seed=1",
        "npo@lr=1e-05@seed=2"]
    with pytest.raises(ValueError, match="at least 1"):
        seed_specs(["alter"], 0)
    rows = average_seeds([_row("alter", 0.3, 0.9, 0.4), _row("alter@seed=1", 0.5, 0.9, 0.4), _row("npo", 0.2, 0.5)])
    assert [r["method"] for r in rows] == ["alter", "npo"]
    assert rows[0]["seeds"] == 2 and rows[0]["forget_rougeL_recall"] == pytest.approx(0.4)
    assert rows[0]["forget_rougeL_recall_sd"] == pytest.approx(0.1414, abs=1e-3)
    assert "| alter (2 seeds) | 0.400 ± 0.141 |" in to_markdown(rows)


def test_tune_then_report_with_the_selected_rates_and_seeds(tmp_path, monkeypatch):
    save_tiny_model(tmp_path / "tiny")
    monkeypatch.setenv("ALTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(TUNE_LRS, "ga", [1e-5, 1e-3, 1e-1])
    data = _write_tofu(tmp_path / "tofu", authors=list(range(10)) + list(range(180, 195)), per=2)
    common = ["--benchmark", "tofu", "--data", str(data), "--quick", "--model", str(tmp_path / "tiny"),
              "--no-progress", "--threads", "1"]
    sweep = tmp_path / "sweep"
    assert cli.main(common + ["--tune", "--methods", "ga", "--output", str(sweep)]) == 0
    summary = json.loads((sweep / "compare.json").read_text())
    assert summary["settings"]["tofu_split"] == "tune" and summary["settings"]["eval_lean"]
    assert [r["method"] for r in summary["runs"]] == ["finetune", "ga@lr=1e-05", "ga@lr=0.001", "ga@lr=0.1"]
    tuned = json.loads((sweep / "tuned.json").read_text())
    assert tuned["method_lr"]["ga"] in (1e-5, 1e-3, 1e-1)
    # the rule, re-applied to the stored points, picks the same rate
    assert select(summary["runs"], tuned["floor"])["ga"]["lr"] == tuned["method_lr"]["ga"]
    assert (sweep / "charts" / "front_forget_vs_retain.png").is_file()
    report = tmp_path / "report"
    assert cli.main(common + ["--tuned", str(sweep / "tuned.json"), "--methods", "ga", "--seeds", "2",
                              "--output", str(report)]) == 0
    summary = json.loads((report / "compare.json").read_text())
    assert summary["settings"]["tofu_split"] == "report"
    assert summary["settings"]["method_lr"]["ga"] == tuned["method_lr"]["ga"]
    assert [r["method"] for r in summary["runs"]] == ["ga", "ga@seed=1"]
    assert summary["rows"][0]["seeds"] == 2 and "forget_rougeL_recall_sd" in summary["rows"][0]


def test_a_spec_s_lr_and_epochs_reach_the_unlearning_run(monkeypatch):
    """``alter@lr=..@epochs=..`` sets ALTER's phase II rate and length; a baseline's spec sets its own."""
    import types

    import alter.baselines
    import alter.train
    from alter.experiments.compare import worker
    from alter.experiments.compare.settings import CompareSettings

    seen = {}

    class FakeTrainer:
        def __init__(self, model, tok, config, forget, retain, progress=True, stop_reference=None):
            seen["alter"] = (config.lr_phase2, config.phase2_epochs)
            self.model = model
            self.report = types.SimpleNamespace(phases={"phase2": {"steps": 3}}, entropy_summary={"frac_high": 0.1})

        def train(self):
            return types.SimpleNamespace(adapter_parameter_count=lambda: 1)

    def fake_run(method, model, tok, forget, retain, epochs, lr, **kw):
        seen[method] = (lr, epochs)
        return types.SimpleNamespace(model=model, report=types.SimpleNamespace(trainable_parameters=1, steps=2))

    monkeypatch.setattr(worker, "starting_model", lambda s, d, p: (object(), object(), None))
    monkeypatch.setattr(alter.train, "AlterTrainer", FakeTrainer)
    monkeypatch.setattr(alter.baselines, "run_unlearning", fake_run)
    s = CompareSettings(unlearn_epochs=3.0)
    data = types.SimpleNamespace(forget=[], retain=[])
    assert worker._unlearn(parse_spec("alter@lr=5e-4@epochs=1.5"), s, data, progress=False)[2]["unlearn_steps"] == 3
    assert worker._unlearn(parse_spec("npo@epochs=6"), s, data, progress=False)[2]["unlearn_steps"] == 2
    worker._unlearn(parse_spec("graddiff"), s, data, progress=False)
    assert seen["alter"] == (5e-4, 1.5)
    assert seen["npo"] == (s.method_lr["npo"], 6.0)
    assert seen["graddiff"] == (s.method_lr["graddiff"], 3.0)


def test_runs_made_before_the_retain_model_get_their_ks_p_value_from_stored_probabilities():
    from alter.experiments.compare.comparison import _ks_against_retain
    from alter.eval.metrics.tofu import forget_quality

    ref, probs = [0.1, 0.2, 0.3, 0.4], [0.8, 0.9, 0.95, 0.99]
    results = {"retain": {"row": {"method": "retain"}, "reference_stats": {"forget_probabilities": ref}},
               "alter": {"row": {"method": "alter"}, "reference_stats": {"forget_probabilities": probs}},
               "npo": {"row": {"method": "npo", "forget_probability_ks_p": 0.5}},
               "finetune": {"row": {"method": "finetune"}}}
    _ks_against_retain(results)
    assert results["alter"]["row"]["forget_probability_ks_p"] == forget_quality(probs, ref)["forget_quality"]
    assert results["npo"]["row"]["forget_probability_ks_p"] == 0.5           # measured at run time: kept
    assert "forget_probability_ks_p" not in results["finetune"]["row"]     # nothing stored: nothing made up
    assert "forget_probability_ks_p" not in results["retain"]["row"]
