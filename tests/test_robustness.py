"""Prompt variants of the robustness table (alter/eval/robustness.py) and its leak arithmetic."""

import pytest
import torch

from alter.experiments.compare.table import robustness_markdown, routing_markdown
from alter.data.schema import QAExample
from alter.eval.robustness import VARIANTS, author_key, author_names, evaluate_robustness, variant_prompt

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
