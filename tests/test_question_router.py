"""The question router: banks, leave-one-out calibration, per-question decisions, save/load, removal."""

import pytest
import torch

import alter
from alter.data.schema import QAExample
from alter.modeling.question_router import EXCLUDED, QuestionRouter
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama


def _prompts(seed=0, n=6, d=16):
    """Token features: every prompt shares template rows; forget prompts (domain 1) also hold a
    'name' row near one direction, retain prompts one near another."""
    g = torch.Generator().manual_seed(seed)
    template = torch.randn(3, d, generator=g)
    name_f, name_r = torch.randn(d, generator=g), torch.randn(d, generator=g)
    feats, doms = [], []
    for i in range(2 * n):
        forget = i < n
        name = (name_f if forget else name_r) + 0.1 * torch.randn(d, generator=g)
        feats.append(torch.cat([template, name.unsqueeze(0)]))
        doms.append(1 if forget else 0)
    return feats, doms, template, name_f, name_r


def test_fit_separates_forget_from_retain_prompts_leave_one_out():
    feats, doms, template, name_f, name_r = _prompts()
    router = QuestionRouter(2, 16, layer=0)
    cal = router.fit(feats, doms)
    assert cal["loo_forget_recall"] == 1.0 and cal["loo_retain_specificity"] == 1.0
    # a new prompt naming the forget entity goes to expert 1; one naming the retain entity, or
    # nothing known (template only), stays on the retain expert
    new_f = torch.cat([template, (name_f + 0.1 * torch.randn(16)).unsqueeze(0)]).unsqueeze(0)
    new_r = torch.cat([template, (name_r + 0.1 * torch.randn(16)).unsqueeze(0)]).unsqueeze(0)
    only_template = template.unsqueeze(0)
    u = router.logits(torch.cat([new_f, new_r]))
    assert u.shape == (2, 2)
    assert u[0, 1] > 0 and u[0, 0] == 0
    assert u[1, 0] == 0 and u[1, 1] == EXCLUDED
    assert router.logits(only_template)[0, 1] == EXCLUDED


def test_shared_tokens_give_no_evidence_and_padding_is_ignored():
    feats, doms, template, name_f, _ = _prompts()
    router = QuestionRouter(2, 16, layer=0)
    router.fit(feats, doms)
    x = torch.cat([template, name_f.unsqueeze(0)]).unsqueeze(0)
    assert router.scores(template.unsqueeze(0)).abs().max() < 1e-5
    mask = torch.tensor([[True, True, True, False]])             # the name row is padding
    assert router.scores(x, mask).abs().max() < 1e-5
    assert router.scores(x)[0, 0] > 0.3


def test_forced_logits_and_loo_strength():
    feats, doms, *_ = _prompts()
    router = QuestionRouter(3, 16, layer=0)
    with pytest.raises(ValueError, match="no training prompt for domain 2"):
        router.fit(feats, doms)
    router = QuestionRouter(2, 16, layer=0)
    router.fit(feats, doms)
    z = router.loo_strength(doms)
    assert ((z[:6] >= 0.5) & (z[:6] <= 3.0)).all() and (z[6:] == 0).all()
    u = QuestionRouter.forced_logits(torch.tensor([0, 1]), torch.tensor([0.0, 1.5]), 2)
    assert u.tolist() == [[0.0, EXCLUDED], [0.0, 1.5]]


def test_banks_round_trip_and_domain_removal():
    feats, doms, *_ = _prompts()
    router = QuestionRouter(2, 16, layer=0)
    router.fit(feats, doms)
    copy = QuestionRouter(2, 16, layer=0, threshold=router.threshold, spread=router.spread)
    copy.load_state_tensors(router.state_tensors())
    x = torch.stack(feats[:3])
    assert torch.equal(copy.logits(x), router.logits(x))
    k = router.add_domain()
    assert k == 2 and not router.fitted
    router.remove_domain(2)
    assert router.fitted and router.num_domains == 2
    with pytest.raises(ValueError, match="question_router.bank.1"):
        copy.load_state_tensors({"question_router.bank.0": torch.zeros(1, 16)})


FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana") for n in ["Ana", "Ana Li"]]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ["Cy", "Di", "Ed", "Fa"]]


def _train(tok, **kw):
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase1_epochs=1, phase2_epochs=2, lr_phase1=1e-2, lr_phase2=1e-2,
                            phase2_min_steps=0, **kw)
    tr = AlterTrainer(make_tiny_llama(len(tok)), tok, cfg, FORGET, RETAIN, progress=False)
    return tr, tr.train()


def test_deleting_the_forget_expert_gives_back_the_phase1_model_exactly(tiny_tokenizer):
    """Phase II trains the forget experts alone, so removing them leaves exactly what phase I made
    (the same run with a phase II that learns nothing), on forget and retain questions alike."""
    _, unlearned = _train(tiny_tokenizer)
    _, phase1_only = _train(tiny_tokenizer, lambda_forget=0.0, lambda_struct=0.0)
    enc = tiny_tokenizer(["Who is Ana?", "Who is Cy?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert not torch.equal(unlearned(**enc).logits, phase1_only(**enc).logits)
        unlearned.remove_forget_domain("ana")
        phase1_only.remove_forget_domain("ana")
        assert torch.equal(unlearned(**enc).logits, phase1_only(**enc).logits)


def test_a_trained_question_router_is_saved_and_generation_uses_it(tiny_tokenizer, tmp_path):
    tr, model = _train(tiny_tokenizer)
    cal = tr.report.entropy_summary["question_router"]
    assert cal["forget_prompts"] == 2 and cal["retain_prompts"] == 4
    model.save_adapter(tmp_path / "a")
    torch.manual_seed(0)
    restored = alter.load_adapter(make_tiny_llama(len(tiny_tokenizer)), tmp_path / "a")
    assert restored.question_router.threshold == model.question_router.threshold
    enc = tiny_tokenizer(["Who is Ana?"], return_tensors="pt")
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(restored(**enc).logits, model(**enc).logits)
    assert torch.equal(restored.generate(enc.input_ids, **kw), model.generate(enc.input_ids, **kw))
    assert torch.equal(model.generate(enc.input_ids, use_cache=False, **kw), model.generate(enc.input_ids, **kw))


def test_anchor_rows_train_the_forget_expert_towards_leaving_retain_answers_alone(tiny_tokenizer):
    tr, _ = _train(tiny_tokenizer, anchor_per_forget=1.0)
    plan = tr._phase_plans()["phase2"]
    assert all(any(tr.items[i].domain_id == 0 for i in step) for step in plan)     # every step has an anchor row
    assert any(r.get("struct") for r in tr.report.log)


def test_a_share_of_the_unit_sets_how_many_token_evidences_score_a_long_unit():
    from alter.modeling.question_router import top_mean, top_mean_rows

    inf = float("inf")
    ev = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],        # a passage: two matching tokens of 8
                       [1.0, 1.0, 0.0, -inf, -inf, -inf, -inf, -inf]])    # a question: the same two of 3
    fixed = QuestionRouter(2, 4, layer=0, evidence_tokens=2)
    shared = QuestionRouter(2, 4, layer=0, evidence_tokens=2, evidence_share=0.5)
    assert fixed.aggregate(ev).tolist() == [1.0, 1.0]
    assert shared.aggregate(ev).tolist() == [0.5, 1.0]           # m = max(2, ceil(0.5 * 8)) = 4; max(2, 2) = 2
    for m in (1, 2, 3, 8):
        assert torch.allclose(top_mean_rows(ev, torch.full((2,), m)), top_mean(ev, m))
    saved = shared.metadata()
    fresh = QuestionRouter(2, 4, layer=0)
    fresh.load_metadata(saved)
    assert fresh.evidence_share == 0.5 and fresh.evidence_tokens == 2
    with pytest.raises(ValueError, match="evidence_share"):
        QuestionRouter(2, 4, layer=0, evidence_share=1.5)
    with pytest.raises(ValueError, match="router_evidence_share"):
        alter.AlterConfig(router_evidence_share=1.5)


def test_the_evidence_share_is_chosen_from_the_kind_of_forget_set():
    from alter.train.router_bank import PASSAGE_EVIDENCE_SHARE, evidence_share

    questions = [QAExample("Where does zorblat live?", "In Qwex.", domain="forget")]
    passages = [QAExample("", "Zorblat lives in Qwex, a city of bridges.", domain="forget")]
    auto = alter.AlterConfig()
    assert auto.router_evidence_share < 0
    assert evidence_share(auto, questions) == 0.0
    assert evidence_share(auto, passages) == PASSAGE_EVIDENCE_SHARE == 0.1
    assert evidence_share(auto, passages + questions) == 0.0          # any question: the questions' rule
    assert evidence_share(alter.AlterConfig(router_evidence_share=0.3), questions) == 0.3


def test_the_threshold_is_at_least_the_retain_prompts_leave_one_out_quantile():
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(5, 16, generator=g) for _ in range(40)]        # held-out forget looks like retain
    doms = [1] * 10 + [0] * 30
    plain = QuestionRouter(2, 16, layer=0)
    cal0 = plain.fit(feats, doms)
    assert cal0["threshold"] == cal0["midpoint"]
    floored = QuestionRouter(2, 16, layer=0)
    cal = floored.fit(feats, doms, retain_quantile=0.95)
    retain_loo = floored.loo_scores[torch.tensor(doms) == 0, 0]
    expected = float(torch.quantile(retain_loo.double(), 0.95))
    assert cal["midpoint"] == cal0["midpoint"]
    assert expected > cal0["midpoint"]                         # here the floor decides
    assert cal["threshold"] == pytest.approx(expected)
    assert cal["loo_retain_specificity"] == pytest.approx(float((retain_loo <= expected).float().mean()))
    assert cal["loo_retain_specificity"] > cal0["loo_retain_specificity"]
