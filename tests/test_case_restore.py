"""A question typed in lower case is routed as the training prompts wrote it (alter/modeling/case_restore.py,
docs/method.md §3 "Lower case")."""

import pytest
import torch

import alter
from alter.modeling.case_restore import CaseRestorer, build_case_map
from tests.helpers import make_tiny_llama, make_tiny_word_tokenizer, trained_per_setting

WORDS = ["User", "Assistant", "Who", "who", "is", "Ana", "ana", "Li", "li", "Cy", "cy", "Di", "di", "Ed", "ed", "paints", "owls",
         "sells", "cars", "What", "what", "does", "do", "Bo", "bo", "Apple", "apple", "an", "eats"]


@pytest.fixture(scope="module")
def word_tok():
    return make_tiny_word_tokenizer(WORDS)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_the_map_holds_words_the_training_prompts_only_write_cased(word_tok):
    r = build_case_map(word_tok, ["Who is Ana Li?", "What does Cy do?", "Cy eats an apple. Who is Di?"])
    pairs = {word_tok.decode(list(lo)): word_tok.decode(list(up)) for lo, up in r.pairs}
    # "apple" occurs in lower case in a training prompt: never cased; "Bo" never occurs at all
    assert pairs == {"who": "Who", "ana": "Ana", "li": "Li", "what": "What", "cy": "Cy", "di": "Di"}
    cased = {word_tok.convert_ids_to_tokens(i) for i in r.cased_ids.tolist()}
    assert {"Who", "Ana", "Apple", "Bo"} <= cased and not cased & {"who", "ana", "apple", "is", "<|im_start|>"}


def test_a_unit_with_a_capital_is_read_as_typed_a_lower_case_one_is_restored(word_tok):
    r = build_case_map(word_tok, ["Who is Ana Li?", "What does Cy do?"])
    assert r.restore(_ids(word_tok, "who is ana li ?")) == _ids(word_tok, "Who is Ana Li ?")
    assert r.restore(_ids(word_tok, "Who is ana li ?")) is None          # one capital: as typed
    assert r.restore(_ids(word_tok, "is apple ?")) is None                # nothing of the map: as typed
    assert r.restore([]) is None


def test_the_longest_word_wins_at_each_position():
    r = CaseRestorer([([1], [11]), ([1, 2], [21, 22]), ([3], [33])], cased_ids=[11, 21, 22, 33])
    assert r.restore([1, 2, 3, 1, 4]) == [21, 22, 33, 11, 4]
    assert r.restore([5, 1, 2]) == [5, 21, 22]
    assert r.restore([4, 5]) is None and r.restore([11, 1]) is None
    with pytest.raises(ValueError, match="both sides"):
        CaseRestorer([([], [1])], cased_ids=[1])


def _chat(tok, question, turns=()):
    msgs = []
    for q, a in turns:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": question})
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return torch.tensor([_ids(tok, text)])


@pytest.fixture(scope="module")
def trained(word_tok):
    from alter.data.schema import QAExample

    forget = [QAExample(q, "Ana paints owls .", domain="ana") for q in ["Who is Ana ?", "Who is Ana Li ?"]]
    retain = [QAExample(f"Who is {n} ?", f"{n} sells cars .") for n in ["Cy", "Di", "Ed"]]
    return trained_per_setting(word_tok, forget, retain, "route_restore_case", (True, False))


def test_a_lower_case_question_routes_exactly_as_its_cased_wording(trained, word_tok):
    model = trained[True]
    assert model.question_router.case_restorer is not None and trained[False].question_router.case_restorer is None
    route = lambda m, q, turns=(): m.route_questions(_chat(word_tok, q, turns))[1]
    for cased, lower in (("Who is Ana Li ?", "who is ana li ?"), ("Who is Cy ?", "who is cy ?")):
        assert torch.equal(route(model, lower), route(model, cased))
        # the same in a chat: only the last turn is restored and read
        assert torch.equal(route(model, lower, [("Who is Di ?", "Di sells cars .")]), route(model, cased))
    assert bool((route(model, "who is ana ?")[0, 1:] > -1e3).any())
    # with restoration off the lower-case unit is read as typed: other tokens, other features
    plain = trained[False]
    assert torch.equal(route(plain, "Who is Ana Li ?"), route(model, "Who is Ana Li ?"))
    assert not torch.equal(route(plain, "who is ana li ?"), route(model, "who is ana li ?"))


def test_a_raw_prompt_in_lower_case_is_restored_too(trained, word_tok):
    """A prompt without the turn header is its own unit, read from the whole pass unless it is restored."""
    model = trained[True]
    raw = lambda q: torch.tensor([_ids(word_tok, q)])
    assert torch.equal(model.route_questions(raw("who is ana li ?"))[1], model.route_questions(raw("Who is Ana Li ?"))[1])


def test_the_saved_adapter_keeps_the_map(trained, word_tok, tmp_path):
    model = trained[True]
    model.save_adapter(tmp_path / "a")
    torch.manual_seed(0)
    again = alter.load_adapter(make_tiny_llama(len(word_tok)), tmp_path / "a")
    r, r2 = model.question_router.case_restorer, again.question_router.case_restorer
    assert r2 is not None and r2.pairs == r.pairs and torch.equal(r2.cased_ids, r.cased_ids)
    q = _chat(word_tok, "who is ana li ?")
    assert torch.equal(again.route_questions(q)[1], model.route_questions(q)[1])
    # an adapter saved before case restoration (no map in its metadata) reads every unit as typed
    meta = model.question_router.metadata()
    meta.pop("case_map")
    again.question_router.load_metadata(meta)
    again.question_router.load_state_tensors(model.question_router.state_tensors())
    assert again.question_router.case_restorer is None


def test_the_chat_templates_header_words_are_never_cased(word_tok):
    """A training prompt that writes "User" or "Assistant" must not make the restorer rewrite the unit's turn
    header (``<|im_start|>user``) or the assistant header at the prompt's end."""
    r = build_case_map(word_tok, ["Who is Ana ?", "User Assistant Ana"])
    pairs = {word_tok.decode(list(lo)) for lo, _ in r.pairs}
    assert "ana" in pairs and not pairs & {"user", "assistant"}
    unit = _chat(word_tok, "who is ana ?")[0].tolist()
    restored = r.restore(unit)
    assert restored is not None and len(restored) == len(unit)
    changed = [word_tok.convert_ids_to_tokens(a) for a, b in zip(unit, restored) if a != b]
    assert changed == ["who", "ana"]


def test_a_new_request_adds_its_casing_and_keeps_the_earlier_map(trained, word_tok):
    """``train_new_domain`` (a request added to an adapter): the new request's names join the map, every
    earlier entry keeps its casing, so a lower-cased question about the new request routes as its cased form."""
    import copy

    from alter.data.schema import QAExample
    from alter.train import AlterTrainer

    model = copy.deepcopy(trained[True])
    before = list(model.question_router.case_restorer.pairs)
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, stop_level_scale=-1.0)
    new = [QAExample(q, "Bo eats an apple .") for q in ["Who is Bo ?", "What does Bo do ?"]]
    retain = [QAExample(f"Who is {n} ?", f"{n} sells cars .") for n in ["Cy", "Di", "Ed"]]
    AlterTrainer(model, word_tok, cfg, new, retain, progress=False).train_new_domain("bo")
    r = model.question_router.case_restorer
    assert r.pairs[:len(before)] == before
    assert r.restore(_ids(word_tok, "who is bo ?")) == _ids(word_tok, "Who is Bo ?")
    route = lambda q: model.route_questions(_chat(word_tok, q))[1]
    assert torch.equal(route("what does bo do ?"), route("What does Bo do ?"))
    assert int(route("What does Bo do ?")[0].argmax()) == model.domain_index("bo")
    assert torch.equal(route("who is ana li ?"), route("Who is Ana Li ?"))
    assert r.owners[len(before):] and set(r.owners[len(before):]) == {model.domain_index("bo")}
    model.remove_forget_domain("bo")                    # the request's words go with it
    assert model.question_router.case_restorer.pairs == before
    a, b = CaseRestorer([([1], [11])], [11]), CaseRestorer([([1], [12]), ([2], [22])], [12, 22])
    m = a.merged(b, owner=2).merged(CaseRestorer([([3], [33])], [33]), owner=3)
    assert m.pairs == [((1,), (11,)), ((2,), (22,)), ((3,), (33,))] and m.owners == [None, 2, 3]
    assert a.merged(None, owner=2) is a
    assert m.without(2).pairs == [((1,), (11,)), ((3,), (33,))] and m.without(2).owners == [None, 2]
    again = CaseRestorer.from_saved(m.metadata(), m.cased_ids)
    assert again.pairs == m.pairs and again.owners == m.owners and m.metadata()[0] == [[1], [11]]
