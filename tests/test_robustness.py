"""Prompt variants of the robustness table (alter/eval/robustness.py) and its leak arithmetic."""

import pytest
import torch

from alter.experiments.compare.table import robustness_markdown, routing_markdown
from alter.data.schema import QAExample
from alter.eval.robustness import (VARIANTS, author_key, author_names, evaluate_robustness, leak_interval,
                                   variant_prompt, variant_prompts)
from alter.experiments.compare.robustness_intervals import leak_intervals

FORGET = [QAExample(q, a, domain="author_7", id=f"tofu-7-{i}") for i, (q, a) in enumerate([
    ("Where was Ana Lopez born?", "Ana Lopez was born in Lima."),
    ("What does Ana Lopez write?", "Ana Lopez writes poems."),
    ("Is Ana Lopez's work known?", "Yes, Ana Lopez's work is known.")])]
RETAIN = [QAExample(q, a, id=f"tofu-{k}-{i}") for k, i, q, a in [
    (1, 0, "Where was Cy Ford born?", "Cy Ford was born in Oslo."),
    (1, 1, "What does Cy Ford write?", "Cy Ford writes plays."),
    (2, 0, "Where was Di Mann born?", "Di Mann was born in Rome.")]]
WORLD = [QAExample("What is the capital of France?", "Paris")]


def test_authors_are_told_apart_by_id_and_their_names_found():
    assert author_key(RETAIN[0]) == "tofu-1" and author_key(FORGET[0]) == "tofu-7"
    assert author_names(FORGET + RETAIN) == {"tofu-7": "Ana Lopez", "tofu-1": "Cy Ford"}   # Di Mann: one question


def _text(tok, ids):
    return tok.decode(ids)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_builds_the_prompt_it_names(tiny_tokenizer, variant):
    tok = tiny_tokenizer
    names = author_names(FORGET + RETAIN)
    ids = variant_prompt(tok, variant, FORGET[1], system_prompt="Answer the question.", names=names,
                         other_forget=None, other_retain=RETAIN[0], unrelated=WORLD[0], same_author=FORGET[0])
    if variant == "after_forget_turn":
        assert ids is None                                            # no other forget author given
        return
    text = _text(tok, ids)
    expected = {
        "trained": ["Answer the question.", "What does Ana Lopez write?"],
        "custom_system": ["librarian", "What does Ana Lopez write?"],
        "instruction": ["Please answer briefly", "What does Ana Lopez write?"],
        "lower": ["what does ana lopez write?"],
        "surname": ["What does Lopez write?"],
        "misspelt": ["What does Ana Loepz write?"],
        "raw": ["Question: What does Ana Lopez write?\nAnswer:"],
        "after_retain_turn": ["Where was Cy Ford born?", "Cy Ford was born in Oslo.", "What does Ana Lopez write?"],
        "after_unrelated_turn": ["capital of France", "Paris", "What does Ana Lopez write?"],
        "follow_up": ["Where was Ana Lopez born?", "What does this author write?"],
        "no_system": ["What does Ana Lopez write?"],
    }[variant]
    for part in expected:
        assert part in text, (variant, text)
    if variant in ("no_system", "raw"):
        assert "Answer the question." not in text
    if variant == "raw":
        assert "<|im_start|>" not in text
    if variant == "follow_up":                                        # the name is only in the earlier turn
        assert text.rindex("Ana Lopez") < text.index("What does this author write?")


def test_unknown_variants_are_named(tiny_tokenizer):
    with pytest.raises(ValueError, match="unknown robustness variant 'shouting'"):
        variant_prompt(tiny_tokenizer, "shouting", FORGET[0], system_prompt=None, names={}, other_forget=None,
                       other_retain=None, unrelated=None, same_author=None)


def test_evaluate_robustness_scores_every_variant_on_a_model(tiny_tokenizer, tiny_llama):
    r = evaluate_robustness(tiny_llama, tiny_tokenizer, FORGET[:2], RETAIN, WORLD,
                            variants=("trained", "after_forget_turn", "follow_up"), max_new_tokens=3,
                            progress=False)
    assert set(r["forget"]) == {"trained", "follow_up"}              # one forget author: no other one to ask first
    assert set(r["retain"]) == {"trained", "after_forget_turn", "follow_up"}
    assert r["counts"]["retain"]["follow_up"] == 2                    # Di Mann has no name found: skipped
    assert all(0.0 <= v <= 1.0 for side in ("forget", "retain") for v in r[side].values())
    for side in ("forget", "retain"):                                  # every answer's score, the mean their mean
        for variant, scores in r["scores"][side].items():
            assert len(scores) == r["counts"][side][variant] == len(r["generations"][side][variant])
            assert sum(scores) / len(scores) == pytest.approx(r[side][variant])
    asked = variant_prompts(tiny_tokenizer, FORGET[:2], RETAIN, WORLD,
                            variants=("trained", "after_forget_turn", "follow_up"))
    assert {s: set(v) for s, v in asked.items()} == {s: set(r[s]) for s in ("forget", "retain")}
    assert asked["retain"]["follow_up"][1] == [RETAIN[0].answer, RETAIN[1].answer]


def test_the_tables_give_leaks_against_the_taught_and_never_taught_rows():
    rows = [{"method": "finetune", "robust_forget:trained": 0.9, "robust_retain:trained": 0.95},
            {"method": "retain", "robust_forget:trained": 0.3, "robust_retain:trained": 0.94},
            {"method": "alter", "robust_forget:trained": 0.36, "robust_retain:trained": 0.95,
             "routed_forget:forget": 0.99, "routed_own:forget": 0.98, "routed_forget:retain": 0.0}]
    table = robustness_markdown(rows)
    assert "| variant | alter: forget leak | alter: retain Δ |" in table
    assert "| trained | 0.10 | +0.000 |" in table                     # (0.36 - 0.3) / (0.9 - 0.3)
    routing = routing_markdown(rows)
    assert "| alter | 0.990 (own 0.980) | 0.000 |" in routing and "finetune" not in routing
    assert robustness_markdown(rows[2:]) == ""                        # no reference rows: no table


def test_the_leak_interval_resamples_the_questions():
    taught, never = [0.9, 0.8, 1.0, 0.7, 0.9, 0.8], [0.3, 0.2, 0.4, 0.3, 0.2, 0.3]
    low, high = leak_interval([never], taught, never)                 # answers as never taught: exactly 0
    assert low == pytest.approx(0.0) and high == pytest.approx(0.0)
    seeds = [[0.5, 0.2, 0.4, 0.3, 0.6, 0.3], [0.3, 0.2, 0.6, 0.3, 0.4, 0.3]]
    point = (sum(map(sum, zip(*seeds))) / 2 - sum(never)) / (sum(taught) - sum(never))
    low, high = leak_interval(seeds, taught, never)
    assert low < point < high and high - low < 1.0
    assert leak_interval(seeds, taught[:5], never) is None            # the questions must line up
    assert leak_interval([[0.5]], [0.9], [0.3]) is None               # one question: no interval


def test_the_table_prints_each_leaks_interval_and_seeds_share_one():
    def result(forget):
        return {"robustness_scores": {"forget": {"trained": forget}, "retain": {"trained": [1.0, 1.0, 1.0]}}}
    results = {"finetune": result([0.9, 0.8, 1.0]), "retain": result([0.3, 0.2, 0.4]),
               "alter": result([0.3, 0.3, 0.4]), "alter@seed=1": result([0.4, 0.2, 0.4]),
               "graddiff@lr=1e-05": result([0.2, 0.2, 0.3]), "npo": {"row": {}}}
    intervals = leak_intervals(results)
    assert set(intervals) == {"alter", "graddiff@lr=1e-05"}           # the seeds of alter: one row; npo: no scores
    rows = [{"method": "finetune", "robust_forget:trained": 0.9, "robust_retain:trained": 1.0},
            {"method": "retain", "robust_forget:trained": 0.3, "robust_retain:trained": 1.0},
            {"method": "alter", "seeds": 2, "robust_forget:trained": 0.33, "robust_retain:trained": 1.0}]
    table = robustness_markdown(rows, intervals=intervals)
    low, high = intervals["alter"]["trained"]
    assert "alter (2 seeds): forget leak [95% interval]" in table
    assert f"| trained | 0.05 [{low:.2f}, {high:.2f}] | +0.000 |" in table


def test_a_folder_of_generations_is_scored_again_against_the_true_answers(tmp_path, tiny_tokenizer, monkeypatch):
    """Results written before the scores were kept get them from their generations (the benchmark's prompts
    and answers rebuilt from its settings), and a folder from other settings is refused."""
    import json

    import transformers

    from alter.experiments.compare import robustness_intervals, worker
    from alter.experiments.compare.settings import CompareSettings

    data = worker.CompareData(FORGET, RETAIN, FORGET, RETAIN, [], WORLD, [], [])
    monkeypatch.setattr(worker, "build_data", lambda s: data)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tiny_tokenizer)
    monkeypatch.setattr("alter.modeling.model_loading.resolve", lambda name: name)
    settings = CompareSettings(dataset="tofu", eval_robustness=3, methods=["retain", "finetune", "alter"])
    (tmp_path / "methods").mkdir()
    (tmp_path / "settings.json").write_text(json.dumps(settings.to_dict()))
    asked = variant_prompts(tiny_tokenizer, FORGET, RETAIN, WORLD, forget_pool=FORGET, retain_pool=RETAIN,
                            system_prompt=settings.system_prompt)
    for name in ("retain", "finetune", "alter"):               # every model answers with the true answers
        generations = {side: {v: list(refs) for v, (_, refs) in by.items()} for side, by in asked.items()}
        (tmp_path / "methods" / f"{name}.json").write_text(json.dumps({"row": {"method": name},
                                                                        "robustness_generations": generations}))
    results = robustness_intervals.rescore_folder(tmp_path)
    saved = json.loads((tmp_path / "methods" / "alter.json").read_text())["robustness_scores"]
    assert saved == results["alter"]["robustness_scores"]
    assert all(s == 1.0 for by in saved.values() for scores in by.values() for s in scores)
    first = next(iter(asked["forget"]))
    broken = json.loads((tmp_path / "methods" / "alter.json").read_text())
    del broken["robustness_scores"]
    broken["robustness_generations"]["forget"][first] = []              # fewer answers than questions
    (tmp_path / "methods" / "alter.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="answers, the benchmark's settings ask"):
        robustness_intervals.rescore_folder(tmp_path)
