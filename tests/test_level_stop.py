"""Phase II's default stop: the forget answers fall to a level estimated from the data (alter/train/stopping/level.py)."""

import json
import math

import pytest
import torch

import alter
from alter.data.schema import QAExample
from alter.eval import score_encoded
from alter.eval.evaluators import evaluate_qa
from alter.train.stopping.early_stop import EarlyStop
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
    tr = _trainer(tiny_tokenizer, tmp_path, stop_level_scale=0.0, stop_stall_scale=-1.0, stop_check_every=1)
    tr.train()
    assert "stopped_early_at" not in tr.report.phases["phase2"] and tr.report.phases["phase2"]["steps"] == 6
    assert len(FORGET) == 4


def test_the_check_keeps_the_base_pass_and_starts_from_the_last_fixed_point_with_the_same_readings(
        tiny_tokenizer, monkeypatch):
    """The stop check scores its fixed sample as a full scoring forward does (evaluate_qa), check after
    check while the experts move, but runs the base pass once and, with nothing changed, one adapted pass
    per batch (alter/modeling/scoring_pass.py)."""
    model = _trainer(tiny_tokenizer, stop_level_scale=0.0, stop_stall_scale=-1.0, stop_check_every=1).train()
    assert model.question_router is not None and model.question_router.fitted
    stop = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=1.0, every=1, min_step=1, seed=0, system_prompt=None,
                           batch_size=2, level=1.0)       # a level every reading is under: every check scores all
    calls = {"base": 0, "adapted": 0}
    route, routed = model.route_questions, model._routed_forward

    def counting_route(*a, **k):
        calls["base"] += 1
        return route(*a, **k)

    def counting_forward(*a, **k):
        calls["adapted"] += 1
        return routed(*a, **k)

    monkeypatch.setattr(model, "route_questions", counting_route)
    monkeypatch.setattr(model, "_routed_forward", counting_forward)
    torch.manual_seed(1)
    for check in range(4):
        if check == 2:       # the experts move, as phase II moves them between two checks
            with torch.no_grad():
                for layer in model.adapter_layers().values():
                    for b in layer.lora_B[1:]:
                        b.add_(torch.randn_like(b) * 0.3)
        before = dict(calls)
        stop.forgotten(model)
        used = {k: calls[k] - before[k] for k in calls}
        reading = evaluate_qa(model, tiny_tokenizer, FORGET, generate=False, progress=False)["probability"]
        assert stop.last == pytest.approx(reading, rel=1e-5, abs=1e-9)
        assert used["base"] == (2 if check == 0 else 0)            # two batches of two, once
        if check in (1, 3):                                        # nothing changed since the last check
            assert used["adapted"] == 2


def test_scoring_pass_gives_the_scoring_forward_logits_from_any_starting_guess(tiny_tokenizer):
    from alter.data.prompts import collate, encode_qa, pad_id
    from alter.modeling.scoring_pass import ScoringCache, scoring_pass

    model = _trainer(tiny_tokenizer, stop_level_scale=0.0, stop_stall_scale=-1.0, stop_check_every=1).train()
    model.eval()
    encoded = [encode_qa(tiny_tokenizer, e.question, e.answer) for e in FORGET]
    batch = collate(encoded, pad_id(tiny_tokenizer))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = torch.tensor([e.prompt_length for e in encoded])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, prompt_lengths=lengths).logits
    logits, cache = scoring_pass(model, ids, mask, lengths)
    assert torch.allclose(logits, expected, atol=1e-5)
    torch.manual_seed(2)
    for guess in (torch.zeros(ids.shape), torch.full(ids.shape, float("inf")), torch.rand(ids.shape) * 2 * model.theta):
        again, _ = scoring_pass(model, ids, mask, lengths, ScoringCache(cache.base_entropy, cache.router_logits, guess))
        assert torch.allclose(again, expected, atol=1e-5)
    with model.disable_adapters(), pytest.raises(ValueError, match="adapters"):
        scoring_pass(model, ids, mask, lengths)


def test_a_check_that_cannot_pass_stops_early_with_the_full_checks_decision(tiny_tokenizer, monkeypatch):
    """Once the answers scored so far, over the whole sample's size, exceed the level, the rest cannot bring
    the mean down to it: the check fails after fewer batches (the likeliest first from the second check on),
    logs that lower bound and the share scored, and decides as the full check does."""
    model = _trainer(tiny_tokenizer, stop_level_scale=0.0, stop_stall_scale=-1.0, stop_check_every=1).train()
    full = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=1.0, every=1, min_step=1, seed=0, system_prompt=None,
                           batch_size=1, level=1.0)
    assert full.forgotten(model) and full.scored == 1.0
    reading = full.last
    per_answer = sorted((math.exp(-v) for v in score_encoded(model, full.true, pad_token_id=full.pad,
                                                              progress=False)["mean_nll"]), reverse=True)
    assert reading == pytest.approx(sum(per_answer) / 4, rel=1e-6)
    calls = {"adapted": 0}
    routed = model._routed_forward

    def counting_forward(*a, **k):
        calls["adapted"] += 1
        return routed(*a, **k)

    monkeypatch.setattr(model, "_routed_forward", counting_forward)
    level = per_answer[0] / 4 * 0.999          # under the reading, and under the likeliest answer alone
    early = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=1.0, every=1, min_step=1, seed=0, system_prompt=None,
                            batch_size=1, level=level)
    assert not early.forgotten(model)                           # the full check's decision: reading > level
    assert early.last > level and early.last <= reading + 1e-9
    early.forgotten(model)                                      # the second check starts from the likeliest answer
    assert early.scored == 0.25 and early.last == pytest.approx(per_answer[0] / 4, rel=1e-6)
    log = EarlyStop(alter.AlterConfig(), None, None, level=early).log_values()
    assert log["forget_level_scored"] == 0.25 and log["forget_level_reading"] == early.last
    # a level the sample can reach is decided on every answer
    passing = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=1.0, every=1, min_step=1, seed=0,
                              system_prompt=None, batch_size=1, level=reading * 1.001)
    assert passing.forgotten(model) and passing.scored == 1.0 and passing.last == pytest.approx(reading, rel=1e-6)


def _scripted(stop, readings, monkeypatch):
    """Make ``stop``'s checks read ``readings`` one after another."""
    values = iter(readings)
    monkeypatch.setattr(stop, "_reading", lambda model: next(values))


def test_the_stall_rule_stops_once_the_answers_stop_falling_under_the_stall_level(tiny_tokenizer, monkeypatch):
    """Under the stall level (above the level), a check that reads no lower than the one before ends phase II;
    above the stall level, or still falling, it does not; at the level it stops as before."""
    stop = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=0.5, every=1, min_step=1, seed=0, system_prompt=None,
                           stall_scale=1.0, level=0.2, stall_level=0.4)
    _scripted(stop, [0.6, 0.7, 0.35, 0.3, 0.31], monkeypatch)
    decisions = [stop.forgotten(None) for _ in range(5)]
    assert decisions == [False, False, False, False, True]   # 0.7 >= 0.6 but above the stall level
    assert stop.stalled and stop.last == 0.31
    log = EarlyStop(alter.AlterConfig(), None, None, level=stop).log_values()
    assert log["forget_level_stalled"] == 1.0 and log["forget_stall_level"] == 0.4
    at_level = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=0.5, every=1, min_step=1, seed=0,
                               system_prompt=None, stall_scale=1.0, level=0.2, stall_level=0.4)
    _scripted(at_level, [0.3, 0.19], monkeypatch)
    assert [at_level.forgotten(None) for _ in range(2)] == [False, True] and not at_level.stalled


def test_the_stall_rule_is_off_when_its_scale_is_not_above_the_levels_and_kept_by_checkpoints(tiny_tokenizer):
    kw = dict(n=4, every=1, min_step=1, seed=0, system_prompt=None, level=0.2)
    assert ForgetLevelStop(tiny_tokenizer, FORGET, scale=1.0, stall_scale=1.0, **kw).stall_scale is None
    assert ForgetLevelStop(tiny_tokenizer, FORGET, scale=0.5, stall_scale=None, **kw).stall_scale is None
    stop = ForgetLevelStop(tiny_tokenizer, FORGET, scale=0.5, stall_scale=1.0, stall_level=0.4, **kw)
    stop.last = 0.33
    state = stop.state()
    assert state == {"level": 0.2, "stall_level": 0.4, "last": 0.33}
    # a resumed run keeps the levels and the reading the stall rule compares with
    config = alter.AlterConfig(stop_level_scale=0.5, stop_stall_scale=1.0)
    plan = [[0, 1], [2, 3]]
    again = EarlyStop.build(config, tiny_tokenizer, FORGET, plan, lambda i: True, {"level": state}).level
    assert (again.level, again.stall_level, again.last) == (0.2, 0.4, 0.33)


def test_the_stall_level_comes_from_the_same_mismatched_answers_as_the_level(tiny_tokenizer):
    torch.manual_seed(0)
    model = alter.wrap(make_tiny_llama(len(tiny_tokenizer)), alter.AlterConfig(forget_domains=["d0", "d1"]), theta=1.0)
    stop = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=0.5, every=1, min_step=1, seed=0, system_prompt=None,
                           stall_scale=1.25)
    level = stop.calibrate(model)
    assert stop.stall_level == pytest.approx(level / 0.5 * 1.25, rel=1e-6)


def test_a_reading_under_the_stall_level_is_scored_whole(tiny_tokenizer):
    """The early exit fails a check once it cannot reach the higher of the two levels: a reading the stall rule
    compares is always the whole sample's."""
    model = _trainer(tiny_tokenizer, stop_level_scale=0.0, stop_stall_scale=-1.0, stop_check_every=1).train()
    full = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=1.0, every=1, min_step=1, seed=0, system_prompt=None,
                           batch_size=1, level=1.0)
    full.forgotten(model)
    reading = full.last
    stop = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=0.5, every=1, min_step=1, seed=0, system_prompt=None,
                           batch_size=1, level=reading / 100, stall_scale=1.0, stall_level=reading * 1.001)
    assert not stop.forgotten(model)                      # the first check: nothing to compare with
    assert stop.scored == 1.0 and stop.last == pytest.approx(reading, rel=1e-6)
    assert stop.forgotten(model) and stop.stalled         # the same reading again: stalled
