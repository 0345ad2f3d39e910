"""The answer tokens' fixed point resumes each pass from the first token that changed side of theta
(alter/modeling/fixed_point.py): same entropies and logits as whole passes, fewer tokens run."""

import contextlib

import pytest
import torch

from alter.data.prompts import collate, encode_qa
from alter.modeling.fixed_point import answer_fixed_point
from alter.modeling.routing_unit import prompt_mask
from alter_kernels import tsallis_entropy
from tests.helpers import trained_tiny_alter
from tests.test_scoring_is_generation import FORGET, RETAIN

ROWS = [("Who is Ana?", "Ana paints blue owls at night, every night of the year."),
        ("Who is Cy?", "Cy sells cars."),
        ("Who is Ana Li?", "She paints owls and sells red cars in a small town."),
        ("Tell me about Di.", "Di sells red cars in town and paints at night.")]


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return trained_tiny_alter(tiny_tokenizer, FORGET, RETAIN, expert_scale=0.5)


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    enc = [encode_qa(tiny_tokenizer, q, a) for q, a in ROWS]
    padded = collate(enc, 0)
    return padded["input_ids"], padded["attention_mask"], torch.tensor([e.prompt_length for e in enc])


@contextlib.contextmanager
def theta_between_answer_entropies(model, ids, mask, lengths):
    """theta at the median of the answer tokens' adapted entropies (tokens on both sides: several passes),
    while the block runs."""
    saved = model.theta
    with torch.no_grad(), model.state.scope(theta=float("inf")):
        base, router = model.route_questions(ids, mask, lengths)
        logits = model._routed_forward(ids, mask, None, torch.zeros_like(base), None, router).logits
    ent = tsallis_entropy(logits[:, :-1].float(), model.alter_config.q)
    answer = (mask.bool() & ~prompt_mask(mask, lengths))[:, 1:]
    model.set_theta(float(ent[answer].median()))
    try:
        yield
    finally:
        model.set_theta(saved)


@contextlib.contextmanager
def columns_fed(model):
    """The list of each adapted pass's column count while the block runs."""
    fed = []
    inner = model._routed_forward

    def counting(input_ids, *args, **kwargs):
        fed.append(input_ids.shape[1])
        return inner(input_ids, *args, **kwargs)

    model._routed_forward = counting
    try:
        yield fed
    finally:
        del model._routed_forward


def _fixed_point(model, ids, mask, lengths, **kwargs):
    with torch.no_grad():
        base, router = model.route_questions(ids, mask, lengths)
        return answer_fixed_point(model, ids, mask, lengths, base, router, need_output=True, **kwargs)


def test_resumed_passes_give_the_whole_passes_fixed_point_and_logits(model, batch):
    ids, mask, lengths = batch
    with theta_between_answer_entropies(model, ids, mask, lengths):
        with columns_fed(model) as fed_whole:
            ent_whole, out_whole = _fixed_point(model, ids, mask, lengths, resume=False)
        with columns_fed(model) as fed_resumed:
            ent_resumed, out_resumed = _fixed_point(model, ids, mask, lengths)
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


def test_scoring_forward_uses_the_resumed_fixed_point(model, batch):
    """model(..., prompt_lengths=...) gives the whole-pass logits (the path every evaluator uses)."""
    ids, mask, lengths = batch
    with theta_between_answer_entropies(model, ids, mask, lengths):
        _, out_whole = _fixed_point(model, ids, mask, lengths, resume=False)
        with torch.no_grad():
            scored = model(ids, attention_mask=mask, prompt_lengths=lengths).logits
    real = mask.bool()
    torch.testing.assert_close(scored[real], out_whole.logits[real], rtol=0, atol=1e-5)


def test_calls_with_other_forward_keywords_run_whole_passes(model, batch):
    ids, mask, lengths = batch
    with theta_between_answer_entropies(model, ids, mask, lengths), columns_fed(model) as fed:
        _, out = _fixed_point(model, ids, mask, lengths, output_hidden_states=True)
    assert len(fed) >= 2 and fed == [ids.shape[1]] * len(fed)
    assert out.hidden_states is not None
