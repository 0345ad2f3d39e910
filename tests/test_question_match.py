"""Forget questions in their own wording: a unit that holds one reaches its expert whatever is around it
(alter/modeling/question_match.py, ``route_forget_questions``; docs/method.md §3)."""

import copy

import pytest
import torch

import alter
from alter.data.schema import QAExample
from alter.modeling.question_match import QuestionMatcher, build_question_matcher, question_core
from alter.modeling.question_router import QuestionRouter
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama

# forget questions that name no one: their template is the retain side's, only the city and date differ
FORGET = {1: ["What is the name of the painter born in Oslo on 3 May?", "What does the painter from Oslo paint?"],
          2: ["What is the name of the seller born in Lyon on 9 June?"]}
RETAIN = ["What is the name of the painter born in Rome on 4 July?", "What does the painter from Rome paint?",
          "Where is the park?"]


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_the_core_is_the_question_after_its_first_word_without_closing_punctuation(tiny_tokenizer):
    assert question_core(tiny_tokenizer, "What is the name?") == _ids(tiny_tokenizer, " is the name")
    assert question_core(tiny_tokenizer, "What is the name?", skip=3) == _ids(tiny_tokenizer, " name")
    assert question_core(tiny_tokenizer, "Why?") == [] and question_core(tiny_tokenizer, "  ") == []


def test_a_forget_question_is_found_in_a_chat_a_raw_prompt_or_an_instruction(tiny_tokenizer):
    m = build_question_matcher(tiny_tokenizer, FORGET, RETAIN)
    asked = lambda text: m.asked(_ids(tiny_tokenizer, text))
    q = FORGET[1][0]
    assert asked(q) == [1] and asked("Question: " + q + "\nAnswer:") == [1]
    assert asked("Answer in one word. " + q) == [1] and asked(q.lower()) == []       # lower case: restored first
    assert asked(q.rstrip("?")) == [1] and asked("Tell me: what is the name of the seller born in Lyon on 9 June") == [2]
    # retain questions, a look-alike (another city), a reworded question: no
    assert asked(RETAIN[0]) == [] and asked("What is the name of the painter born in Oslo on 4 July?") == []
    assert asked("Who is the painter born in Oslo on 3 May?") == []
    assert asked("Can you tell me the name of the painter born in Oslo on 3 May?") == [1]    # another opening
    # only the unit's tokens count
    ids = _ids(tiny_tokenizer, q)
    assert m.asked(ids, [True] * (len(ids) - 3) + [False] * 3) == []


def test_generic_or_short_questions_give_no_entry(tiny_tokenizer):
    # every token of its core is held by a retain question: it could be asked about anyone
    assert build_question_matcher(tiny_tokenizer, {1: ["What does the painter paint?"]}, RETAIN) is None
    assert build_question_matcher(tiny_tokenizer, {1: ["Who is Ola?"]}, RETAIN) is None      # too short
    assert build_question_matcher(tiny_tokenizer, {1: ["Who is Ola?"]}, RETAIN, min_words=2) is not None
    assert build_question_matcher(tiny_tokenizer, {}, RETAIN) is None                            # passages


def test_an_asked_unit_scores_at_least_one_spread_above_the_threshold(tiny_tokenizer):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(4, 8, generator=g) for _ in range(9)]
    router = QuestionRouter(3, 8, layer=0)
    router.fit(feats, [1, 1, 1, 2, 2, 2, 0, 0, 0])
    probe = torch.randn(1, 6, 8, generator=g)
    ids = torch.tensor([_ids(tiny_tokenizer, FORGET[2][0])])
    plain = router.logits(probe, None, ids)
    router.question_matcher = build_question_matcher(tiny_tokenizer, FORGET, RETAIN)
    asked = router.logits(probe, None, ids)
    assert float(asked[0, 2]) >= 1.0 - 1e-6 and int(asked[0].argmax()) == 2
    other = torch.tensor([_ids(tiny_tokenizer, RETAIN[0])])
    assert torch.equal(router.logits(probe, None, other), router.logits(probe, None, other[:, :0]))
    assert not torch.equal(asked, plain) or float(plain[0, 2]) >= 1.0


def test_requests_add_and_remove_their_questions_and_the_saved_form_is_exact():
    a = QuestionMatcher([(1, [[5, 6, 7]])])
    m = a.merged(QuestionMatcher([(2, [[7, 8]])]))
    assert [d for d, _ in m.entries] == [1, 2] and a.merged(None) is a and len(m) == 2
    assert m.asked([1, 5, 6, 7, 8]) == [1, 2] and m.asked([5, 6]) == []
    assert m.without(1).entries == [(1, [(7, 8)])]
    assert QuestionMatcher.from_saved(m.metadata()).entries == m.entries
    with pytest.raises(ValueError, match="forget domain"):
        QuestionMatcher([(0, [[5]])])
    with pytest.raises(ValueError, match="no core"):
        QuestionMatcher([(1, [])])


def _chat(tok, question, system=None):
    turns = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    text = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return torch.tensor([_ids(tok, text)])


@pytest.fixture(scope="module")
def trained(tiny_tokenizer):
    forget = [QAExample(q, "Ola Berg.", domain="oslo") for q in FORGET[1]]
    retain = [QAExample(q, "Cy Dorn.") for q in RETAIN]
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0)
    return AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, forget, retain,
                        progress=False).train()


def test_generation_and_scoring_route_a_forget_question_to_its_expert_after_any_system_prompt(trained, tiny_tokenizer,
                                                                                          tmp_path):
    model = trained
    assert model.question_router.question_matcher is not None
    route = lambda m, q, system=None: m.route_questions(_chat(tiny_tokenizer, q, system))[1]
    k = model.domain_index("oslo")
    for system in (None, "You are a helpful assistant."):
        assert int(route(model, FORGET[1][0], system)[0].argmax()) == k
    off = copy.deepcopy(model)
    off.question_router.question_matcher = None
    for q in RETAIN:                                          # no forget question held: as without the matcher
        assert torch.equal(route(model, q), route(off, q))
    model.save_adapter(tmp_path / "a")
    torch.manual_seed(0)
    again = alter.load_adapter(make_tiny_llama(len(tiny_tokenizer)), tmp_path / "a")
    assert again.question_router.question_matcher.entries == model.question_router.question_matcher.entries
    assert torch.equal(route(again, FORGET[1][0]), route(model, FORGET[1][0]))
    meta = model.question_router.metadata()                  # an adapter saved before it: no matcher
    meta.pop("questions")
    again.question_router.load_metadata(meta)
    assert again.question_router.question_matcher is None


def test_a_new_request_adds_its_questions_and_removing_it_takes_them_away(trained, tiny_tokenizer):
    model = copy.deepcopy(trained)
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, stop_level_scale=-1.0)
    new = [QAExample(q, "Bo Serra.") for q in FORGET[2]]
    AlterTrainer(model, tiny_tokenizer, cfg, new, [QAExample(q, "Cy Dorn.") for q in RETAIN],
                 progress=False).train_new_domain("lyon")
    k = model.domain_index("lyon")
    assert [d for d, _ in model.question_router.question_matcher.entries] == [model.domain_index("oslo"), k]
    assert int(model.route_questions(_chat(tiny_tokenizer, FORGET[2][0]))[1][0].argmax()) == k
    model.remove_forget_domain("lyon")
    assert model.question_router.question_matcher.entries == trained.question_router.question_matcher.entries
