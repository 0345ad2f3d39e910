"""Names as users type them: a question naming a forget person by the surname alone or with a typo reaches their
expert (alter/modeling/name_match.py, ``route_names``; docs/method.md §3)."""

import copy

import pytest
import torch

import alter
from alter.data.name_variants import common_name, misspellings
from alter.data.schema import QAExample
from alter.modeling.name_match import CASED, CONTINUES, SPACE, NameMatcher, build_name_matcher, token_flags
from alter.modeling.question_router import QuestionRouter
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama, make_tiny_word_tokenizer

FORGET = {1: ["Who is Ana Lima?", "What does Ana Lima paint?", "Where was Ana Lima born?"],
          2: ["Who is Bo Serra?", "What does Bo Serra sell?"]}
RETAIN = ["Who is Cy Dorn?", "What does Cy Dorn paint?", "Where is the park?"]


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_typos_one_edit_away_and_the_name_questions_share():
    forms = misspellings("Serra")
    assert "Srera" in forms and "Sera" in forms and "Serrra" in forms and "Serra" not in forms
    assert all(f[0] == "S" for f in forms) and len(forms) == len(set(forms))
    assert misspellings("Lima") == []                         # short words: their typos are other words
    assert common_name(FORGET[1]) == "Ana Lima" and common_name(["Where is the park?"]) is None


def test_the_token_flags_tell_capitals_and_word_continuations(tiny_tokenizer):
    flags = token_flags(tiny_tokenizer)
    at = lambda ch: int(flags[_ids(tiny_tokenizer, ch)[0]])
    assert at("A") == CASED | CONTINUES and at("a") == CONTINUES and at(" ") == SPACE and at("?") == 0
    # a tokenizer of whole words (no space marker) has no continuing token
    words = make_tiny_word_tokenizer(["Ana", "Lima", "who"])
    assert not bool((token_flags(words) & CONTINUES).any())


def test_the_surname_alone_a_typo_or_the_full_name_names_the_person(tiny_tokenizer):
    m = build_name_matcher(tiny_tokenizer, FORGET, RETAIN)
    named = lambda q: m.named(_ids(tiny_tokenizer, q))
    assert named("What does Lima paint?") == [1] and named("Lima's paintings?") == [1]
    assert named("Where was Ana Lima born?") == [1] and named("Did Serra sell cars?") == [2]
    assert named("What does Bo Sreara sell?") == []                       # two edits: no
    assert named("What does Bo Srera sell?") == [2] and named("What does Dr Serra sell?") == [2]
    # another given name, a longer word, nobody: no
    assert named("Who is Mia Serra?") == [] and named("Who is Serrano?") == [] and named("Who is Cy Dorn?") == []
    assert named("Who is Lima and who is Serra?") == [1, 2]
    assert named("Hi.\nDid Serra sell cars?") == [2] and named("Hi.\nMia Serra sells.") == []    # after a newline
    # only the unit's tokens count
    ids = _ids(tiny_tokenizer, "Serra? Who is Cy?")
    assert m.named(ids, [False] * 6 + [True] * (len(ids) - 6)) == []


def test_names_the_retain_side_or_plain_words_hold_give_no_form(tiny_tokenizer):
    assert build_name_matcher(tiny_tokenizer, {1: ["Who is Ana Dorn?", "Was Ana Dorn here?"]}, RETAIN) is None
    assert build_name_matcher(tiny_tokenizer, {1: ["Who is Ana Park?", "Was Ana Park here?"]}, RETAIN) is None
    assert build_name_matcher(tiny_tokenizer, {1: ["the cat sat", "a dog ran"]}, RETAIN) is None   # passages
    # two forget persons with one surname: a question by the surname names both, the features choose
    shared = build_name_matcher(tiny_tokenizer, {1: ["Who is Ana Lima?", "Was Ana Lima here?"],
                                                 2: ["Who is Bo Lima?", "Was Bo Lima here?"]}, RETAIN)
    assert shared.named(_ids(tiny_tokenizer, "Was Lima here?")) == [1, 2]
    assert shared.named(_ids(tiny_tokenizer, "Was Bo Lima here?")) == [2]


def test_a_named_unit_scores_at_least_one_spread_above_the_threshold(tiny_tokenizer):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(4, 8, generator=g) for _ in range(9)]
    router = QuestionRouter(3, 8, layer=0)
    router.fit(feats, [1, 1, 1, 2, 2, 2, 0, 0, 0])
    probe = torch.randn(1, 6, 8, generator=g)
    ids = torch.tensor([_ids(tiny_tokenizer, "Serra?")])
    plain = router.logits(probe, None, ids)
    router.name_matcher = build_name_matcher(tiny_tokenizer, FORGET, RETAIN)
    assert torch.equal(router.logits(probe), plain)                      # without the unit's ids: as before
    named = router.logits(probe, None, ids)
    assert float(named[0, 2]) >= 1.0 - 1e-6 and bool(QuestionRouter.routed_to_forget(named)[0])
    other = torch.tensor([_ids(tiny_tokenizer, "Cyrus")])
    assert torch.equal(router.logits(probe, None, other), plain)


def test_requests_add_and_remove_their_names_and_the_saved_form_is_exact():
    a = NameMatcher([(1, [[5, 6]], [[4]])], torch.tensor([0, 1, 2, 3, 0, 1, 2], dtype=torch.uint8), [[9]])
    b = NameMatcher([(2, [[7]], [])], a.flags)
    m = a.merged(b)
    assert [d for d, _, _ in m.entries] == [1, 2] and a.merged(None) is a
    assert [d for d, _, _ in m.without(1).entries] == [1] and m.without(1).entries[0][1] == [(7,)]
    again = NameMatcher.from_saved(m.metadata(), m.flags)
    assert again.entries == m.entries and again.starters == m.starters and torch.equal(again.flags, m.flags)
    with pytest.raises(ValueError, match="forget domain"):
        NameMatcher([(0, [[5]], [])], a.flags)
    with pytest.raises(ValueError, match="no surname form"):
        NameMatcher([(1, [], [])], a.flags)


def _chat(tok, question):
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    return torch.tensor([_ids(tok, text)])


@pytest.fixture(scope="module")
def trained(tiny_tokenizer):
    forget = [QAExample(q, "She paints owls.", domain="ana") for q in FORGET[1]]
    retain = [QAExample(q, "He sells cars.") for q in RETAIN]
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0)
    return AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, forget, retain,
                        progress=False).train()


def test_generation_and_scoring_route_the_surname_alone_to_the_persons_expert(trained, tiny_tokenizer, tmp_path):
    model = trained
    assert model.question_router.name_matcher is not None
    route = lambda m, q: m.route_questions(_chat(tiny_tokenizer, q))[1]
    u = route(model, "What does Lima paint?")
    assert int(u[0].argmax()) == model.domain_index("ana")
    off = copy.deepcopy(model)
    off.question_router.name_matcher = None
    for q in ("Who is Cy Dorn?", "Who is Mia Lima?", "Where is the park?"):      # nobody named: as without names
        assert torch.equal(route(model, q), route(off, q))
    model.save_adapter(tmp_path / "a")
    torch.manual_seed(0)
    again = alter.load_adapter(make_tiny_llama(len(tiny_tokenizer)), tmp_path / "a")
    assert again.question_router.name_matcher.entries == model.question_router.name_matcher.entries
    assert torch.equal(route(again, "What does Lima paint?"), u)
    # an adapter saved before names (no "names" in its metadata) routes by the features alone
    meta = model.question_router.metadata()
    meta.pop("names")
    again.question_router.load_metadata(meta)
    again.question_router.load_state_tensors(model.question_router.state_tensors())
    assert again.question_router.name_matcher is None


def test_a_new_request_adds_its_name_and_removing_it_takes_the_name_away(trained, tiny_tokenizer):
    model = copy.deepcopy(trained)
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, stop_level_scale=-1.0)
    new = [QAExample(q, "He sells boats.") for q in FORGET[2]]
    retain = [QAExample(q, "He sells cars.") for q in RETAIN]
    AlterTrainer(model, tiny_tokenizer, cfg, new, retain, progress=False).train_new_domain("bo")
    k = model.domain_index("bo")
    assert [d for d, _, _ in model.question_router.name_matcher.entries] == [model.domain_index("ana"), k]
    u = model.route_questions(_chat(tiny_tokenizer, "Did Serra sell boats?"))[1]
    assert int(u[0].argmax()) == k
    model.remove_forget_domain("bo")
    assert model.question_router.name_matcher.entries == trained.question_router.name_matcher.entries
