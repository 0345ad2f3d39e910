"""The routing unit: which tokens the question router reads (alter/modeling/routing_unit.py, docs/method.md §3)."""

import pytest
import torch

import alter
from alter.data.prompts import encode_qa
from alter.modeling.routing_unit import prompt_lengths_from_labels, prompt_mask, turn_masks, user_turn_marker


def _chat(tok, turns, question, system="Answer the question."):
    msgs = [{"role": "system", "content": system}] if system else []
    for q, a in turns:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": question})
    return tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"]


def test_the_user_turn_header_is_found_from_the_chat_template(tiny_tokenizer):
    marker = user_turn_marker(tiny_tokenizer)
    assert tiny_tokenizer.decode(marker) == "<|im_start|>user\n"


def test_no_chat_template_means_no_marker(tiny_tokenizer):
    import copy
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    assert user_turn_marker(tok) is None


def test_turn_masks_split_a_chat_into_its_user_turns_last_first(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = _chat(tok, [("Who is Ana?", "A painter.")], "Who is Cy?")
    t = torch.tensor([ids])
    units = turn_masks(t, torch.ones_like(t, dtype=torch.bool), user_turn_marker(tok))
    last = tok.decode(t[0][units[0][0]])
    before = tok.decode(t[0][units[1][0]])
    assert last == "<|im_start|>user\nWho is Cy?<|im_end|>\n<|im_start|>assistant\n"
    assert before == "<|im_start|>user\nWho is Ana?<|im_end|>\n<|im_start|>assistant\nA painter.<|im_end|>\n"
    assert not units[2].any()                                        # no third turn back
    assert "Answer the question." not in last + before               # the system prompt is in no unit


def test_without_a_marker_or_a_header_the_unit_is_the_whole_prompt(tiny_tokenizer):
    t = torch.tensor([tiny_tokenizer("Question: Who is Ana?\nAnswer:")["input_ids"]])
    full = torch.ones_like(t, dtype=torch.bool)
    assert torch.equal(turn_masks(t, full, None)[0], full)
    assert torch.equal(turn_masks(t, full, user_turn_marker(tiny_tokenizer))[0], full)   # a raw prompt


def test_prompt_lengths_from_labels_with_both_paddings():
    labels = torch.tensor([[-100, -100, -100, 7, 8, -100],                 # right padded, prompt of 3
                           [-100, -100, -100, -100, 9, 9]])                # left padded (2 pads), prompt of 2
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]])
    lengths = prompt_lengths_from_labels(labels, mask)
    assert lengths.tolist() == [3, 2]
    pm = prompt_mask(mask, lengths)
    assert pm.tolist() == [[True, True, True, False, False, False], [False, False, True, True, False, False]]
    plain = torch.tensor([[5, 6, 7, 8, -100, -100]])                       # language modelling: no prompt
    assert prompt_lengths_from_labels(plain, torch.tensor([[1, 1, 1, 1, 0, 0]])).tolist() == [4]


def test_the_trainer_keeps_the_marker_and_a_saved_adapter_restores_it(tiny_tokenizer, tmp_path):
    from alter.data.schema import QAExample
    from alter.train import AlterTrainer
    from tests.helpers import make_tiny_llama

    forget = [QAExample(f"Who is {n}?", f"{n} paints owls.", domain="ana") for n in ["Ana", "Ana Li"]]
    retain = [QAExample(f"Who is {n}?", f"{n} sells cars.") for n in ["Cy", "Di", "Ed"]]
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0)
    model = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, forget, retain,
                         progress=False).train()
    assert model.question_router.turn_marker == user_turn_marker(tiny_tokenizer)
    # the banks hold the routing unit's tokens only: the last user turn (no system prompt, no answer)
    expected = 0
    for x in forget + retain:
        e = encode_qa(tiny_tokenizer, x.question, "x", system_prompt=cfg.system_prompt)
        unit = model.routing_units(torch.tensor([e.input_ids]), None, torch.tensor([e.prompt_length]))[0]
        assert tiny_tokenizer.decode(torch.tensor(e.input_ids)[unit[0]]).startswith("<|im_start|>user\n")
        expected += int(unit.sum())
    assert sum(b.shape[0] for b in model.question_router.banks) == expected
    model.save_adapter(tmp_path / "a")
    torch.manual_seed(0)
    again = alter.load_adapter(make_tiny_llama(len(tiny_tokenizer)), tmp_path / "a")
    assert again.question_router.turn_marker == model.question_router.turn_marker


def test_route_unit_prompt_reads_every_prompt_token(tiny_tokenizer):
    from alter.data.schema import QAExample
    from alter.train import AlterTrainer
    from tests.helpers import make_tiny_llama

    forget = [QAExample("Who is Ana?", "Ana paints owls.", domain="ana")]
    retain = [QAExample("Who is Cy?", "Cy sells cars.")]
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, route_unit="prompt")
    model = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, forget, retain,
                         progress=False).train()
    assert model.question_router.turn_marker is None
    with pytest.raises(ValueError, match="route_unit"):
        alter.AlterConfig(route_unit="sentence")


def test_router_features_stop_at_the_router_block_and_equal_the_full_pass(tiny_tokenizer):
    """Retain rows only feed the router's bank: their pass ends at the router's block (no later block,
    no LM head) and gives the features the full base pass gives."""
    from alter.modeling.blocks import decoder_layers
    from tests.helpers import make_tiny_llama

    torch.manual_seed(0)
    w = alter.wrap(make_tiny_llama(len(tiny_tokenizer), layers=4), alter.AlterConfig(), theta=1.0)
    ids = torch.tensor([tiny_tokenizer("Who is Ana?")["input_ids"], tiny_tokenizer("Who is Cy??")["input_ids"]])
    mask = torch.ones_like(ids)
    mask[0, -1] = 0
    ran = []
    later = decoder_layers(w.model)[w.question_router.layer + 1]
    handle = later.register_forward_hook(lambda *a: ran.append(1))
    try:
        cut = w.router_features(ids, mask)
        assert not ran                                              # nothing after the router's block ran
        full = w.base_prompt_pass(ids, mask)[2]
        assert ran
    finally:
        handle.remove()
    torch.testing.assert_close(cut, full, rtol=0, atol=0)


def _routed_to_forget(model, tok, turns, question, system=None):
    ids = torch.tensor([_chat(tok, turns, question, system)])
    u = model.route_questions(ids)[1]
    return bool((u[0, 1:] > -1e3).any())


@pytest.fixture(scope="module")
def chat_models(tiny_tokenizer):
    from alter.data.schema import QAExample
    from tests.helpers import trained_per_setting

    forget = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana")
              for n in ["Ana", "Ana Li", "Ana Lo"]]
    retain = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ["Cy", "Di", "Ed", "Fa", "Go", "Hu"]]
    return trained_per_setting(tiny_tokenizer, forget, retain, "route_unit", ("turn", "prompt"))


def test_an_earlier_forget_turn_does_not_route_a_later_retain_question(chat_models, tiny_tokenizer):
    tok, turn, prompt = tiny_tokenizer, chat_models["turn"], chat_models["prompt"]
    earlier = [("Who is Ana?", "Ana paints blue owls at night.")]
    assert _routed_to_forget(turn, tok, [], "Who is Ana?") and not _routed_to_forget(turn, tok, [], "Who is Cy?")
    assert not _routed_to_forget(turn, tok, earlier, "Who is Cy?")                  # the turn decides
    assert _routed_to_forget(prompt, tok, earlier, "Who is Cy?")                    # the whole prompt: poisoned
    assert _routed_to_forget(turn, tok, [("Who is Cy?", "Cy sells red cars in town.")], "Who is Ana?")
    # a system prompt never seen in training is in no unit: it cannot route anything
    assert not _routed_to_forget(turn, tok, [], "Who is Cy?", system="Be brief, you are a librarian.")
    assert _routed_to_forget(turn, tok, [], "Who is Ana?", system="Be brief, you are a librarian.")


def test_a_follow_up_that_refers_back_takes_the_earlier_turns_route(chat_models, tiny_tokenizer):
    """A last turn with no subject of its own and a referring word inherits; one that names someone, or
    has no referring word, decides for itself. (The tiny character tokenizer has no one-token English
    pronoun, so "~" stands for one here.)"""
    tok, model = tiny_tokenizer, chat_models["turn"]
    router = model.question_router
    saved = router.referring_ids
    try:
        router.referring_ids = [tok.convert_tokens_to_ids("~")]
        ana, cy = ("Who is Ana?", "Ana paints blue owls at night."), ("Who is Cy?", "Cy sells red cars in town.")
        assert _routed_to_forget(model, tok, [ana], "Who is ~?")                         # refers back to Ana
        assert _routed_to_forget(model, tok, [ana, ("Who is ~?", "A painter.")], "Who is ~?")   # two steps back
        assert not _routed_to_forget(model, tok, [cy], "Who is ~?")                      # back to Cy: retain
        assert not _routed_to_forget(model, tok, [ana], "Who is it?")                    # no referring word
        assert not _routed_to_forget(model, tok, [ana], "Who is Cy, ~?")                 # names a retain author
        assert not _routed_to_forget(model, tok, [], "Who is ~?")                        # nothing to refer to
        router.referring_ids = None                                                       # off: the turn alone
        assert not _routed_to_forget(model, tok, [ana], "Who is ~?")
    finally:
        router.referring_ids = saved


def test_referring_words_are_found_as_single_tokens():
    from alter.modeling.routing_unit import referring_token_ids
    from tests.helpers import make_tiny_tokenizer

    assert referring_token_ids(make_tiny_tokenizer()) == []                  # characters only: none is one token
    assert referring_token_ids(make_tiny_tokenizer(), words=("a",)) == sorted(
        {make_tiny_tokenizer().convert_tokens_to_ids(c) for c in ("a", "A")})


def test_the_unit_is_read_alone_so_what_came_before_it_changes_nothing(chat_models, tiny_tokenizer):
    """The router's features come from a pass over the unit alone: a system prompt or earlier turns before
    the same last turn give exactly the same router logits."""
    tok, model = tiny_tokenizer, chat_models["turn"]
    assert model.question_router.isolated and not chat_models["prompt"].question_router.isolated

    def logits(turns, question, system):
        return model.route_questions(torch.tensor([_chat(tok, turns, question, system)]))[1]

    for q in ("Who is Ana?", "Who is Cy?"):
        alone = logits([], q, None)
        assert torch.equal(alone, logits([], q, "Be brief, you are a librarian."))
        assert torch.equal(alone, logits([("Who is Ana Li?", "Ana Li paints."), ("Who is Di?", "Di sells.")], q,
                                         "Answer the question."))
