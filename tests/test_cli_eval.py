"""alter-eval on a tiny saved model: a plain model, an ALTER adapter and a PEFT adapter."""

import json

import pytest
import torch

import alter
from alter.cli import evaluate as cli_eval
from tests.helpers import make_tiny_llama, make_tiny_tokenizer


@pytest.fixture()
def tiny_dir(tmp_path):
    torch.manual_seed(0)
    tok = make_tiny_tokenizer()
    model = make_tiny_llama(len(tok))
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    qa = [{"question": f"Who is {n}?", "answer": f"{n} sells cars.", "paraphrased_answer": f"{n} is a car dealer.",
           "perturbed_answer": [f"{n} bakes bread.", f"{n} flies planes."]} for n in ["Ana", "Bo", "Cy"]]
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    mc = [{"question": "2 + 2 = ?", "choices": ["3", "4", "5", "6"], "answer": 1},
          {"question": "Capital of France?", "choices": ["Rome", "Oslo", "Paris", "Lima"], "answer": 2}]
    (tmp_path / "mc.json").write_text(json.dumps(mc))
    return tmp_path


def _run(args, capsys):
    code = cli_eval.main(args)
    return code, capsys.readouterr()


def test_qa_benchmark_on_a_plain_model(tiny_dir, capsys):
    out = tiny_dir / "eval"
    code, cap = _run(["--model", str(tiny_dir / "model"), "--benchmark", "qa", "--data", str(tiny_dir / "qa.json"),
                      "--max-new-tokens", "4", "--output", str(out), "--no-progress"], capsys)
    assert code == 0, cap.err
    record = json.loads((out / "metrics.json").read_text())
    res = record["results"]
    assert res["n"] == 3 and 0 <= res["probability"] <= 1 and len(res["truth_ratio_per_item"]) == 3
    assert "probability" in cap.out and "rougeL_recall" in cap.out


def test_alter_and_peft_adapters_are_recognised(tiny_dir, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dir / "model")
    w = alter.wrap(base, alter.AlterConfig(), theta=1.0)
    w.save_adapter(tiny_dir / "alter_adapter")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir / "model"),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tiny_dir / "peft_adapter")
    for adapter in ("alter_adapter", "peft_adapter"):
        out = tiny_dir / f"eval_{adapter}"
        code, cap = _run(["--model", str(tiny_dir / "model"), "--adapter", str(tiny_dir / adapter), "--benchmark",
                          "qa", "--data", str(tiny_dir / "qa.json"), "--max-new-tokens", "3", "--output", str(out),
                          "--no-progress"], capsys)
        assert code == 0, cap.err
        assert json.loads((out / "metrics.json").read_text())["adapter"].endswith(adapter)


def test_multiple_choice_benchmark_and_errors(tiny_dir, capsys):
    out = tiny_dir / "mc_eval"
    code, cap = _run(["--model", str(tiny_dir / "model"), "--benchmark", "mmlu", "--data", str(tiny_dir / "mc.json"),
                      "--output", str(out), "--no-progress"], capsys)
    assert code == 0, cap.err
    res = json.loads((out / "metrics.json").read_text())["results"]
    (only,) = res.values()
    assert 0.0 <= only["accuracy"] <= 1.0 and only["random_baseline"] == 0.25
    code, cap = _run(["--model", str(tiny_dir / "model"), "--benchmark", "qa", "--no-progress"], capsys)
    assert code == 2 and "needs --data" in cap.err
    code, cap = _run(["--model", str(tiny_dir / "model"), "--adapter", str(tiny_dir), "--benchmark", "qa",
                      "--data", str(tiny_dir / "qa.json")], capsys)
    assert code == 2 and "adapter_config.json" in cap.err


@pytest.mark.parametrize("method", ["alter", "npo"])
def test_alter_train_runs_any_method_and_alter_eval_reads_its_run_directory(tiny_dir, capsys, method):
    from alter.cli import train as cli_train

    forget = [{"question": f"Who is {n}?", "answer": f"{n} paints owls.", "domain": "owls"} for n in ["Ana", "Bo"]]
    (tiny_dir / "forget.json").write_text(json.dumps(forget))
    run = tiny_dir / f"run_{method}"
    code = cli_train.main(["--method", method, "--model", str(tiny_dir / "model"), "--forget",
                           str(tiny_dir / "forget.json"), "--retain", str(tiny_dir / "qa.json"), "--output", str(run),
                           "--batch-size", "2", "--phase2-epochs", "1", "--phase1-epochs", "0.5", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (run / ("adapter" if method == "alter" else "model")).is_dir()
    out = tiny_dir / f"eval_{method}"
    code, cap = _run(["--model", str(tiny_dir / "model"), "--adapter", str(run), "--benchmark", "qa", "--data",
                      str(tiny_dir / "qa.json"), "--max-new-tokens", "3", "--output", str(out), "--no-progress"],
                     capsys)
    assert code == 0, cap.err


@pytest.mark.parametrize("argv,expect", [
    (["--method", "bogus"], "unknown method"),
    (["--methods", "npo"], "run: alter-bench --methods npo"),
    (["--method", "alter", "--lr", "1e-3"], "--lr and --epochs apply to a baseline"),
    (["--benchmark", "tofu", "--data", "/no/such/dir"], "run: alter-bench --benchmark tofu --data /no/such/dir"),
])
def test_alter_train_method_flags_are_checked(tiny_dir, capsys, argv, expect):
    from alter.cli import train as cli_train

    code = cli_train.main(argv + ["--forget", str(tiny_dir / "qa.json"), "--retain", str(tiny_dir / "qa.json"),
                                  "--model", str(tiny_dir / "model"), "--output", str(tiny_dir / "x")])
    err = capsys.readouterr().err
    assert code == 2 and expect in err, err
