"""The built-in synthetic fictitious-author benchmark and the general-knowledge utility sets."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alter.data.domains import check_forget_set, forget_domains
from alter.data.general_knowledge import REAL_AUTHORS, WORLD_FACTS, real_authors, world_facts
from alter.data.jsonio import records_of
from alter.data.readers import load_qa
from alter.data.schema import RETAIN_DOMAIN
from alter.data.synthetic import TEMPLATES, SyntheticAuthors, write_synthetic_benchmark

REPO = Path(__file__).resolve().parents[1]
# The child process skips the packages' __init__ files (which import torch, irrelevant here) by
# registering bare package modules; the synthetic module itself is imported and run as usual.
DIGEST = ("import sys, types; from pathlib import Path; root = Path.cwd(); "
          "[sys.modules.setdefault(n, types.ModuleType(n)).__setattr__('__path__', [str(root / p)]) "
          "for n, p in (('alter', 'alter'), ('alter.data', 'alter/data'))]; "
          "import hashlib, json; from alter.data.synthetic import SyntheticAuthors; "
          "from alter.data.jsonio import records_of; b = SyntheticAuthors(n_authors=12, seed={seed}); "
          "s = b.split(10); data = records_of(b.examples() + s.forget + s.holdout); "
          "print(hashlib.sha256(json.dumps(data).encode()).hexdigest())")


def digest(bench: SyntheticAuthors) -> str:
    s = bench.split(10)
    data = records_of(bench.examples() + s.forget + s.holdout)
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


@pytest.fixture(scope="module")
def bench():
    return SyntheticAuthors(n_authors=20, questions_per_author=20, seed=0)


def test_deterministic_across_processes_and_hash_seeds():
    env = dict(os.environ, PYTHONHASHSEED="4321", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", DIGEST.format(seed=3)], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == digest(SyntheticAuthors(n_authors=12, seed=3))
    assert digest(SyntheticAuthors(n_authors=12, seed=3)) != digest(SyntheticAuthors(n_authors=12, seed=4))


def test_shape_ids_and_profiles(bench):
    ex = bench.examples()
    assert len(ex) == 400 and {e.domain for e in ex} == {RETAIN_DOMAIN}
    assert len({e.id for e in ex}) == 400 and len({e.question for e in ex}) == 400
    names = [a.name for a in bench.authors]
    assert len(set(names)) == 20
    assert all(bench.authors[i // 20].name in ex[i].question or "born in" in ex[i].question for i in range(400))
    a = bench.authors[0]
    assert a.birthplace and a.birth_date and a.genre and a.father_job and a.mother_job and a.award
    assert len(a.books) == 3 and len(set(a.books)) == 3
    # author i does not depend on how many authors follow it
    assert SyntheticAuthors(n_authors=5, seed=0).authors[3] == bench.authors[3]
    assert len(SyntheticAuthors(n_authors=4, questions_per_author=7).examples()) == 28


def test_answers_state_the_fact_without_restating_the_question(bench):
    for a in bench.authors:
        for e in bench.author_examples(a):
            assert 1 <= len(e.answer.split()) <= 10, e.answer
            assert len(e.paraphrased_answer.split()) <= 16
            if not e.id.endswith("full_name"):
                assert a.name not in e.answer and a.name not in e.paraphrased_answer, e.answer


def test_paraphrase_differs_but_keeps_facts_and_perturbed_are_wrong(bench):
    by_key = {t.key: t for t in TEMPLATES}
    for a in bench.authors[:6]:
        slots = a.slots()
        for e in bench.author_examples(a):
            t = by_key[e.id.rsplit("-", 1)[1]]
            assert e.paraphrased_answer != e.answer
            for fact in t.facts:
                fact_text = slots[fact].lower()
                assert fact_text in e.answer.lower() and fact_text in e.paraphrased_answer.lower(), (t.key, fact)
            assert len(e.perturbed_answers) == 5 and len(set(e.perturbed_answers)) == 5
            assert e.answer not in e.perturbed_answers and e.paraphrased_answer not in e.perturbed_answers
            # a perturbed answer changes the key fact of the paraphrase, nothing else
            assert all(p != e.paraphrased_answer for p in e.perturbed_answers)
            assert any(slots[t.facts[0]] not in p for p in e.perturbed_answers)


@pytest.mark.parametrize("n_authors, pct, k", [(20, 1, 1), (20, 5, 1), (20, 10, 2), (100, 5, 5), (200, 1, 2),
                                               (200, 5, 10), (200, 10, 20)])
def test_split_sizes(n_authors, pct, k):
    b = SyntheticAuthors(n_authors=n_authors, questions_per_author=2 if n_authors > 20 else 20, seed=1)
    q = b.questions_per_author
    s = b.split(pct)
    assert len(s.forget_authors) == len(s.holdout_authors) == k
    assert (len(s.forget), len(s.retain), len(s.holdout)) == (k * q, (n_authors - k) * q, k * q)
    assert [a.index for a in s.forget_authors] == list(range(n_authors - k, n_authors))  # TOFU: the last authors


def test_split_domains_and_holdout(bench):
    s = bench.split(10)
    assert s.domains == ["author_18", "author_19"] == check_forget_set(s.forget)
    assert {e.domain for e in s.retain} == {e.domain for e in s.holdout} == {RETAIN_DOMAIN}
    single = bench.split(10, per_author_domains=False)
    assert forget_domains(single.forget) == ["forget"] == single.domains
    assert [e.answer for e in single.forget] == [e.answer for e in s.forget]
    train_names = {a.name for a in bench.authors}
    assert not train_names & {a.name for a in s.holdout_authors}
    assert not {e.question for e in s.holdout} & {e.question for e in bench.examples()}
    assert bench.split(1).holdout_authors[0] == s.holdout_authors[0]  # holdout pool grows, never changes
    assert [e.answer for e in s.retain + s.forget] == [e.answer for e in bench.examples()]


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_authors"):
        SyntheticAuthors(n_authors=1)
    with pytest.raises(ValueError, match="questions_per_author"):
        SyntheticAuthors(questions_per_author=len(TEMPLATES) + 1)
    with pytest.raises(ValueError, match="n_perturbed must be in 1..6"):
        SyntheticAuthors(n_perturbed=7)
    assert len(SyntheticAuthors(n_authors=3, n_perturbed=6).examples()[-1].perturbed_answers) == 6
    with pytest.raises(ValueError, match="forget_percent"):
        SyntheticAuthors().split(0)
    with pytest.raises(ValueError, match="keep at least one"):
        SyntheticAuthors(n_authors=2).split(90)


@pytest.mark.parametrize("make, items", [(real_authors, REAL_AUTHORS), (world_facts, WORLD_FACTS)])
def test_general_knowledge_sets(make, items):
    ex = make()
    assert 30 <= len(ex) <= 40 and len({e.question for e in ex}) == len(ex)
    for e, it in zip(ex, items):
        assert it.fact.lower() in e.answer.lower() and it.fact.lower() in e.paraphrased_answer.lower()
        assert e.paraphrased_answer != e.answer
        assert len(e.perturbed_answers) == 5 and len(set(e.perturbed_answers)) == 5
        assert e.answer not in e.perturbed_answers and e.paraphrased_answer not in e.perturbed_answers
        assert it.fact not in it.wrong
        assert e.domain == RETAIN_DOMAIN
    assert len(make(n_perturbed=3)[0].perturbed_answers) == 3


def test_written_benchmark_reads_back(tmp_path):
    files = write_synthetic_benchmark(tmp_path, n_authors=10, questions_per_author=4, seed=2)
    assert {p.name for p in tmp_path.iterdir()} == {
        "full.json", "forget01.json", "forget05.json", "forget10.json", "retain99.json", "retain95.json",
        "retain90.json", "holdout01.json", "holdout05.json", "holdout10.json", "authors.json",
        "real_authors.json", "world_facts.json"}
    bench = SyntheticAuthors(n_authors=10, questions_per_author=4, seed=2)
    split = bench.split(10)
    assert load_qa(files["forget10"]) == split.forget  # domains, paraphrases, perturbed answers, ids
    assert load_qa(files["retain90"]) == split.retain
    assert load_qa(files["world_facts"]) == world_facts()
    profiles = json.loads(files["authors"].read_text())
    assert [p["name"] for p in profiles[:10]] == [a.name for a in bench.authors] and profiles[-1]["holdout"]
    again = tmp_path / "again"
    write_synthetic_benchmark(again, n_authors=10, questions_per_author=4, seed=2)
    assert all((again / p.name).read_bytes() == p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
