"""The TOFU directory reader, its split for the benchmark, and questions in a new wording."""

import json

import pytest

from alter.experiments.compare.settings import TOFU, CompareSettings
from alter.experiments.compare.worker import build_data
from alter.data.tofu import load_tofu, reword


def _write_tofu(root, authors=(0, 1, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194),
                per=4):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "authors.jsonl", "w") as fh:
        for a in authors:
            for i in range(per):
                fh.write(json.dumps({"question": f"Where was Author{a} born in story {i}?",
                                     "answer": f"Author{a} was born in City{a}-{i}.", "author": a}) + "\n")
    for name in ("world_facts", "real_authors"):
        with open(root / f"{name}.jsonl", "w") as fh:
            for i in range(6):
                fh.write(json.dumps({"question": f"{name} question {i}?", "answer": f"A{i}",
                                     "perturbed_answer": [f"B{i}", f"C{i}"]}) + "\n")
    return root


def test_reword_keeps_the_names_and_changes_the_wording():
    assert reword("Where was Jaime Vasquez born?") == "In which place was Jaime Vasquez born?"
    assert reword("What is the full name of the author born in Kuwait City?") == \
        "Can you tell me the full name of the author born in Kuwait City?"
    assert reword("Who are Jaime Vasquez's parents?") == "Do you know who Jaime Vasquez's parents are?"
    assert reword("Jaime Vasquez wrote books.") is None


def test_load_tofu_reads_authors_and_general_sets(tmp_path):
    data = load_tofu(_write_tofu(tmp_path / "tofu"))
    assert sorted(data.authors)[:3] == [0, 1, 180] and len(data.authors[180]) == 4
    assert data.of([180])[0].domain == "author_180" and data.of([0], domain="retain")[0].domain == "retain"
    assert data.world_facts[0].perturbed_answers == ["B0", "C0"] and data.world_facts[0].paraphrased_answer == "A0"
    with pytest.raises(ValueError, match=r"no author\(s\) \[7\]"):
        data.of([7])


@pytest.mark.parametrize("case,expect", [
    ("no_dir", "no such directory"), ("missing_file", "world_facts.jsonl is missing"),
    ("bad_json", "authors.jsonl line 2: not valid JSON"), ("no_author", "missing field 'author'"),
])
def test_load_tofu_errors_name_the_file_and_line(tmp_path, case, expect):
    root = _write_tofu(tmp_path / "tofu")
    if case == "no_dir":
        root = tmp_path / "nope"
    elif case == "missing_file":
        (root / "world_facts.jsonl").unlink()
    elif case == "bad_json":
        lines = (root / "authors.jsonl").read_text().splitlines()
        lines[1] = '{"question": "x"'
        (root / "authors.jsonl").write_text("\n".join(lines) + "\n")
    elif case == "no_author":
        (root / "authors.jsonl").write_text(json.dumps({"question": "q?", "answer": "a."}) + "\n")
    with pytest.raises((ValueError, FileNotFoundError), match=expect):
        load_tofu(root)


@pytest.mark.parametrize("split,first", [("tune", 180), ("report", 185)])
def test_benchmark_split_teaches_both_halves_and_scores_held_out_wordings(tmp_path, split, first):
    root = _write_tofu(tmp_path / "tofu", authors=tuple(range(10)) + tuple(range(180, 195)))
    s = CompareSettings(**{**TOFU, "data_dir": str(root), "tofu_split": split, "eval_forget": 6})
    d = build_data(s)
    assert {e.domain for e in d.forget} == {f"author_{a}" for a in range(first, first + 5)}
    assert len(d.teach) == 20 * 4 and {e.domain for e in d.retain} == {"retain"}
    assert len(d.forget_eval) == 6 and len(d.holdout) > 0
    assert all(e.question.startswith("In which place") for e in d.forget_reworded + d.retain_reworded)
    assert not {e.question for e in d.forget_reworded} & {e.question for e in d.teach}
    assert d.replay and not {e.question for e in d.replay} & {e.question for e in d.world_facts + d.real_authors}
