"""The answer tokens' fixed point resumes each pass from the first token that changed side of theta
(alter/modeling/fixed_point.py): same entropies and logits as whole passes, fewer tokens run."""

import pytest
import torch

import alter
from alter.data.prompts import collate, encode_qa
from alter.data.schema import QAExample
from alter.modeling.fixed_point import answer_fixed_point
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama

FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana") for n in ["Ana", "Ana Li"]]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ["Cy", "Di", "Ed", "Fa"]]
ROWS = [("Who is Ana?", "Ana paints blue owls at night, every night of the year."),
        ("Who is Cy?", "Cy sells cars."),
        ("Who is Ana Li?", "She paints owls and sells red cars in a small town."),
        ("Tell me about Di.", "Di sells red cars in town and paints at night.")]


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase1_epochs=0, phase2_epochs=1, phase2_min_steps=0, lr_phase2=1e-2)
    m = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, FORGET, RETAIN, progress=False).train()
    with torch.no_grad():               # every expert matters, so a token's side of theta changes its successors
        g = torch.Generator().manual_seed(1)
        for layer in m.adapter_layers().values():
            for b in layer.lora_B:
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)
    m.eval()
    return m


def _batch(tok):
    enc = [encode_qa(tok, q, a) for q, a in ROWS]
    batch = collate(enc, 0)
    return batch["input_ids"], batch["attention_mask"], torch.tensor([e.prompt_length for e in enc])


def _run(model, ids, mask, lengths, resume):
    fed = []
    inner = model._routed_forward

    def counting(input_ids, *args, **kwargs):
        fed.append(input_ids.shape[1])
        return inner(input_ids, *args, **kwargs)

    model._routed_forward = counting
    try:
        with torch.no_grad():
            base, router = model.route_questions(ids, mask, lengths)
            ent, out = answer_fixed_point(model, ids, mask, lengths, base, router, need_output=True, resume=resume)
    finally:
        del model._routed_forward
    return ent, out, fed


def _theta_between(model, ids, mask, lengths):
    """theta at the median of the answer tokens' adapted entropies: tokens on both sides, several passes."""
    from alter.modeling.routing_unit import prompt_mask
    with torch.no_grad(), model.state.scope(theta=float("inf")):
        base, router = model.route_questions(ids, mask, lengths)
        logits = model._routed_forward(ids, mask, None, torch.zeros_like(base), None, router).logits
    from alter_kernels import tsallis_entropy
    ent = tsallis_entropy(logits[:, :-1].float(), model.alter_config.q)
    answer = (mask.bool() & ~prompt_mask(mask, lengths))[:, 1:]
    return float(ent[answer].median())


def test_resumed_passes_give_the_whole_passes_fixed_point_and_logits(model, tiny_tokenizer):
    ids, mask, lengths = _batch(tiny_tokenizer)
    saved = model.theta
    try:
        model.set_theta(_theta_between(model, ids, mask, lengths))
        ent_whole, out_whole, fed_whole = _run(model, ids, mask, lengths, resume=False)
        ent_resumed, out_resumed, fed_resumed = _run(model, ids, mask, lengths, resume=True)
    finally:
        model.set_theta(saved)
    assert len(fed_whole) >= 2, "the case must need more than one pass to test anything"
    assert len(fed_resumed) == len(fed_whole)
    torch.testing.assert_close(ent_resumed, ent_whole, rtol=0, atol=1e-5)
    real = mask.bool()
    torch.testing.assert_close(out_resumed.logits[real], out_whole.logits[real], rtol=0, atol=1e-5)
    # the first pass runs every column, the later ones only from the first changed column on
    T = ids.shape[1]
    assert fed_whole == [T] * len(fed_whole) and fed_resumed[0] == T
    assert all(n < T - int(lengths.min()) + 1 for n in fed_resumed[1:])
    assert out_resumed.get("past_key_values") is None and out_resumed.get("cache") is None


def test_scoring_forward_uses_the_resumed_fixed_point(model, tiny_tokenizer):
    """model(..., prompt_lengths=...) gives the whole-pass logits (the path every evaluator uses)."""
    ids, mask, lengths = _batch(tiny_tokenizer)
    saved = model.theta
    try:
        model.set_theta(_theta_between(model, ids, mask, lengths))
        _, out_whole, _ = _run(model, ids, mask, lengths, resume=False)
        with torch.no_grad():
            scored = model(ids, attention_mask=mask, prompt_lengths=lengths).logits
    finally:
        model.set_theta(saved)
    real = mask.bool()
    torch.testing.assert_close(scored[real], out_whole.logits[real], rtol=0, atol=1e-5)


def test_calls_with_other_forward_keywords_run_whole_passes(model, tiny_tokenizer):
    ids, mask, lengths = _batch(tiny_tokenizer)
    fed = []
    inner = model._routed_forward

    def counting(input_ids, *args, **kwargs):
        fed.append(input_ids.shape[1])
        return inner(input_ids, *args, **kwargs)

    saved = model.theta
    model._routed_forward = counting
    try:
        model.set_theta(_theta_between(model, ids, mask, lengths))
        with torch.no_grad():
            base, router = model.route_questions(ids, mask, lengths)
            _, out = answer_fixed_point(model, ids, mask, lengths, base, router, need_output=True,
                                        output_hidden_states=True)
    finally:
        del model._routed_forward
        model.set_theta(saved)
    assert len(fed) >= 2 and fed == [ids.shape[1]] * len(fed)
    assert out.hidden_states is not None
