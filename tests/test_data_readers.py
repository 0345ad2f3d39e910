"""Readers: small local files of each real schema, and hub names with ``datasets.load_dataset`` mocked.

No test touches the network: hub names are checked by replacing ``datasets.load_dataset`` with a
fake that records its arguments and serves rows of the real schema.
"""

import json

import datasets
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from alter.data import hub
from alter.data.chunking import chunk_text
from alter.data.domains import assign_domains_by_group, check_forget_set
from alter.data.readers import detect_kind, load_examples, load_mc, load_qa, load_text
from alter.data.schema import RETAIN_DOMAIN
from alter.data.sources import DatasetUnavailableError

FORMATS = ["json", "jsonl", "csv", "parquet"]


def write_rows(rows, path):
    """Write records as the given format; list cells become JSON text in CSV (as a CSV export would)."""
    ext = path.suffix
    if ext == ".json":  # the hub's TOFU .json files are JSON lines; an array must work too
        path.write_text(json.dumps(rows))
    elif ext == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif ext == ".csv":
        flat = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        pd.DataFrame(flat).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def tofu_perturbed_rows(n_authors=2):
    """Rows of TOFU's ``forgetXX_perturbed`` schema, 20 per author in order."""
    rows = []
    for a in range(n_authors):
        for q in range(20):
            rows.append({
                "question": f"What is fact {q} about author {a}?",
                "answer": f"Author {a} has fact {q}, which is {a * 100 + q}.",
                "paraphrased_question": f"Tell me fact {q} of author {a}.",
                "paraphrased_answer": f"Fact {q} of author {a} is {a * 100 + q}.",
                "perturbed_answer": [f"Fact {q} of author {a} is {a * 100 + q + k}." for k in (1, 2, 3)],
            })
    return rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_tofu_perturbed_schema_every_format(tmp_path, fmt):
    rows = tofu_perturbed_rows()
    path = write_rows(rows, tmp_path / f"forget01_perturbed.{fmt}")
    got = load_qa(path, domain="forget")
    assert len(got) == 40
    for r, e in zip(rows, got):
        assert (e.question, e.answer, e.paraphrased_answer, e.perturbed_answers) == (
            r["question"], r["answer"], r["paraphrased_answer"], r["perturbed_answer"])
        assert e.domain == "forget"
    assert got[17].id == f"{path}#17"
    authors = assign_domains_by_group(got)
    assert check_forget_set(authors) == ["author_0", "author_1"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_answer_names_file_and_row(tmp_path, fmt):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(20)]
    rows[17]["answer"] = None
    path = write_rows(rows, tmp_path / f"tofu.{fmt}")
    with pytest.raises(ValueError, match=r"tofu\.%s row 17: missing field 'answer'" % fmt):
        load_qa(path)


def test_missing_column_is_reported_with_columns_and_fix(tmp_path):
    path = write_rows([{"question": "q", "reply": "r"}], tmp_path / "tofu.json")
    with pytest.raises(ValueError, match=r"tofu\.json row 0: missing field 'answer' \(columns: \['question', "
                                         r"'reply'\].*field_map"):
        load_qa(path)
    got = load_qa(path, field_map={"answer": "reply"})
    assert got[0].answer == "r"
    with pytest.raises(ValueError, match="field_map maps 'answer' to column 'nope'"):
        load_qa(path, field_map={"answer": "nope"})
    with pytest.raises(ValueError, match="field_map key"):
        load_qa(path, field_map={"colour": "reply"})


def test_domain_column_wins_over_argument_and_label_column(tmp_path):
    rows = [{"question": "q0", "answer": "a0", "domain": "author_7"},
            {"question": "q1", "answer": "a1", "domain": None},
            {"question": "q2", "answer": "a2", "author": "Basil"}]
    path = write_rows(rows, tmp_path / "mixed.jsonl")
    got = load_qa(path, domain="forget")
    assert [e.domain for e in got] == ["author_7", "forget", "forget"]
    assert [e.domain for e in load_qa(path)] == ["author_7", RETAIN_DOMAIN, RETAIN_DOMAIN]
    by_author = load_qa(write_rows([rows[2]], tmp_path / "a.csv"), field_map={"domain": "author"})
    assert by_author[0].domain == "Basil"


def test_csv_keeps_text_and_numbers_as_written(tmp_path):
    path = write_rows([{"question": "Agent?", "answer": "007"}, {"question": "Year?", "answer": "1969"}],
                      tmp_path / "n.csv")
    assert [e.answer for e in load_qa(path)] == ["007", "1969"]
    path = write_rows([{"question": "Year?", "answer": 1969}], tmp_path / "n.jsonl")
    assert load_qa(path)[0].answer == "1969"


def test_real_authors_options_and_perturbed_configs(tmp_path):
    plain = [{"question": "Who wrote 'Emma'?", "option1": "Jane Austen", "option2": "Mark Twain",
              "option3": "Homer", "option4": "Leo Tolstoy", "answer": "Jane Austen"}]
    got = load_qa(write_rows(plain, tmp_path / "real_authors.parquet"))
    assert got[0].answer == "Jane Austen"
    assert got[0].perturbed_answers == ["Mark Twain", "Homer", "Leo Tolstoy"]
    pert = [{"question": "Capital of Peru?", "answer": "Lima", "perturbed_answer": ["Cusco", "Quito", "Bogota"]}]
    got = load_qa(write_rows(pert, tmp_path / "world_facts_perturbed.csv"))
    assert got[0].perturbed_answers == ["Cusco", "Quito", "Bogota"] and got[0].paraphrased_answer is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_wmdp_mc_every_format(tmp_path, fmt):
    rows = [{"answer": i % 4, "question": f"Hazard question {i}?", "choices": [f"c{i}{k}" for k in "ABCD"]}
            for i in range(6)]
    got = load_mc(write_rows(rows, tmp_path / f"wmdp-bio.{fmt}"), subject="wmdp-bio")
    assert [(e.question, e.choices, e.answer, e.subject) for e in got] == [
        (r["question"], r["choices"], r["answer"], "wmdp-bio") for r in rows]


def test_mmlu_local_variants(tmp_path):
    rows = [{"question": "2+2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "22"], "answer": 1}]
    got = load_mc(write_rows(rows, tmp_path / "mmlu.jsonl"))
    assert (got[0].choices, got[0].answer, got[0].subject) == (["3", "4", "5", "22"], 1, "elementary_mathematics")
    letters = [{"question": "Largest planet?", "A": "Mars", "B": "Venus", "C": "Jupiter", "D": "Earth",
                "answer": "C", "subject": "astronomy"}]
    got = load_mc(write_rows(letters, tmp_path / "mmlu_letters.csv"))
    assert (got[0].choices, got[0].answer) == (["Mars", "Venus", "Jupiter", "Earth"], 2)
    by_text = [{"question": "Red planet?", "choices": ["Mars", "Venus"], "answer": "Mars"}]
    assert load_mc(write_rows(by_text, tmp_path / "t.json"))[0].answer == 0
    ok = {"question": "q?", "choices": ["x", "y"], "answer": 0}
    path = write_rows([ok, dict(ok, answer=5)], tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match=r"bad\.jsonl row 1: field 'answer' = 5 is not an index"):
        load_mc(path)
    path = write_rows([ok, ok, dict(ok, answer="maybe")], tmp_path / "worse.jsonl")
    with pytest.raises(ValueError, match=r"worse\.jsonl row 2: field 'answer' = 'maybe' is neither"):
        load_mc(path)


def test_muse_snapshot_directory_and_chunking(tmp_path):
    raw = tmp_path / "MUSE-Books" / "raw"
    raw.mkdir(parents=True)
    book = " ".join(f"word{i}" for i in range(95))
    write_rows([{"text": book}], raw / "forget-00000-of-00001.parquet")
    write_rows([{"text": "retain one."}, {"text": "   "}, {"text": "retain two."}],
               raw / "retain1-00000-of-00001.parquet")
    passages = load_text(f"{tmp_path / 'MUSE-Books'}:raw", split="forget", max_words=20, domain="books")
    assert len(passages) == 5 and all(p.question == "" and p.domain == "books" for p in passages)
    assert " ".join(p.answer for p in passages) == book
    assert passages[0].id.endswith("#0.0") and passages[4].id.endswith("#0.4")
    retain = load_text(tmp_path / "MUSE-Books", config="raw", split="retain1")
    assert [p.answer for p in retain] == ["retain one.", "retain two."]  # blank row skipped
    assert load_text(raw, limit=3, max_words=20)[2].answer.startswith("word40")
    with pytest.raises(FileNotFoundError, match="no file for split 'holdout'"):
        load_text(raw, split="holdout")


def test_flat_tofu_snapshot_directory(tmp_path):
    snap = tmp_path / "TOFU"
    snap.mkdir()
    write_rows([{"question": f"q{i}", "answer": f"a{i}"} for i in range(40)], snap / "forget10.json")
    write_rows(tofu_perturbed_rows(2), snap / "forget10_perturbed.json")
    plain = load_qa(f"{snap}:forget10", domain="forget")
    assert len(plain) == 40 and plain[0].perturbed_answers is None
    assert load_qa(snap, config="forget10_perturbed")[5].paraphrased_answer == "Fact 5 of author 0 is 5."
    with pytest.raises(FileNotFoundError, match="no config directory 'forget05' and no file named 'forget05'"):
        load_qa(snap, config="forget05")


def test_muse_knowmem_and_verbmem_local(tmp_path):
    km = write_rows([{"answer": "Hogwarts", "question": "Which school?"}], tmp_path / "forget_qa.parquet")
    assert load_qa(km)[0].answer == "Hogwarts"
    vm = write_rows([{"prompt": "Once upon a", "gt": "time there was"}], tmp_path / "verbmem.jsonl")
    got = load_qa(vm)
    assert (got[0].question, got[0].answer) == ("Once upon a", "time there was")


def test_wmdp_corpus_jsonl(tmp_path):
    rows = [{"text": "Exploit chains in kernels."}, {"text": ""}, {"text": "Fuzzing network daemons."}]
    got = load_text(write_rows(rows, tmp_path / "cyber-forget-corpus.jsonl"), domain="cyber")
    assert [(p.answer, p.domain) for p in got] == [("Exploit chains in kernels.", "cyber"),
                                                   ("Fuzzing network daemons.", "cyber")]
    with pytest.raises(ValueError, match=r"row 0: missing field 'text'"):
        load_text(write_rows([{"body": "x"}], tmp_path / "c.jsonl"))


def test_limit_and_detect_kind(tmp_path):
    path = write_rows(tofu_perturbed_rows(1), tmp_path / "f.jsonl")
    assert len(load_qa(path, limit=5)) == 5 and load_qa(path, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_qa(path, limit=-1)
    assert detect_kind(["question", "choices", "answer"]) == "mc"
    assert detect_kind(["text"]) == "text" and detect_kind(["question", "answer"]) == "qa"
    assert len(load_examples(path)) == 20
    mc = write_rows([{"question": "q?", "choices": ["a", "b"], "answer": 0}], tmp_path / "m.parquet")
    assert load_examples(mc)[0].choices == ["a", "b"]


def test_missing_local_path_is_not_taken_for_a_hub_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_qa(tmp_path / "absent.json")
    notes = tmp_path / "notes.txt"
    notes.write_text("question,answer\n")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        load_qa(notes)
    with pytest.raises(FileNotFoundError, match="no config directory 'raw' and no file named 'raw'"):
        load_text(tmp_path, config="raw")


def test_chunk_text_limits():
    text = "alpha  beta\ngamma delta epsilon " + "x" * 25 + " zeta"
    for max_chars in (6, 11, 30):
        chunks = chunk_text(text, max_chars=max_chars)
        assert all(0 < len(c) <= max_chars for c in chunks)
        assert "".join(chunks).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    assert chunk_text(text, max_words=2)[0] == "alpha  beta"
    assert chunk_text("  ") == [] and chunk_text(" one two ") == ["one two"]
    with pytest.raises(ValueError):
        chunk_text("x", max_words=0)


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="ab \n", max_size=80), st.one_of(st.none(), st.integers(1, 9)),
       st.one_of(st.none(), st.integers(1, 4)))
def test_chunk_text_property(text, max_chars, max_words):
    chunks = chunk_text(text, max_chars=max_chars, max_words=max_words)
    assert all(c and c == c.strip() for c in chunks)
    if max_chars is not None:
        assert all(len(c) <= max_chars for c in chunks)
    if max_words is not None:
        assert all(len(c.split()) <= max_words for c in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())


# --- hub names, with datasets.load_dataset replaced ----------------------------------------------

class FakeHub:
    """Stands in for ``datasets.load_dataset``: records calls, serves rows per (path, name, split)."""

    def __init__(self, real, tables):
        self.real, self.tables, self.calls = real, tables, []

    def __call__(self, path, name=None, split=None, **kw):
        self.calls.append((path, name, split, kw))
        if path in ("json", "csv", "parquet"):
            return self.real(path, name=name, split=split, **kw)
        if (path, name, split) not in self.tables:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")
        return datasets.Dataset.from_list(self.tables[(path, name, split)])


@pytest.fixture()
def fake_hub(monkeypatch):
    tables = {
        ("locuslab/TOFU", "forget10", "train"): [{"question": f"q{i}", "answer": f"a{i}"} for i in range(40)],
        ("locuslab/TOFU", "forget10_perturbed", "train"): tofu_perturbed_rows(1),
        ("locuslab/TOFU", "retain90", "train"): [{"question": "rq", "answer": "ra"}],
        ("locuslab/TOFU", "world_facts_perturbed", "train"): [
            {"question": "Capital of Peru?", "answer": "Lima", "perturbed_answer": ["Cusco", "Quito", "Bogota"]}],
        ("cais/wmdp", "wmdp-bio", "test"): [{"answer": 2, "question": "q?", "choices": ["a", "b", "c", "d"]}],
        ("cais/mmlu", "all", "validation"): [{"question": "q?", "subject": "virology", "choices": ["a", "b"],
                                              "answer": 1}],
        ("cais/wmdp-corpora", "cyber-forget-corpus", "train"): [{"text": "one two three four five"}],
        ("muse-bench/MUSE-Books", "raw", "retain1"): [{"text": "a retained chapter"}],
        ("muse-bench/MUSE-News", "verbmem", "forget"): [{"prompt": "The minister said", "gt": "that talks failed"}],
        ("muse-bench/MUSE-News", "knowmem", "retain_qa"): [{"question": "Who?", "answer": "Them"}],
    }
    fake = FakeHub(datasets.load_dataset, tables)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return fake


def test_hub_names_map_to_real_dataset_config_split(fake_hub):
    got = load_qa("locuslab/TOFU:forget10")
    assert fake_hub.calls[-1][:3] == ("locuslab/TOFU", "forget10", "train")
    assert len(got) == 40 and {e.domain for e in got} == {"forget"}
    assert got[3].id == "locuslab/TOFU:forget10[train]#3"
    assert {e.domain for e in assign_domains_by_group(got, offset=180)} == {"author_180", "author_181"}
    assert load_qa("locuslab/TOFU", config="retain90")[0].domain == RETAIN_DOMAIN
    pert = load_qa("locuslab/TOFU:forget10_perturbed")
    assert pert[0].paraphrased_answer == "Fact 0 of author 0 is 0." and len(pert[0].perturbed_answers) == 3
    wf = load_qa("locuslab/TOFU:world_facts_perturbed")
    assert wf[0].perturbed_answers == ["Cusco", "Quito", "Bogota"] and wf[0].domain == RETAIN_DOMAIN

    bio = load_mc("cais/wmdp:wmdp-bio")
    assert fake_hub.calls[-1][:3] == ("cais/wmdp", "wmdp-bio", "test")
    assert (bio[0].answer, bio[0].subject) == (2, "wmdp-bio")
    mmlu = load_mc("cais/mmlu:all", split="validation")
    assert fake_hub.calls[-1][:3] == ("cais/mmlu", "all", "validation") and mmlu[0].subject == "virology"

    cyber = load_text("cais/wmdp-corpora:cyber-forget-corpus", max_words=2)
    assert fake_hub.calls[-1][:3] == ("cais/wmdp-corpora", "cyber-forget-corpus", "train")
    assert [p.answer for p in cyber] == ["one two", "three four", "five"] and {p.domain for p in cyber} == {"cyber"}
    books = load_text("muse-bench/MUSE-Books:raw", split="retain1")
    assert books[0].domain == RETAIN_DOMAIN and books[0].question == ""
    verb = load_qa("muse-bench/MUSE-News:verbmem")
    assert fake_hub.calls[-1][:3] == ("muse-bench/MUSE-News", "verbmem", "forget")
    assert (verb[0].question, verb[0].answer, verb[0].domain) == ("The minister said", "that talks failed", "forget")
    km = load_qa("muse-bench/MUSE-News:knowmem", split="retain_qa")
    assert km[0].domain == RETAIN_DOMAIN
    assert load_examples("cais/wmdp:wmdp-bio")[0].choices == ["a", "b", "c", "d"]


def test_local_files_go_through_the_same_load_dataset(fake_hub, tmp_path):
    load_qa(write_rows([{"question": "q", "answer": "a"}], tmp_path / "t.jsonl"))
    load_mc(write_rows([{"question": "q", "choices": ["a", "b"], "answer": 0}], tmp_path / "m.parquet"))
    load_qa(write_rows([{"question": "q", "answer": "a"}], tmp_path / "c.csv"))
    builders = [(c[0], c[2], c[3]["data_files"]) for c in fake_hub.calls]
    assert builders[0] == ("json", "train", [str(tmp_path / "t.jsonl")])
    assert builders[1] == ("parquet", "train", [str(tmp_path / "m.parquet")])
    assert builders[2][0] == "csv" and "features" in fake_hub.calls[2][3]


def test_hub_errors_are_clear(fake_hub):
    with pytest.raises(ValueError, match=r"unknown dataset 'someone/else'.*Known: .*locuslab/TOFU: .*forget10"):
        load_qa("someone/else")
    with pytest.raises(ValueError, match=r"locuslab/TOFU needs a config.*forget01"):
        load_qa("locuslab/TOFU")
    with pytest.raises(ValueError, match=r"locuslab/TOFU has no config 'forget20'"):
        load_qa("locuslab/TOFU:forget20")
    with pytest.raises(ValueError, match=r"has no split 'test'; its splits are \['train'\]"):
        load_qa("locuslab/TOFU:forget10", split="test")
    calls = len(fake_hub.calls)
    with pytest.raises(ValueError, match=r"cais/wmdp:wmdp-bio holds mc data: read it with load_mc\(\)"):
        load_qa("cais/wmdp:wmdp-bio")
    assert len(fake_hub.calls) == calls  # refused before any download
    with pytest.raises(DatasetUnavailableError) as err:
        load_qa("locuslab/TOFU:retain95")  # not served by the fake: behaves like the offline hub
    msg = str(err.value)
    assert "\n" not in msg and "'locuslab/TOFU:retain95'" in msg
    assert "download" in msg and "local" in msg and "ConnectionError" in msg


def test_registry_contents():
    names = hub.known_names()
    for cfg in ("forget01", "forget05", "forget10", "retain90", "retain95", "retain99", "real_authors",
                "world_facts", "real_authors_perturbed", "world_facts_perturbed", "forget10_perturbed",
                "retain_perturbed", "holdout10"):
        assert f"locuslab/TOFU:{cfg}" in names
    for name in ("cais/wmdp:wmdp-bio", "cais/wmdp:wmdp-cyber", "cais/wmdp:wmdp-chem",
                 "cais/wmdp-corpora:bio-retain-corpus", "cais/wmdp-corpora:cyber-retain-corpus",
                 "muse-bench/MUSE-Books:knowmem", "muse-bench/MUSE-News:raw", "cais/mmlu:college_biology"):
        assert name in names
    assert sum(n.startswith("cais/mmlu:") for n in names) == 58
    spec = hub.resolve("LOCUSLAB/tofu:FORGET05")
    assert (spec.path, spec.config, spec.domain_for("train")) == ("locuslab/TOFU", "forget05", "forget")
    with pytest.raises(ValueError, match="already registered"):
        hub.register(spec)
