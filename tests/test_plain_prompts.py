"""Forget rows trained under plain prompts (no chat template) as well: the twins' encoding, their share of the
phase II plan, and that they leave theta and the question router's calibration as they were."""

import pytest
import torch

import alter
from alter.data.prompts import IGNORE_INDEX
from alter.data.schema import QAExample
from alter.train import AlterTrainer
from alter.train.batches import PLAIN_FORMATS, encode_items, plain_twins, swap_in_twins
from tests.helpers import make_tiny_llama

FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana") for n in ("Ana", "Ana Li")]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ("Cy", "Di", "Ed", "Fa")]


def test_twins_repeat_each_question_under_a_plain_prompt(tiny_tokenizer):
    items = encode_items(tiny_tokenizer, FORGET, [1, 1])
    passage = QAExample("", "A passage has no question to put in another prompt.")
    twins = plain_twins(tiny_tokenizer, FORGET + [passage], items + encode_items(tiny_tokenizer, [passage], [1]),
                        seed=3)
    assert [t.twin_of for t in twins] == [0, 1] and all(t.domain_id == 1 for t in twins)
    prompts = {p.format(question=q) for p, _ in PLAIN_FORMATS for q in (e.question for e in FORGET)}
    for twin, ex in zip(twins, FORGET):
        enc = twin.encoded
        prompt = tiny_tokenizer.decode(enc.input_ids[:enc.prompt_length])
        assert prompt in prompts and "<|im_start|>" not in prompt
        answer = [t for t in enc.labels if t != IGNORE_INDEX]
        assert answer[-1] == tiny_tokenizer.eos_token_id
        assert tiny_tokenizer.decode(answer[:-1]).strip() == ex.answer
        assert len(twin.content) == len(enc.input_ids) and not any(twin.content[:enc.prompt_length])
    # the format of each example is a function of the seed
    again = plain_twins(tiny_tokenizer, FORGET, items, seed=3)
    assert [t.encoded.input_ids for t in again] == [t.encoded.input_ids for t in twins]


def test_no_twins_without_a_chat_template(tiny_tokenizer):
    items = encode_items(tiny_tokenizer, FORGET, [1, 1])
    template = tiny_tokenizer.chat_template
    try:
        tiny_tokenizer.chat_template = None
        assert plain_twins(tiny_tokenizer, FORGET, items) == []
    finally:
        tiny_tokenizer.chat_template = template


def test_swap_keeps_the_plan_shape_and_replays():
    plan = [[0, 1, 5], [1, 0, 6], [0, 1, 7]] * 20
    twin = {0: 10, 1: 11}
    assert swap_in_twins(plan, twin, 0.0, seed=0) == plan
    assert swap_in_twins(plan, twin, 1.0, seed=0) == [[10, 11, s[2]] if s[0] == 0 else [11, 10, s[2]] for s in plan]
    half = swap_in_twins(plan, twin, 0.5, seed=0)
    assert half == swap_in_twins(plan, twin, 0.5, seed=0)                 # a resumed run replays it
    assert [len(s) for s in half] == [len(s) for s in plan] and [s[2] for s in half] == [s[2] for s in plan]
    swapped = sum(i >= 10 for s in half for i in s[:2])
    assert 0.3 < swapped / 120 < 0.7


def _trainer(tok, share):
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=4, phase2_min_steps=0, lr_phase2=1e-2,
                            stop_level_scale=-1.0, plain_prompt_share=share)
    return AlterTrainer(make_tiny_llama(len(tok)), tok, cfg, FORGET, RETAIN, progress=False)


def test_twins_train_but_leave_theta_and_router_as_they_were(tiny_tokenizer):
    without, with_twins = _trainer(tiny_tokenizer, 0.0), _trainer(tiny_tokenizer, 0.5)
    a, b = without.prepare(), with_twins.prepare()
    assert len(with_twins.items) == len(without.items) + len(FORGET)
    assert a.theta == b.theta
    assert without.router_calibration == with_twins.router_calibration
    for ra, rb in zip(a.question_router.banks, b.question_router.banks):
        assert torch.equal(ra, rb)
    twins = {i for i, it in enumerate(with_twins.items) if it.twin_of >= 0}
    rows = [i for s in with_twins._phase_plans()["phase2"] for i in s]
    assert twins & set(rows) and len(rows) == len([i for s in without._phase_plans()["phase2"] for i in s])
    assert all(with_twins.items[i].position_entropy is not None and with_twins.items[i].kl_targets is not None
               for i in twins)
    with_twins.train()
    assert with_twins.report.phases["phase2"]["steps"] == 4


def test_share_is_checked():
    with pytest.raises(ValueError, match="plain_prompt_share"):
        alter.AlterConfig(plain_prompt_share=1.5)
