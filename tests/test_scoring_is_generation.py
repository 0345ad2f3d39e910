"""Likelihood = generation: a teacher-forced score routes exactly as ``generate`` did (docs/method.md §3).

The router reads the prompt only (never the answer), and the answer tokens are routed by the entropy
generation gives them (the adapted model's own previous logits), found by a fixed-point iteration in
``AlterModel.forward``. So the teacher-forced log-probability of a greedy generation is the sum of the
log-probabilities of its generation steps."""

import pytest
import torch

from alter.data.prompts import IGNORE_INDEX, EncodedExample, encode_qa, prompt_ids
from alter.data.schema import QAExample
from alter.eval import score_encoded
from alter.modeling.question_router import EXCLUDED
from tests.helpers import trained_tiny_alter

FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana") for n in ["Ana", "Ana Li"]]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ["Cy", "Di", "Ed", "Fa"]]
NEW = 8


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return trained_tiny_alter(tiny_tokenizer, FORGET, RETAIN, expert_scale=0.3)


def _greedy(model, tok, question):
    ids = torch.tensor([prompt_ids(tok, question)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, min_new_tokens=NEW,
                         do_sample=False, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    new = out.sequences[0, ids.shape[1]:]
    steps = torch.stack([torch.log_softmax(l[0].float(), -1)[t] for l, t in zip(out.logits, new)])
    return ids[0], new, steps


def _set_theta_between_answer_entropies(model, tok, question):
    """theta at the median of the generated tokens' entropies: some answer tokens on each side, so the
    answer's routing depends on which entropies a score uses."""
    ids, new, _ = _greedy(model, tok, question)
    full = torch.cat([ids, new])[None]
    with torch.no_grad(), model.state.scope(theta=float("inf")):
        logits = model(full, prompt_lengths=torch.tensor([len(ids)])).logits
    from alter_kernels import tsallis_entropy
    ent = tsallis_entropy(logits[0, len(ids) - 1:-1].float(), model.alter_config.q)
    model.set_theta(float(ent.median()))


@pytest.mark.parametrize("question", ["Who is Ana?", "Who is Cy?"])
def test_teacher_forced_log_probability_of_a_greedy_generation_is_the_sum_of_its_steps(model, tiny_tokenizer,
                                                                                      question):
    saved = model.theta
    try:
        _set_theta_between_answer_entropies(model, tiny_tokenizer, question)
        ids, new, steps = _greedy(model, tiny_tokenizer, question)
        full = torch.cat([ids, new])[None]
        P = len(ids)
        with torch.no_grad():
            by_length = model(full, prompt_lengths=torch.tensor([P])).logits[0, P - 1:-1]
            labels = torch.cat([torch.full((P,), IGNORE_INDEX), new])[None]
            by_labels = model(full, labels=labels).logits[0, P - 1:-1]
        for logits in (by_length, by_labels):
            forced = torch.log_softmax(logits.float(), -1).gather(1, new[:, None]).squeeze(1)
            torch.testing.assert_close(forced, steps, rtol=0, atol=1e-4)
            torch.testing.assert_close(forced.sum(), steps.sum(), rtol=0, atol=1e-4)
        # the evaluators' scoring path gives the same sum
        enc = EncodedExample(full[0].tolist(), labels[0].tolist(), P)
        scored = score_encoded(model, [enc], pad_token_id=0, progress=False)
        assert abs(-scored["sum_nll"][0] - float(steps.sum())) < 1e-3
    finally:
        model.set_theta(saved)


def test_the_answer_never_decides_the_route(model, tiny_tokenizer):
    """A retain question scored with a forget-looking answer keeps the retain route (and the reverse)."""
    retain_q, forget_a = "Who is Cy?", "Ana paints blue owls at night. Ana Li, Ana."
    e = encode_qa(tiny_tokenizer, retain_q, forget_a)
    ids = torch.tensor([e.input_ids])
    with torch.no_grad():
        feats = model.routing_inputs(ids)[1]
        whole = model.question_router_logits(feats, ids)
        prompt_only = model.question_router_logits(feats, ids, None, torch.tensor([e.prompt_length]))
        alone = model.route_questions(torch.tensor([prompt_ids(tiny_tokenizer, retain_q)]))[1]
    assert (prompt_only[:, 1:] == EXCLUDED).all() and torch.equal(prompt_only, alone)
    assert not torch.equal(whole, prompt_only)          # reading the answer would have changed the route


def test_raw_text_without_a_prompt_is_one_prompt(model, tiny_tokenizer):
    """A row with no prompt (every token labelled) routes on all its tokens: the same as no labels."""
    ids = torch.tensor([tiny_tokenizer("Ana paints blue owls.")["input_ids"]])
    with torch.no_grad():
        a = model(ids, labels=ids.clone()).logits
        b = model(ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_prompt_lengths_are_named(model):
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="prompt_lengths has 1 entries"):
        model(ids, prompt_lengths=torch.tensor([3]))
    with pytest.raises(ValueError, match="prompt_lengths must be in"):
        model(ids, prompt_lengths=torch.tensor([3, 6]))
