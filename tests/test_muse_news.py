"""MUSE-News: the benchmark's data cut (alter/data/muse_news.py), ALTER on passages (no question), the
level stop on passages, and the benchmark's scores (alter/experiments/compare/muse.py) on a tiny model."""

import json

import pytest
import torch

import alter
from alter.data.chunking import split_window
from alter.data.muse_news import load_muse_news, match_question, requests, window_around
from alter.data.prompts import IGNORE_INDEX
from alter.data.schema import QAExample
from alter.train import AlterTrainer
from alter.train.stopping.level import ForgetLevelStop
from tests.helpers import make_tiny_llama

ARTICLES = [
    "Rain fell on Oban for ten days and the harbour flooded in March of 2019 said the mayor today",
    "The mill at Bury closed in 1984 after a fire and four hundred workers lost their jobs that year",
    "A whale swam up the Thames to Kew in June and crowds watched it from the bridges all afternoon",
    "Tolls on the Forth bridge rose to 5p in 1972 and drivers queued for an hour at the booths there",
]
RETAIN = ["The choir of Ely sang for the queen in 1953 and the bells rang out across the fens at noon",
          "A new ferry to Arran carried ninety cars on its first day and the crossing took an hour"]
HOLDOUT = ["Snow closed the road to Braemar for a week and the village ran short of bread and milk",
           "A comet was seen over Leeds at dawn and astronomers said it would return in the year 2061"]


def write_dir(path):
    verbmem = [{"prompt": "x " + a[:a.index(" and ")], "gt": a[a.index(" and "):].strip()} for a in ARTICLES[:2]]
    files = {
        "raw_forget.json": ARTICLES,
        "verbmem_forget.json": verbmem,
        "knowmem_forget_qa.json": [{"question": "Where did a whale swim up the Thames to in June?", "answer": "Kew"},
                                   {"question": "What did tolls on the Forth bridge rise to in 1972?", "answer": "5p"},
                                   {"question": "Who won the cup at Wembley?", "answer": "Leeds"}],
        "knowmem_forget_qa_icl.json": [{"question": "What flooded in Oban?", "answer": "the harbour"}],
        "knowmem_retain2_qa.json": [{"question": "For whom did the choir of Ely sing in 1953?", "answer": "the queen"}],
        "knowmem_retain2_qa_icl.json": [{"question": "Where does the ferry go?", "answer": "Arran"}],
        "privleak_retain2.json": RETAIN,
        "privleak_holdout.json": HOLDOUT,
    }
    for name, rows in files.items():
        (path / name).write_text(json.dumps(rows))
    return path


def test_match_and_windows():
    assert match_question("Where did a whale swim up the Thames to in June?", "Kew", ARTICLES) == 2
    assert match_question("Who won the cup at Wembley?", "Leeds", ARTICLES) is None     # no article holds it
    w = window_around(ARTICLES[3], "5p", 6)
    assert "5p" in w and len(w.split()) == 6
    head, tail = split_window("a b c d e")
    assert (head, tail) == ("a b", "c d e")


def test_load_folds_and_requests(tmp_path):
    m = load_muse_news(write_dir(tmp_path), verbmem_words=8, window_words=10)
    assert m.counts["verbmem_matched"] == 2 and m.counts["knowmem_forget_matched"] == 2
    assert m.counts["knowmem_retain_matched"] == 1 and len(m.holdout_windows) == 2
    report, tune = m.fold("report"), m.fold("tune")
    assert report and tune and len(report) + len(tune) == len(m.forget)
    assert not {f.article for f in report} & {f.article for f in tune}              # no article in both folds
    for f in m.forget:
        if f.kind == "knowmem":
            assert f.answer.lower() in f.text.lower()
        else:
            assert f.text == f"{f.prompt} {f.gt}" and len(f.prompt.split()) <= 8
    parts = requests(m.forget, 2)
    assert sum(len(p) for p in parts) == len(m.forget)
    assert not {f.article for f in parts[0]} & {f.article for f in parts[1]}
    with pytest.raises(ValueError, match="disjoint requests"):
        requests(m.forget, 9)
    with pytest.raises(ValueError, match="fold"):
        m.fold("test")
    (tmp_path / "privleak_holdout.json").unlink()
    with pytest.raises(FileNotFoundError, match="privleak_holdout.json"):
        load_muse_news(tmp_path)


def _passages(texts, domain):
    return [QAExample("", t, domain=domain, id=f"{domain}-{i}") for i, t in enumerate(texts)]


def test_level_stop_on_passages(tiny_tokenizer):
    forget = _passages(ARTICLES, "news")
    stop = ForgetLevelStop(tiny_tokenizer, forget, n=4, scale=1.0, every=1, min_step=1, seed=0, system_prompt=None)
    for true, mis in zip(stop.true, stop.mismatched):
        p = true.prompt_length
        assert p > 0 and true.input_ids[:p] == mis.input_ids[:p]                 # the same first half
        assert all(x == IGNORE_INDEX for x in true.labels[:p]) and all(x != IGNORE_INDEX for x in true.labels[p:])
        assert true.input_ids[p:] != mis.input_ids[p:]                            # another passage's second half


def test_with_reference_texts_the_stop_reads_min_k_of_whole_passages_as_privleak_scores_them(tiny_tokenizer):
    """Given unseen text of the same kind, the check reads the membership attack's statistic: Min-K% of each
    passage scored whole, exactly as the MUSE benchmark's PrivLeak scores it, against the reference texts'
    under the starting model (alter/train/stopping/level.py)."""
    import math

    from alter.experiments.compare.muse import min_k_scores

    forget = _passages(ARTICLES, "news")
    stop = ForgetLevelStop(tiny_tokenizer, forget, n=2, scale=0.5, every=5, min_step=1, seed=0, system_prompt=None,
                           reference=HOLDOUT, every_passages=1)
    assert stop.passages and stop.every == 1                        # a passage check runs every step
    assert len(stop.true) == min(4, len(ARTICLES)) and len(stop.mismatched) == len(HOLDOUT)   # up to 2n passages
    assert all(e.prompt_length == 0 and IGNORE_INDEX not in e.labels for e in stop.true + stop.mismatched)
    texts = {tiny_tokenizer.decode(e.input_ids, skip_special_tokens=True) for e in stop.mismatched}
    assert texts == set(HOLDOUT)
    with pytest.raises(ValueError, match="all empty"):
        ForgetLevelStop(tiny_tokenizer, forget, n=4, scale=1.0, every=1, min_step=1, seed=0, system_prompt=None,
                        reference=["   "])
    torch.manual_seed(0)
    model = alter.wrap(make_tiny_llama(len(tiny_tokenizer)), alter.AlterConfig(forget_domains=["news"]), theta=1.0)
    for layer in model.adapter_layers().values():                   # an adapter that changes the output
        for b in layer.lora_B:
            torch.nn.init.normal_(b, std=0.5)
    with model.disable_adapters():
        ref = min_k_scores(model, tiny_tokenizer, HOLDOUT, batch_size=3)
    assert stop.calibrate(model) == pytest.approx(0.5 * math.exp(-sum(ref) / len(ref)), rel=1e-5)
    picked = [tiny_tokenizer.decode(e.input_ids, skip_special_tokens=True) for e in stop.true]
    now = min_k_scores(model, tiny_tokenizer, picked, batch_size=3)
    reading = math.exp(-sum(now) / len(now))
    assert stop.forgotten(model) == (reading <= stop.level)
    assert stop.last == pytest.approx(reading, rel=1e-5)
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=1, stop_check_every=1, max_length=128)
    trainer = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, forget,
                           _passages(RETAIN, "retain"), progress=False, stop_reference=HOLDOUT)
    trainer.train()
    assert trainer.stop_reference == HOLDOUT


def test_alter_unlearns_passages_end_to_end(tiny_tokenizer):
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=2, phase2_min_steps=1, stop_check_every=1,
                            stop_check_questions=4, max_length=128)
    trainer = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, _passages(ARTICLES, "news"),
                           _passages(RETAIN + HOLDOUT, "retain"), progress=False)
    model = trainer.train()
    assert model.theta is not None and trainer.report.entropy_summary["answer_tokens"] > 0
    router = model.question_router
    assert router.fitted and all(b.numel() > 0 for b in router.banks)              # passages filled both banks
    assert router.evidence_share == 0.1                      # passages: a tenth of a unit's tokens must match
    cal = router.calibration
    assert cal["threshold"] >= cal["midpoint"]                # at least the retain passages' 95th percentile
    assert "phase2" in trainer.report.phases
    # a continuation prompt is routed by all of it: a forget passage's first half goes to the forget expert
    ids = tiny_tokenizer(split_window(ARTICLES[0])[0])["input_ids"]
    with torch.no_grad():
        u = model.route_questions(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                                  torch.tensor([len(ids)]))[1]
    assert bool(router.routed_to_forget(u)[0])


def test_muse_scores_on_a_tiny_model(tmp_path, tiny_tokenizer):
    from alter.experiments.compare.muse import build_muse_data, continuation_fluency, evaluate_muse
    from alter.experiments.compare.settings import CompareSettings

    s = CompareSettings(dataset="muse_news", data_dir=str(write_dir(tmp_path)), tofu_split="report", max_new_tokens=4,
                        knowmem_new_tokens=3, eval_general=2, eval_batch_size=4, eval_retain_windows=2,
                        system_prompt="Answer the question.")
    data = build_muse_data(s)
    assert data.forget and all(e.question == "" and e.domain == "news" for e in data.forget)
    assert len(data.teach) == len(data.muse.forget) + len(data.retain)          # both folds are taught
    torch.manual_seed(0)
    model = make_tiny_llama(len(tiny_tokenizer))
    r = evaluate_muse(model, tiny_tokenizer, s, data, {"mia_min_k_auc": 0.5}, progress=False)
    row = r["row"]
    for key in ("verbmem_forget", "verbmem_retain", "knowmem_forget", "knowmem_retain", "mia_min_k_auc"):
        assert 0.0 <= row[key] <= 1.0, key
    # open-unlearning's sign (as on TOFU): negative = the forget windows still look like training data
    assert row["privleak"] == pytest.approx(((1 - row["mia_min_k_auc"]) - 0.5) / 0.5 * 100)
    assert row["n_knowmem_forget"] == sum(1 for f in data.muse_items if f.kind == "knowmem")
    assert not any(k.startswith("routed_forget:") for k in row)                   # no question router here
    flu = continuation_fluency(model, tiny_tokenizer, *r["fluency_inputs"], batch_size=4)
    assert len(flu["score_per_item"]) == row["n_verbmem"]


def test_bench_muse_news_table_and_sequential_requests(tmp_path, monkeypatch):
    from alter.cli import bench as cli
    from tests.helpers import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    monkeypatch.setenv("ALTER_CACHE", str(tmp_path / "cache"))
    data = str(write_dir(tmp_path))
    common = ["--benchmark", "muse-news", "--quick", "--data", data, "--model", model, "--no-progress",
              "--threads", "1"]
    out = tmp_path / "muse"
    assert cli.main(common + ["--methods", "retain,alter", "--output", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert set(rows) == {"retain", "alter"}
    assert rows["retain"]["privleak"] == pytest.approx(0.0, abs=1e-6)        # the reference against itself
    assert "VerbMem forget" in (out / "compare_table.md").read_text()
    assert "routed_forget:knowmem_forget" in rows["alter"]
    seq = tmp_path / "seq"
    assert cli.main(common + ["--methods", "retain,alter", "--requests", "2", "--output", str(seq)]) == 0
    runs = json.loads((seq / "compare.json").read_text())["runs"]
    assert [st["request"] for st in runs["alter"]] == [1, 2] and [st["request"] for st in runs["retain"]] == [0]
    assert all("verbmem_request_2" in st and "knowmem_retain" in st for st in runs["alter"])
    assert "| alter | 2 |" in (seq / "sequential_table.md").read_text()
    assert cli.main(["--benchmark", "tofu", "--requests", "2"]) == 2           # one usage line, no run


def test_bench_muse_news_tune_then_report_with_the_selected_rates(tmp_path, monkeypatch):
    """``--tune`` sweeps on the tune fold with the never-taught row as the floor; ``--tuned`` reports with the rate."""
    from alter.cli import bench as cli
    from alter.experiments.compare import tuning
    from tests.helpers import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    monkeypatch.setenv("ALTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(tuning.MUSE_TUNE_LRS, "ga", [1e-5, 1e-1])
    common = ["--benchmark", "muse-news", "--quick", "--data", str(write_dir(tmp_path)), "--model", model,
              "--no-progress", "--threads", "1"]
    sweep = tmp_path / "sweep"
    assert cli.main(common + ["--tune", "--methods", "ga", "--output", str(sweep)]) == 0
    summary = json.loads((sweep / "compare.json").read_text())
    assert summary["settings"]["tofu_split"] == "tune" and not summary["settings"]["eval_lean"]
    assert [r["method"] for r in summary["runs"]] == ["retain", "finetune", "ga@lr=1e-05", "ga@lr=0.1"]
    tuned = json.loads((sweep / "tuned.json").read_text())
    never = summary["runs"][0]
    assert tuned["floor"] == {"verbmem_forget": never["verbmem_forget"], "knowmem_forget": never["knowmem_forget"]}
    assert tuning.select_muse(summary["runs"])["ga"]["lr"] == tuned["method_lr"]["ga"] in (1e-5, 1e-1)
    report = tmp_path / "report"
    assert cli.main(common + ["--tuned", str(sweep / "tuned.json"), "--methods", "ga", "--output", str(report)]) == 0
    summary = json.loads((report / "compare.json").read_text())
    assert summary["settings"]["tofu_split"] == "report"
    assert summary["settings"]["method_lr"]["ga"] == tuned["method_lr"]["ga"]
