"""Phase II's forget-probability stop (alter/train/stopping/early_stop.py, losses.py; docs/method.md §4)."""

import json
import math

import pytest
import torch

import alter
from alter.eval.evaluators import evaluate_qa
from alter.train.stopping import EarlyStop
from alter.train.step_values import step_values
from alter.train.losses import phase2_losses
from tests.helpers import make_tiny_llama
from tests.test_answer_stop import FORGET, _trainer

# the forget / retain rows and the trainer of the answer-check tests: every stop rule off unless a test turns
# one on (each test here sets stop_forget_probability)


@pytest.mark.parametrize("struct_tokens", ["non_hinge", "answer"])
def test_losses_give_each_forget_rows_summed_answer_nll_and_token_count(struct_tokens):
    torch.manual_seed(0)
    V = 7
    # row 0 forget, row 1 retain; answer labels at positions 3-5 (row 1: 3-4, then padding)
    labels = torch.tensor([[-100, -100, -100, 1, 2, 3], [-100, -100, -100, 4, 5, -100]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    ent = torch.rand(2, 6)
    logits = torch.randn(2, 6, V)
    out = phase2_losses(logits, torch.randn(2, 6, V), labels, ent, 0.5, torch.tensor([True, False]), margin=1.0,
                        lambda_forget=1.0, lambda_retain=0.0, lambda_struct=1.0, attention_mask=mask,
                        struct_tokens=struct_tokens)
    nll = -torch.log_softmax(logits[0, 2:5], -1).gather(1, torch.tensor([[1], [2], [3]])).sum()
    torch.testing.assert_close(out["forget_answer_nll"], torch.tensor([[float(nll), 0.0], [3.0, 0.0]]))


def test_the_stop_reads_the_evaluations_probability_from_the_training_forward(tiny_tokenizer, tmp_path):
    # one step holds all 4 forget examples; before any update the adapter adds nothing (phase I off,
    # every B zero), so the step's forward is the model the evaluation scores
    tr = _trainer(tiny_tokenizer, tmp_path, batch_size=4, phase2_epochs=1, stop_forget_probability=0.0,
                  stop_probability_steps=1)
    torch.manual_seed(0)   # the weights _trainer built its model from
    base = make_tiny_llama(len(tiny_tokenizer))
    expected = evaluate_qa(base, tiny_tokenizer, FORGET, generate=False, progress=False,
                           system_prompt=tr.config.system_prompt)["probability"]
    tr.train()
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    first = [r for r in log if r.get("phase") == "phase2" and r["step"] == 1][0]
    assert first["forget_probability"] == pytest.approx(expected, rel=1e-4)


def test_phase2_stops_once_the_window_mean_is_under_the_threshold(tiny_tokenizer, tmp_path):
    # a random tiny model gives the forget answers a tiny probability: the window (2 steps) is full, and
    # under 0.5, after step 2; 4 examples, 2 per step, 3 epochs would be 6 steps
    tr = _trainer(tiny_tokenizer, tmp_path, stop_forget_probability=0.5, stop_probability_steps=2)
    tr.train()
    assert tr.report.phases["phase2"]["stopped_early_at"] == 2 and tr.report.phases["phase2"]["steps"] == 2
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["stopped_early"] is True and 0 < log[-1]["forget_probability"] < 0.5
    # the minimum holds it, and off (or a threshold never reached) runs the full length
    held = _trainer(tiny_tokenizer, stop_forget_probability=0.5, stop_probability_steps=2, phase2_min_steps=5)
    held.train()
    assert held.report.phases["phase2"]["stopped_early_at"] == 5
    for threshold in (-1.0, 0.0):
        full = _trainer(tiny_tokenizer, stop_forget_probability=threshold)
        full.train()
        assert full.report.phases["phase2"]["steps"] == 6 and "stopped_early_at" not in full.report.phases["phase2"]


def test_checkpoint_state_keeps_both_windows_and_reads_the_old_hinge_only_form():
    cfg = alter.AlterConfig(stop_when_forgotten=0.5, stop_window_steps=3, stop_forget_probability=0.1,
                            stop_probability_steps=2, stop_level_scale=-1.0)
    plan, is_forget = [[0, 1], [2, 3]], (lambda i: True)
    stop = EarlyStop.build(cfg, None, FORGET, plan, is_forget)
    out = {"forget_violating": torch.tensor(2), "forget_tokens": torch.tensor(5),
           "forget_answer_nll": torch.tensor([[math.log(4.0) * 3, math.log(2.0) * 2], [3.0, 2.0]])}
    assert not stop.update(1, step_values(out), None)
    assert stop.log_values() == {"violating": 0.4, "forget_probability": pytest.approx((0.25 + 0.5) / 2)}
    again = EarlyStop.build(cfg, None, FORGET, plan, is_forget, window_state=json.loads(json.dumps(stop.state())))
    assert again.state() == stop.state()
    old = EarlyStop.build(cfg, None, FORGET, plan, is_forget, window_state=stop.state()["hinge"])
    assert old.window.counts == [[2, 5]] and old.probability.counts == []
    # steps without any forget answer (count 0) never stop phase II, however low the threshold is met
    empty = EarlyStop.build(alter.AlterConfig(stop_probability_steps=1, phase2_min_steps=0,
                                                   stop_forget_probability=0.05, stop_level_scale=-1.0), None, FORGET, plan,
                            is_forget)
    assert not empty.update(1, step_values({"forget_answer_nll": torch.zeros(2, 2)}), None)


def test_the_settings_are_checked():
    with pytest.raises(ValueError, match="stop_forget_probability"):
        alter.AlterConfig(stop_forget_probability=1.0)
    with pytest.raises(ValueError, match="stop_probability_steps"):
        alter.AlterConfig(stop_probability_steps=0)
