"""Names as users type them: forget questions with their names altered join the question router's banks
(``router_name_variants``), owned by their prompt, and leave the calibration to the prompts themselves."""

import torch

import alter
from alter.data.name_variants import name_runs, name_variants
from alter.data.schema import QAExample
from alter.modeling.question_router import QuestionRouter
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama


def test_each_name_as_surname_with_a_letter_dropped_and_doubled():
    q = "Who are Jaime Vasquez's parents?"
    assert [q[a:b] for a, b in name_runs(q)] == ["Jaime Vasquez"]
    surname, dropped, doubled = name_variants(q, seed=0)
    assert surname == "Who are Vasquez's parents?"
    assert dropped.startswith("Who are Jaime V") and len(dropped) == len(q) - 1 and dropped.endswith("'s parents?")
    assert doubled.startswith("Who are Jaime V") and len(doubled) == len(q) + 1
    assert name_variants(q, seed=0) == [surname, dropped, doubled]            # a function of the seed
    # a word that starts questions is not part of the name; a question without a name has no variants
    assert [x for a, b in name_runs("Can Hsiao Yun-Hwa write?") for x in ["Can Hsiao Yun-Hwa write?"[a:b]]] == [
        "Hsiao Yun-Hwa"]
    assert name_runs("Has Carmen won?") == [] and name_variants("Where was the author born?") == []
    # no swap of two letters, the misspelling the benchmark's robustness table asks with
    swapped = "Who are Jaime Vasuqez's parents?"
    assert all(swapped != v for s in range(20) for v in name_variants(q, seed=s))


def test_variant_rows_join_their_prompts_bank_and_leave_the_calibration_alone():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(4, 8, generator=g) for _ in range(8)]
    doms = [1, 1, 1, 1, 0, 0, 0, 0]
    plain = QuestionRouter(2, 8, layer=0)
    cal = plain.fit(feats, doms)
    extra = [(0, torch.randn(3, 8, generator=g)), (1, torch.randn(2, 8, generator=g))]
    more = QuestionRouter(2, 8, layer=0)
    cal_more = more.fit(feats, doms, extra=extra)
    assert more.banks[1].shape[0] == plain.banks[1].shape[0] + 5 and torch.equal(more.banks[0], plain.banks[0])
    # a prompt's own variant rows are left out of its leave-one-out score, with its own rows
    assert torch.equal(more.loo_scores[:2], plain.loo_scores[:2])
    assert cal_more["forget_prompts"] == cal["forget_prompts"] == 4
    # a question that reads as a variant row now matches the forget bank
    probe = extra[0][1].unsqueeze(0)
    assert more.scores(probe)[0, 0] > plain.scores(probe)[0, 0]


FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana")
          for n in ("Ana Lima", "Ana Lima Sousa")]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ("Cy", "Di", "Ed", "Fa")]


def _router(tok, variants: bool):
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, router_name_variants=variants)
    trainer = AlterTrainer(make_tiny_llama(len(tok)), tok, cfg, FORGET, RETAIN, progress=False)
    trainer.prepare()
    return trainer


def test_the_trainer_adds_each_forget_questions_altered_names(tiny_tokenizer):
    off, on = _router(tiny_tokenizer, False), _router(tiny_tokenizer, True)
    r_off, r_on = off.model.question_router, on.model.question_router
    assert torch.equal(r_off.banks[0], r_on.banks[0])                  # the retain bank is the prompts'
    assert r_on.banks[1].shape[0] > r_off.banks[1].shape[0]
    assert off.router_calibration["forget_prompts"] == on.router_calibration["forget_prompts"] == 2
    # the surname alone of a forget question, as the router reads it, now matches that bank's rows exactly
    from alter.data.prompts import prompt_ids
    ids = torch.tensor([prompt_ids(tiny_tokenizer, "Who is Lima?")])
    unit = on.model.unit_features(ids, torch.ones_like(ids))[0]
    best = lambda bank: (torch.nn.functional.normalize(unit.float(), dim=-1) @ bank.float().T).amax(1).min()
    assert best(r_on.banks[1]) > 0.999 and best(r_off.banks[1]) < best(r_on.banks[1])
