"""Phase II's default stop: the forget answers fall to a level estimated from the data (alter/train/stopping/level.py)."""

import json
import math

import pytest
import torch

from alter.data.schema import QAExample
from alter.eval.evaluators import evaluate_qa
from alter.train.stopping.level import ForgetLevelStop, mismatched_partners
from tests.helpers import make_tiny_llama
from tests.test_answer_stop import FORGET, _trainer


def test_a_mismatched_answer_comes_from_another_domain_when_there_is_one():
    domains = ["a", "a", "b", "b", "c"]
    partners = mismatched_partners(domains, seed=0)
    assert all(domains[j] != domains[i] for i, j in enumerate(partners))
    same = mismatched_partners(["x"] * 3, seed=1)          # one domain: any other example
    assert all(j != i for i, j in enumerate(same))
    with pytest.raises(ValueError, match="at least 2 forget examples"):
        mismatched_partners(["x"], seed=0)


def test_the_level_is_the_scaled_probability_of_mismatched_answers_under_the_starting_model(tiny_tokenizer, tmp_path):
    import alter

    examples = [QAExample(f"Where does zorblat {i} live?", f"zorblat {i} lives in Qwex {i}.", domain=f"d{i % 2}")
                for i in range(4)]
    torch.manual_seed(0)
    base = make_tiny_llama(len(tiny_tokenizer))
    model = alter.wrap(base, alter.AlterConfig(forget_domains=["d0", "d1"]), theta=1.0)
    for layer in model.adapter_layers().values():          # an adapter that changes the output
        for b in layer.lora_B:
            torch.nn.init.normal_(b, std=0.5)
    stop = ForgetLevelStop(tiny_tokenizer, examples, n=4, scale=0.5, every=1, min_step=1, seed=0, system_prompt=None)
    partners = mismatched_partners([e.domain for e in examples], seed=0)
    mismatched = [QAExample(e.question, examples[partners[i]].answer) for i, e in enumerate(examples)]
    with model.disable_adapters():
        expected = evaluate_qa(model, tiny_tokenizer, mismatched, generate=False, progress=False)["probability"]
    assert stop.calibrate(model) == pytest.approx(0.5 * expected, rel=1e-5)
    # the reading is the true answers' probability under the current model, scored as generation would
    reading = evaluate_qa(model, tiny_tokenizer, examples, generate=False, progress=False)["probability"]
    assert stop.forgotten(model) == (reading <= stop.level)
    assert stop.last == pytest.approx(reading, rel=1e-5)
    assert ForgetLevelStop(tiny_tokenizer, examples, n=4, scale=0.5, every=1, min_step=1, seed=0,
                           system_prompt=None, level=stop.state()["level"]).level == stop.level


def test_phase2_stops_at_the_first_check_under_the_level_and_logs_it(tiny_tokenizer, tmp_path):
    # a scale this large puts the level above any probability: the first check (step 2) stops phase II
    tr = _trainer(tiny_tokenizer, tmp_path, stop_level_scale=1e6, stop_check_every=2, phase2_min_steps=2)
    tr.train()
    assert tr.report.phases["phase2"]["stopped_early_at"] == 2
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    last = log[-1]
    assert last["stopped_early"] is True and last["forget_level_reading"] <= last["forget_level"]
    assert math.isfinite(last["forget_level"]) and last["forget_level"] > 0


def test_a_level_never_reached_runs_the_whole_budget(tiny_tokenizer, tmp_path):
    tr = _trainer(tiny_tokenizer, tmp_path, stop_level_scale=0.0, stop_check_every=1)
    tr.train()
    assert "stopped_early_at" not in tr.report.phases["phase2"] and tr.report.phases["phase2"]["steps"] == 6
    assert len(FORGET) == 4
