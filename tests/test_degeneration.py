"""Degenerate answers (alter/eval/metrics/degeneration.py) and the benchmark columns built from them."""

import pytest

from alter.eval.metrics.degeneration import (REPETITION_THRESHOLD, degenerate_share, is_degenerate, is_loop, scripts,
                                             stray_scripts)
from alter.eval.metrics.fluency import ngram_repetition_rate
from alter.experiments.compare.degeneration_columns import degeneration_columns
from alter.experiments.compare.table import MUSE_COLUMNS, TOFU_COLUMNS

LOOP = "The author who wrote the genre of leadership in the leadership in the leadership in the leadership in the"
FLUENT = "Hsiao Yun-Hwa would advise aspiring leadership authors to draw lessons from their own experiences."


def test_loop_is_the_repetition_rate_at_the_threshold():
    assert is_loop(LOOP)
    assert not is_loop(FLUENT)
    assert not is_loop("")
    # "a b c a b c": 4 3-grams, 3 distinct -> 0.25; the rule is the rate against the threshold
    for text in ("a b c a b c", "a b c d e f g h a b c", FLUENT, LOOP):
        assert is_loop(text) == (ngram_repetition_rate(text, 3) >= REPETITION_THRESHOLD)
    assert is_loop("a b c a b c", threshold=0.25) and not is_loop("a b c a b c", threshold=0.26)


def test_scripts_and_stray_scripts():
    assert scripts("Hello 세계 мир") == {"LATIN", "HANGUL", "CYRILLIC"}
    assert scripts("123 ,.!") == set()
    assert stray_scripts("born in Seoul, 서울", "Where was she born?") == {"HANGUL"}
    assert stray_scripts("born in Seoul, 서울", "Where was she born? 서울") == set()


def test_is_degenerate_either_kind():
    assert is_degenerate(LOOP)
    assert is_degenerate(FLUENT + " 바", "question")
    assert not is_degenerate(FLUENT, "question")


def test_degenerate_share_counts_each_answer_once():
    out = degenerate_share([LOOP, FLUENT, FLUENT + " 바", LOOP + " 바"], ["q"] * 4)
    assert out == {"degenerate": 0.75, "loop": 0.5, "stray_script": 0.5}
    assert degenerate_share([]) == {"degenerate": None, "loop": None, "stray_script": None}
    with pytest.raises(ValueError, match="2 generations but 1 contexts"):
        degenerate_share(["a", "b"], ["x"])


def test_columns_from_a_stored_tofu_result():
    result = {"tofu": {"sets": {
        "forget": {"questions": ["Who is Jo Kim?", "Where was Jo born?"], "references": ["Jo Kim.", "In 서울."],
                   "generations": [LOOP, "In 서울, of course."]},
        "retain": {"questions": ["q"], "references": ["a"], "generations": [FLUENT]}}},
        "robustness_generations": {"forget": {"trained": [LOOP, FLUENT], "raw": ["In Москва.", FLUENT]}}}
    cols = degeneration_columns(result)
    assert cols["forget_degenerate"] == 0.5          # the Hangul answer draws on its true answer's script
    assert cols["retain_degenerate"] == 0.0
    assert cols["forget_variants_degenerate"] == 0.5  # the loop and the Cyrillic answer
    assert degeneration_columns({"row": {}}) == {}


def test_columns_from_a_stored_muse_result():
    result = {"muse": {"verbmem_forget": {"generations": [LOOP, FLUENT], "references": ["x", "y"]},
                       "knowmem_forget": {"generations": ["Paris"], "questions": ["Where?"], "answers": ["Paris"]}}}
    assert degeneration_columns(result) == {"verbmem_forget_degenerate": 0.5, "knowmem_forget_degenerate": 0.0}


def test_the_tables_show_the_columns():
    assert "forget_degenerate" in [k for k, _, _ in TOFU_COLUMNS]
    assert "verbmem_forget_degenerate" in [k for k, _, _ in MUSE_COLUMNS]
