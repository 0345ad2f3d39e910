"""alter-train: flags for every hyperparameter, config precedence, one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest

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


def test_alter_flags_reach_the_comparisons_alter_runs(monkeypatch, tmp_path, capsys):
    # `--demo --compare` / `--benchmark` used to drop ALTER flags silently; they now become
    # CompareSettings.alter (recorded in settings.json), and bad values stop before any work.
    import alter.compare as compare

    seen = {}
    monkeypatch.setattr(compare, "run_compare", lambda settings, out, **kw: seen.setdefault("s", settings))
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("margin: 2.0\n")
    code = cli.main(["--demo", "--compare", "--methods", "alter,ga", "--stop-when-forgotten", "0.5",
                     "--lr-phase2", "1e-3", "--config", str(yaml_path), "--output", str(tmp_path / "o")])
    assert code == 0
    assert seen["s"].alter == {"stop_when_forgotten": 0.5, "lr_phase2": 1e-3, "margin": 2.0}
    seen.clear()
    assert cli.main(["--demo", "--compare", "--output", str(tmp_path / "o")]) == 0 and seen["s"].alter == {}
    code, _, err = _run(["--demo", "--compare", "--q", "-1", "--output", str(tmp_path / "o")], capsys)
    assert code == 2 and "AlterConfig.q" in err


def test_progress_bars_redraw_rarely_off_a_terminal(monkeypatch):
    import io

    from alter.cli.progress import quiet_progress_off_terminal

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    quiet_progress_off_terminal(io.StringIO())                 # a log file: at most one redraw a minute
    assert os.environ["TQDM_MININTERVAL"] == "60"
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    quiet_progress_off_terminal(io.StringIO())                 # the user's own setting wins
    assert os.environ["TQDM_MININTERVAL"] == "5"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("TQDM_MININTERVAL")
    quiet_progress_off_terminal(Terminal())                    # a terminal: tqdm's own defaults
    assert "TQDM_MININTERVAL" not in os.environ
