"""The QA / MC schema, its validation messages, domain helpers and JSON writing."""

import json

import pytest

from alter.data.domains import (assign_domain, assign_domains_by_group, check_forget_set, check_retain_set,
                                collapse_forget_domains, forget_domains, group_by_domain, label_domains)
from alter.data.jsonio import write_mc_json, write_qa_json
from alter.data.schema import FORGET_DOMAIN, RETAIN_DOMAIN, MCExample, QAExample, validate_mc, validate_qa


def qa(i=0, domain=RETAIN_DOMAIN, **kw):
    return QAExample(question=f"q{i}?", answer=f"a{i}", domain=domain, id=f"id{i}", **kw)


def test_defaults_and_raw_text():
    ex = QAExample("What?", "That.")
    assert ex.domain == RETAIN_DOMAIN == "retain"
    assert ex.paraphrased_answer is None and ex.perturbed_answers is None and ex.id is None
    assert not ex.is_raw_text and not ex.is_forget
    passage = QAExample("", "A corpus passage.", domain="cyber")
    assert passage.is_raw_text and passage.is_forget
    assert validate_qa(passage) is passage


@pytest.mark.parametrize("kwargs, message", [
    (dict(question="q", answer=None), "tofu.json row 17: missing field 'answer'"),
    (dict(question=None, answer="a"), "tofu.json row 17: missing field 'question'"),
    (dict(question="q", answer="  "), "tofu.json row 17: field 'answer' is empty"),
    (dict(question="q", answer=3), "tofu.json row 17: field 'answer' must be a string, got int"),
    (dict(question="q", answer="a", domain=""), "tofu.json row 17: field 'domain' is empty"),
    (dict(question="q", answer="a", perturbed_answers="wrong"), "field 'perturbed_answers' must be a list"),
    (dict(question="q", answer="a", perturbed_answers=[]), "field 'perturbed_answers' is an empty list"),
    (dict(question="q", answer="a", perturbed_answers=["x", None]), "missing field 'perturbed_answers[1]'"),
    (dict(question="q", answer="a", paraphrased_answer=""), "field 'paraphrased_answer' is empty"),
])
def test_validate_qa_names_field_and_row(kwargs, message):
    with pytest.raises(ValueError) as err:
        validate_qa(QAExample(**kwargs), source="tofu.json", row=17)
    assert message in str(err.value)
    assert str(err.value).startswith("tofu.json row 17: ")


@pytest.mark.parametrize("kwargs, message", [
    (dict(question="q", choices=["a", "b"], answer=None), "mmlu.csv row 3: missing field 'answer'"),
    (dict(question="q", choices=None, answer=0), "mmlu.csv row 3: missing field 'choices'"),
    (dict(question="q", choices=["a"], answer=0), "at least 2"),
    (dict(question="q", choices=["a", "b"], answer=2), "'answer' = 2 is not an index of the 2 choices"),
    (dict(question="q", choices=["a", "b"], answer=True), "must be an integer index"),
    (dict(question="", choices=["a", "b"], answer=0), "field 'question' is empty"),
])
def test_validate_mc_names_field_and_row(kwargs, message):
    with pytest.raises(ValueError, match="^mmlu.csv row 3: ") as err:
        validate_mc(MCExample(**kwargs), source="mmlu.csv", row=3)
    assert message in str(err.value)


def test_valid_mc_passes():
    ex = MCExample("Which?", ["A", "B", "C", "D"], 3, subject="virology")
    assert validate_mc(ex) is ex


def test_assign_domains_by_group_is_tofu_author_index():
    rows = [qa(i) for i in range(60)]
    labelled = assign_domains_by_group(rows)
    assert [e.domain for e in labelled[:20]] == ["author_0"] * 20
    assert labelled[20].domain == "author_1" and labelled[59].domain == "author_2"
    assert rows[0].domain == RETAIN_DOMAIN  # inputs untouched
    shifted = assign_domains_by_group(rows, offset=180, prefix="tofu_")
    assert shifted[0].domain == "tofu_180" and shifted[-1].domain == "tofu_182"
    with pytest.raises(ValueError, match="whole groups of 20"):
        assign_domains_by_group(rows[:30])


def test_domain_listing_grouping_and_collapse():
    data = label_domains({"bio": [qa(0), qa(1)], "cyber": [qa(2)]}) + [qa(3)]
    assert [e.domain for e in data] == ["bio", "bio", "cyber", "retain"]
    assert forget_domains(data) == ["bio", "cyber"]
    groups = group_by_domain(data)
    assert list(groups) == ["bio", "cyber", "retain"] and len(groups["bio"]) == 2
    single = collapse_forget_domains(data)
    assert [e.domain for e in single] == [FORGET_DOMAIN] * 3 + [RETAIN_DOMAIN]
    assert assign_domain(data, "x")[3].domain == "x"


def test_check_forget_set():
    with pytest.raises(ValueError, match="empty forget set"):
        check_forget_set([])
    with pytest.raises(ValueError, match=r"forget set row 1: domain is 'retain'"):
        check_forget_set([qa(0, "author_3"), qa(1)])
    assert check_forget_set([qa(0, "author_3"), qa(1, "author_4"), qa(2, "author_3")]) == ["author_3", "author_4"]
    with pytest.raises(ValueError, match="retain set row 0: domain is 'bio'"):
        check_retain_set([qa(0, "bio")])
    check_retain_set([qa(0), qa(1)])


def test_write_json_and_jsonl(tmp_path):
    exs = [qa(0, "author_1", paraphrased_answer="p", perturbed_answers=["w1", "w2"]), qa(1)]
    arr = write_qa_json(exs, tmp_path / "x.json")
    lines = write_qa_json(exs, tmp_path / "x.jsonl")
    recs = json.loads(arr.read_text())
    assert recs[0] == {"question": "q0?", "answer": "a0", "paraphrased_answer": "p", "perturbed_answer": ["w1", "w2"],
                       "domain": "author_1", "id": "id0"}
    assert "perturbed_answer" not in recs[1]
    assert [json.loads(line) for line in lines.read_text().splitlines()] == recs
    mc = write_mc_json([MCExample("q", ["a", "b"], 1, subject="s")], tmp_path / "mc.jsonl")
    assert json.loads(mc.read_text()) == {"question": "q", "choices": ["a", "b"], "answer": 1, "subject": "s"}
