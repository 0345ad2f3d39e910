"""Generation on questions the adapter cannot change: it continues from the base pass's KV cache.

With phase I off, ``B_R`` stays exactly zero, so a question the question router keeps on the retain
expert is answered by the base model. Generation then reuses the prompt's base pass (which it needs
anyway for the router) instead of running the prompt a second time (alter/modeling/routed_generation.py)."""

import pytest
import torch

import alter
import alter.modeling.routed_generation as rg
from alter.data.schema import QAExample
from alter.modeling.question_router import EXCLUDED
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama

FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana") for n in ["Ana", "Ana Li"]]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ["Cy", "Di", "Ed", "Fa"]]
KW = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)


def _trained(tok, **kw):
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase1_epochs=0, phase2_epochs=2, lr_phase2=1e-2, phase2_min_steps=0, **kw)
    model = AlterTrainer(make_tiny_llama(len(tok)), tok, cfg, FORGET, RETAIN, progress=False).train()
    model.eval()
    return model


def _first_call_widths(model, fn):
    """Run fn() and return the input widths of the wrapped causal LM's forwards (generate's steps)."""
    widths = []
    handle = model.model.register_forward_pre_hook(
        lambda m, a, k: widths.append(k.get("input_ids", a[0] if a else None).shape[1]), with_kwargs=True)
    try:
        out = fn()
    finally:
        handle.remove()
    return out, widths


def _slow(model, monkeypatch, fn):
    with monkeypatch.context() as m:
        m.setattr(rg, "is_inert", lambda wrapper, router_logits: False)
        return fn()


@pytest.fixture(scope="module")
def alter_model(tiny_tokenizer):
    return _trained(tiny_tokenizer)


def test_retain_questions_skip_the_second_prompt_pass_and_give_the_same_tokens(alter_model, tiny_tokenizer,
                                                                            monkeypatch):
    tiny_tokenizer.padding_side = "left"
    enc = tiny_tokenizer(["Who is Cy?", "Who is Fa, who sells cars?"], return_tensors="pt", padding=True)
    _, router_logits = alter_model.route_questions(enc.input_ids, enc.attention_mask)
    assert (router_logits[:, 1:] == EXCLUDED).all()                  # both kept on the retain expert
    assert rg.is_inert(alter_model, router_logits)
    gen = lambda: alter_model.generate(enc.input_ids, attention_mask=enc.attention_mask, output_scores=True,
                                       return_dict_in_generate=True, **KW)
    fast, widths = _first_call_widths(alter_model, gen)
    assert widths[0] == 1                     # the prompt came from the base pass's cache; only its last token ran
    slow, slow_widths = _first_call_widths(alter_model, lambda: _slow(alter_model, monkeypatch, gen))
    assert slow_widths[0] == enc.input_ids.shape[1]
    assert torch.equal(fast.sequences, slow.sequences)
    for a, b in zip(fast.scores, slow.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with alter_model.disable_adapters():
        plain = alter_model.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **KW)
    assert torch.equal(fast.sequences, plain)


def test_a_question_an_expert_can_change_runs_the_full_path(alter_model, tiny_tokenizer):
    enc = tiny_tokenizer(["Who is Ana?"], return_tensors="pt")
    _, router_logits = alter_model.route_questions(enc.input_ids, enc.attention_mask)
    assert router_logits[0, 1] > EXCLUDED                             # routed to the forget expert
    assert not rg.is_inert(alter_model, router_logits)
    _, widths = _first_call_widths(alter_model, lambda: alter_model.generate(enc.input_ids, **KW))
    assert widths[0] == enc.input_ids.shape[1]


def test_a_trained_retain_expert_makes_retain_questions_take_the_full_path(tiny_tokenizer):
    torch.manual_seed(0)
    model = _trained(tiny_tokenizer)
    enc = tiny_tokenizer(["Who is Cy?"], return_tensors="pt")
    _, router_logits = model.route_questions(enc.input_ids, enc.attention_mask)
    assert rg.is_inert(model, router_logits)
    layer = next(iter(model.adapter_layers().values()))
    with torch.no_grad():
        layer.lora_B[0].add_(0.01)                                   # B_R of one layer is no longer zero
    assert not rg.is_inert(model, router_logits)
    _, widths = _first_call_widths(model, lambda: model.generate(enc.input_ids, **KW))
    assert widths[0] == enc.input_ids.shape[1]


@pytest.mark.parametrize("extra", [dict(use_cache=False), dict(num_return_sequences=2, do_sample=True, top_k=1)])
def test_calls_that_cannot_reuse_the_cache_still_answer(alter_model, tiny_tokenizer, extra):
    enc = tiny_tokenizer(["Who is Cy?"], return_tensors="pt")
    kw = {**KW, **extra}
    out, widths = _first_call_widths(alter_model, lambda: alter_model.generate(enc.input_ids, **kw))
    assert widths[0] == enc.input_ids.shape[1]
    with alter_model.disable_adapters():
        plain = alter_model.model.generate(input_ids=enc.input_ids, **kw)
    assert torch.equal(out, plain)


def test_the_asymlora_ablation_reuses_the_cache_too(tiny_tokenizer, monkeypatch):
    model = _trained(tiny_tokenizer, token_entropy=False)
    enc = tiny_tokenizer(["Who is Cy?"], return_tensors="pt")
    fast, widths = _first_call_widths(model, lambda: model.generate(enc.input_ids, **KW))
    assert widths[0] == 1
    assert torch.equal(fast, _slow(model, monkeypatch, lambda: model.generate(enc.input_ids, **KW)))
