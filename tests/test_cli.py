"""alter-train and alter-bench: flags for every hyperparameter, config precedence, one-line errors for bad input,
one job per command, logs a person can read."""

import json
import os
import re
import subprocess
import sys

import pytest

from alter.cli import bench
from alter.cli import train as cli
from alter.cli.options import build_config
from alter.config import AlterConfig


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_documents_every_hyperparameter_with_its_default(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in AlterConfig.field_names():
        assert "--" + name.replace("_", "-") in text, name
    assert "(default: 1.5)" in text and "(default: auto)" in text and "--demo" in text
    flags = set(re.findall(r"--[a-z0-9-]+", text))
    assert not flags & {"--compare", "--benchmark", "--tune", "--tuned", "--tofu-split", "--methods", "--seeds",
                        "--data"}                          # alter-bench's job


def test_bench_help_shows_the_comparison_flags_and_every_hyperparameter(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in AlterConfig.field_names():
        assert "--" + name.replace("_", "-") in text, name
    flags = set(re.findall(r"--[a-z0-9-]+", text))
    assert {"--compare", "--benchmark", "--data", "--tofu-split", "--methods", "--tune", "--tuned", "--seeds",
            "--threads", "--resume", "--output", "--quick", "--model", "--config"} <= flags
    assert not flags & {"--forget", "--retain", "--method", "--demo", "--checkpoint-every", "--lr", "--epochs",
                        "--device", "--dtype"}            # alter-train's job


@pytest.mark.parametrize("main", [cli.build_parser, bench.build_parser])
def test_help_texts_carry_no_measurement_history(main):
    text = " ".join(main().format_help().split())
    for word in ("measured", "Measured", "On TOFU", "KS p", "garbled", "(deviation"):
        assert word not in text, word


def test_defaults_then_yaml_then_flags(tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("r: 4\nmargin: 2.5\ntheta: quantile:0.3\n")
    args = cli.build_parser().parse_args(["--config", str(yaml_path), "--margin", "0.5",
                                          "--target-modules", "q_proj,v_proj", "--theta", "1.25"])
    cfg = build_config(args)
    assert cfg.r == 4 and cfg.margin == 0.5 and cfg.theta == 1.25
    assert cfg.target_modules == ["q_proj", "v_proj"] and cfg.q == 1.5


def _write(path, rows):
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.mark.parametrize("case", ["missing_file", "empty_forget", "unknown_model", "bad_key", "bad_value"])
def test_bad_input_gives_one_clear_line(tmp_path, capsys, case):
    good = _write(tmp_path / "retain.json", [{"question": "q?", "answer": "a."}])
    argv = ["--forget", good, "--retain", good, "--output", str(tmp_path / "out"), "--no-progress"]
    expect = {"missing_file": "nope.json", "empty_forget": "empty forget set", "unknown_model": "unknown model",
              "bad_key": "unknown config key 'rank'", "bad_value": "AlterConfig.q"}[case]
    if case == "missing_file":
        argv[1] = str(tmp_path / "nope.json")
    elif case == "empty_forget":
        argv[1] = _write(tmp_path / "empty.json", [])
    elif case == "unknown_model":
        argv += ["--model", "no-such-model"]
    elif case == "bad_key":
        (tmp_path / "c.yaml").write_text("rank: 4\n")
        argv += ["--config", str(tmp_path / "c.yaml")]
    elif case == "bad_value":
        argv += ["--q", "-1"]
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("alter-train: error: ") and expect in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_installed_entry_point_reports_errors_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alter.cli.train", "--forget", str(tmp_path / "x.json"),
                           "--retain", str(tmp_path / "y.json")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "x.json" in proc.stderr


def test_malformed_jsonl_and_missing_model_dir_give_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "answer": "a."}\n{"question": "oops"\n')
    good = _write(tmp_path / "retain.json", [{"question": "q?", "answer": "a."}])
    code, out, err = _run(["--forget", str(bad), "--retain", good, "--output", str(tmp_path / "o")], capsys)
    assert code == 2 and "bad.jsonl line 2: not valid JSON" in err and err.count("\n") == 1, err
    code, out, err = _run(["--forget", good, "--retain", good, "--model", str(tmp_path / "no" / "such"),
                           "--output", str(tmp_path / "o")], capsys)
    assert code == 2 and "no such directory" in err, err


def test_overlapping_forget_and_retain_sets_are_named():
    import warnings

    from alter.data.schema import QAExample
    from alter.train import AlterTrainer

    ex = QAExample("Who is Ana?", "Ana paints owls.", domain="forget")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AlterTrainer(None, None, AlterConfig(), [ex], [QAExample(ex.question, ex.answer)])
    assert any("1 example(s) are in both the forget and the retain set" in str(w.message) for w in caught)


def test_a_number_in_the_config_is_the_threshold():
    import alter
    from tests.helpers import make_tiny_llama

    model = alter.wrap(make_tiny_llama(64), AlterConfig(theta=0.5))
    assert model.theta == 0.5


def _fake_run_compare(monkeypatch):
    import alter.experiments.compare as compare

    seen = {}

    def run_compare(settings, out, **kw):
        seen.update(settings=settings, out=out, **kw)

    monkeypatch.setattr(compare, "run_compare", run_compare)
    return seen


def test_alter_flags_reach_the_comparisons_alter_runs(monkeypatch, tmp_path, capsys):
    # `--compare` / `--benchmark` used to drop ALTER flags silently; they now become
    # CompareSettings.alter (recorded in settings.json), and bad values stop before any work.
    seen = _fake_run_compare(monkeypatch)
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("margin: 2.0\n")
    code = bench.main(["--compare", "--methods", "alter,ga", "--stop-when-forgotten", "0.5",
                       "--lr-phase2", "1e-3", "--config", str(yaml_path), "--output", str(tmp_path / "o")])
    assert code == 0
    assert seen["settings"].alter == {"stop_when_forgotten": 0.5, "lr_phase2": 1e-3, "margin": 2.0}
    seen.clear()
    assert bench.main(["--compare", "--output", str(tmp_path / "o")]) == 0 and seen["settings"].alter == {}
    code = bench.main(["--compare", "--q", "-1", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "AlterConfig.q" in err


def test_bench_runs_what_alter_train_benchmark_ran(monkeypatch, tmp_path):
    import torch

    seen = _fake_run_compare(monkeypatch)
    threads = torch.get_num_threads()
    try:
        code = bench.main(["--benchmark", "tofu", "--data", str(tmp_path), "--methods", "retain,finetune,alter",
                           "--threads", "2"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    s = seen["settings"]
    assert (s.dataset, s.tofu_split, s.data_dir) == ("tofu", "report", str(tmp_path.resolve()))
    assert s.methods == ["retain", "finetune", "alter"]
    assert seen["threads"] == 2 and seen["tuning"] is False and str(seen["out"]) == "alter_runs/tofu-report"
    assert s.eval_robustness == 12                                   # the TOFU default
    assert bench.main(["--benchmark", "tofu", "--data", str(tmp_path), "--robustness-questions", "100"]) == 0
    assert seen["settings"].eval_robustness == 100
    # the sweep: the tune split, one run per learning rate, its own folder
    assert bench.main(["--benchmark", "tofu", "--data", str(tmp_path), "--tune", "--methods", "ga"]) == 0
    s = seen["settings"]
    assert s.tofu_split == "tune" and s.eval_lean and all(m.startswith("ga@lr=") for m in s.methods[1:])
    assert seen["tuning"] is True and str(seen["out"]) == "alter_runs/tofu-tune-sweep"
    # MUSE-News: its own grid, the never-taught row first (the floor), every column scored
    assert bench.main(["--benchmark", "muse-news", "--data", str(tmp_path), "--tune"]) == 0
    s = seen["settings"]
    assert s.dataset == "muse_news" and s.tofu_split == "tune" and not s.eval_lean
    assert s.methods[:2] == ["retain", "finetune"] and {m.split("@")[0] for m in s.methods[2:]} == {
        "graddiff", "npo", "rmu", "lora", "task_vector", "whp"}
    assert seen["tuning"] is True and str(seen["out"]) == "alter_runs/muse-news-tune-sweep"
    # the synthetic authors; `--demo --compare` (alter-train's old spelling) is the same run
    for argv in (["--compare", "--quick", "--seeds", "2", "--methods", "alter"],
                 ["--demo", "--compare", "--quick", "--seeds", "2", "--methods", "alter"]):
        assert bench.main(argv) == 0
        assert seen["settings"].dataset == "synthetic" and seen["settings"].methods == ["alter", "alter@seed=1"]
        assert str(seen["out"]) == "alter_runs/compare-quick"


@pytest.mark.parametrize("argv,expect", [
    ([], "say what to run: --compare"),
    (["--compare", "--benchmark", "tofu"], "give one"),
    (["--compare", "--tune"], "only apply to --benchmark"),
    (["--benchmark", "tofu", "--data", "/no/such/dir"], "no such directory"),
    (["--benchmark", "tofu", "--data", ".", "--tune", "--tofu-split", "report"], "use --tuned"),
    (["--benchmark", "tofu", "--data", ".", "--tuned", "/no/tuned.json"], "no such file"),
    (["--compare", "--methods", "ga,magic"], "unknown method"),
    (["--benchmark", "muse-news", "--data", ".", "--robustness-questions", "100"], "applies to --benchmark tofu"),
    (["--benchmark", "tofu", "--data", ".", "--robustness-questions", "-1"], "applies to --benchmark tofu"),
])
def test_bench_bad_flags_give_one_clear_line(monkeypatch, capsys, argv, expect):
    seen = _fake_run_compare(monkeypatch)
    code = bench.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and not seen
    assert err.startswith("alter-bench: error: ") and expect in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [
    ["--benchmark", "tofu", "--data", "../shared/data/tofu", "--methods", "retain,finetune,alter", "--threads", "2"],
    ["--demo", "--compare", "--methods", "ga,alter"],
    ["--benchmark=tofu", "--tune"],
    ["--benchmark", "tofu", "--tuned", "tuned.json", "--seeds", "3"],
])
def test_alter_train_sends_comparisons_to_alter_bench(monkeypatch, capsys, argv):
    seen = _fake_run_compare(monkeypatch)
    code, out, err = _run(argv, capsys)
    assert code == 2 and not seen and out == ""
    assert err.startswith("alter-train: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    suggested = err.split("run: ", 1)[1].split()
    assert suggested[0] == "alter-bench" and suggested[1:] == [a for a in argv if a != "--demo"]
    # the suggested command parses as alter-bench's own
    bench.build_parser().parse_args(suggested[1:])


def test_alter_bench_is_a_console_script():
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["alter-bench"] == "alter.cli.bench:main" and scripts["alter-train"] == "alter.cli.train:main"
    proc = subprocess.run([sys.executable, "-m", "alter.cli.bench"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("alter-bench: error: say what to run"), proc.stderr


def test_library_messages_reach_the_user_as_plain_lines_on_stderr(capsys):
    import logging

    from alter.cli.logs import configure_logging

    configure_logging()
    configure_logging()                                        # twice: still one line per message
    logging.getLogger("alter.experiments.demo").info("[demo] evaluate before: 3 s")
    logging.getLogger("alter_kernels.ops").debug("not shown")
    captured = capsys.readouterr()
    assert captured.err == "[demo] evaluate before: 3 s\n" and captured.out == ""


def test_library_code_does_not_print():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # the commands' own output (alter/cli/), a script's report (its main) and a method whose job is to print
    # (PEFT's print_trainable_parameters) may print; the rest of the library logs.
    pending = set()
    found = []
    for package in ("alter", "alter_kernels"):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith("alter/cli/") or rel in pending:
                continue

            def visit(node, function):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    function = node.name
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
                        and not (function == "main" or function.startswith("print"))):
                    found.append(f"{rel}:{node.lineno}")
                for child in ast.iter_child_nodes(node):
                    visit(child, function)

            visit(ast.parse(path.read_text()), "")
    assert not found, found


def test_progress_bars_redraw_rarely_off_a_terminal(monkeypatch):
    import io

    from alter.cli.progress import quiet_progress_off_terminal

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("TQDM_MAXINTERVAL", raising=False)
    quiet_progress_off_terminal(io.StringIO())                 # a log file: at most one redraw a minute
    assert os.environ["TQDM_MININTERVAL"] == "60" and os.environ["TQDM_MAXINTERVAL"] == "60"
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    monkeypatch.delenv("TQDM_MAXINTERVAL")
    quiet_progress_off_terminal(io.StringIO())                 # the user's own setting wins
    assert os.environ["TQDM_MININTERVAL"] == "5" and "TQDM_MAXINTERVAL" not in os.environ

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("TQDM_MININTERVAL")
    quiet_progress_off_terminal(Terminal())                    # a terminal: tqdm's own defaults
    assert "TQDM_MININTERVAL" not in os.environ and "TQDM_MAXINTERVAL" not in os.environ


def test_every_progress_bar_of_the_library_can_be_turned_off():
    # off a terminal the commands slow tqdm down (above); --no-progress must reach every bar
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for package in ("alter", "alter_kernels"):
        for path in sorted((root / package).rglob("*.py")):
            for call in re.findall(r"\btqdm\((.*)", path.read_text()):
                assert "disable=" in call, f"{path}: tqdm({call}"
