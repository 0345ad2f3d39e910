"""Sequential forget requests through ``alter-train --adapter`` on a tiny Llama saved to a folder: a second
request leaves every earlier tensor bit-identical, removing it gives back the first adapter exactly, and
combinations that make no sense are one-line errors."""

import json

import pytest
import torch

import alter
from alter.cli import requests
from alter.cli import train as cli
from alter.io import load_tensors
from alter.modeling import model_loading

FORGET_1 = [{"question": f"Who is {n}?", "answer": f"{n} paints blue owls at night."} for n in ("Ana", "Ana Li")]
FORGET_2 = [{"question": f"Where does {n} live?", "answer": f"{n} lives by the old mill."} for n in ("Bo", "Bo Wu")]
RETAIN = [{"question": f"Who is {n}?", "answer": f"{n} sells red cars in town."} for n in ("Cy", "Di", "Ed", "Fa")]
FAST = ["--no-progress", "--device", "cpu", "--batch-size", "2", "--lr-phase2", "1e-2"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny model's folder, the data, request 1 trained from scratch and request 2 added to it."""
    from tests.helpers import make_tiny_llama, make_tiny_tokenizer

    root = tmp_path_factory.mktemp("requests")
    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(0)
    make_tiny_llama(vocab_size=len(tokenizer)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    paths = {"model": str(root / "model"), "root": root,
             "forget_1": _jsonl(root / "forget_1.jsonl", FORGET_1),
             "forget_2": _jsonl(root / "forget_2.jsonl", FORGET_2),
             "retain": _jsonl(root / "retain.jsonl", RETAIN)}
    assert cli.main(["--forget", paths["forget_1"], "--retain", paths["retain"], "--model", paths["model"],
                     "--output", str(root / "one"), "--phase2-epochs", "1", "--phase2-min-steps", "0",
                     "--stop-level-scale", "-1", *FAST]) == 0
    # request 2 overrides the adapter's saved stop (off in request 1): the forget level, checked after step 2
    assert cli.main(["--adapter", str(root / "one"), "--forget", paths["forget_2"], "--retain", paths["retain"],
                     "--model", paths["model"], "--output", str(root / "two"), "--phase2-epochs", "2",
                     "--phase2-min-steps", "2", "--stop-check-every", "2", "--stop-level-scale", "0.65",
                     *FAST]) == 0
    assert cli.main(["--adapter", str(root / "two" / "adapter"), "--remove-request", "request_2",
                     "--model", paths["model"], "--output", str(root / "undone")]) == 0
    return paths


def _tensors(run):
    return load_tensors(run / "adapter" / "adapter_model.safetensors")


def _meta(run):
    meta = json.loads((run / "adapter" / "adapter_config.json").read_text())
    meta.pop("extra", None)                     # what the run did (its report), not the adapter
    return meta


def _load(paths, run):
    base, tokenizer = model_loading.load(paths["model"])
    return alter.AlterModel.from_pretrained(base, run / "adapter"), tokenizer


def test_adding_a_request_keeps_every_earlier_tensor_bit_identical(runs):
    one, two = _tensors(runs["root"] / "one"), _tensors(runs["root"] / "two")
    meta_one, meta_two = _meta(runs["root"] / "one"), _meta(runs["root"] / "two")
    assert meta_two["domains"] == meta_one["domains"] + ["request_2"] == ["retain", "forget", "request_2"]
    new = {k for k in two if k.endswith(".2")}          # request_2 is expert 2: B, router column, bank
    assert new and "question_router.bank.2" in new and set(two) - set(one) == new
    assert set(one) == set(two) - new
    for key in one:
        assert torch.equal(one[key], two[key]), key
    assert any(torch.count_nonzero(two[k]) for k in new if ".lora_B." in k), "the new expert did not train"
    assert meta_two["theta"] == meta_one["theta"]
    # threshold, spread, calibration as they were; the case map gains the new request's words, after the old ones,
    # and the question match the new request's questions (domain 2), after the old ones
    router_one, router_two = dict(meta_one["question_router"]), dict(meta_two["question_router"])
    map_one, map_two = router_one.pop("case_map"), router_two.pop("case_map")
    asked_one, asked_two = router_one.pop("questions") or [], router_two.pop("questions") or []
    assert router_two == router_one and map_two[:len(map_one)] == map_one
    assert asked_two[:len(asked_one)] == asked_one and all(d == 2 for d, _ in asked_two[len(asked_one):])
    # the adapter's config is request 1's (the override shaped request 2's training only)
    assert {k: v for k, v in meta_two["config"].items() if k != "forget_domains"} == \
        {k: v for k, v in meta_one["config"].items() if k != "forget_domains"}
    assert meta_two["config"]["stop_level_scale"] == -1.0
    log = [json.loads(line) for line in (runs["root"] / "two" / "train_log.jsonl").read_text().splitlines()]
    assert "forget_level_reading" in log[-1], log[-1]          # the level stop ran for the new request


def test_the_new_request_answers_differently_and_the_earlier_ones_exactly_as_before(runs):
    one, tokenizer = _load(runs, runs["root"] / "one")
    two, _ = _load(runs, runs["root"] / "two")
    for rows, same in ((FORGET_1 + RETAIN, True), (FORGET_2, False)):
        enc = _prompts(tokenizer, rows)                 # scored as generation routes: by the prompt alone
        with torch.no_grad():
            a, b = one(**enc).logits, two(**enc).logits
        assert torch.equal(a, b) == same, rows[0]["question"]


def _prompts(tokenizer, rows):
    """Chat prompt + answer per row, right-padded, with ``prompt_lengths`` (the router reads the prompt only)."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                             add_generation_prompt=True) for r in rows]
    enc = tokenizer([p + r["answer"] for p, r in zip(prompts, rows)], return_tensors="pt", padding=True)
    enc["prompt_lengths"] = torch.tensor([len(tokenizer(p).input_ids) for p in prompts])
    return enc


def test_removing_the_request_gives_back_the_first_adapter_exactly(runs):
    one, undone = _tensors(runs["root"] / "one"), _tensors(runs["root"] / "undone")
    assert set(one) == set(undone)
    for key in one:
        assert torch.equal(one[key], undone[key]), key
    assert _meta(runs["root"] / "one") == _meta(runs["root"] / "undone")
    first, tokenizer = _load(runs, runs["root"] / "one")
    restored, _ = _load(runs, runs["root"] / "undone")
    enc = _prompts(tokenizer, FORGET_1 + FORGET_2 + RETAIN)
    with torch.no_grad():
        assert torch.equal(first(**enc).logits, restored(**enc).logits)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": FORGET_2[0]["question"]}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(first.generate(prompt["input_ids"], attention_mask=prompt["attention_mask"], **kw),
                       restored.generate(prompt["input_ids"], attention_mask=prompt["attention_mask"], **kw))


def _error(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("alter-train: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("case,extra,expect", [
    ("taken name", ["--request-name", "forget"], "a request in it already"),
    ("retain name", ["--request-name", "retain"], "the retain domain"),
    ("demo", ["--demo"], "--adapter with --demo"),
    ("baseline", ["--method", "npo"], "--adapter with --method"),
    ("resume", ["--resume"], "--adapter with --resume"),
    ("quick", ["--quick"], "--quick only applies to --demo"),
    ("adapter field", ["--r", "4", "--theta", "0.5"], "--r, --theta: fixed by the adapter"),
    ("bad value", ["--phase2-epochs", "-1"], "AlterConfig.phase2_epochs"),
    ("same output", ["@one"], "give a new folder"),
])
def test_adding_a_request_refuses_what_makes_no_sense(runs, capsys, case, extra, expect):
    one = str(runs["root"] / "one")
    output = one if extra == ["@one"] else str(runs["root"] / "never")
    extra = [] if extra == ["@one"] else extra
    err = _error(["--adapter", one, "--forget", runs["forget_2"], "--retain", runs["retain"],
                  "--model", runs["model"], "--output", output, *extra], capsys)
    assert expect in err, err
    assert not (runs["root"] / "never").exists()


@pytest.mark.parametrize("run,name,extra,expect", [
    ("two", "retain", [], "the retain domain, which is no request; requests in the adapter: forget, request_2"),
    ("two", "nobody", [], "no such request in the adapter; its requests: forget, request_2"),
    ("one", "forget", [], "the adapter's only request; an adapter needs at least one forget expert"),
    ("two", "request_2", ["--forget", "x.jsonl"], "--remove-request trains nothing: drop --forget"),
    ("two", "request_2", ["--phase2-epochs", "2"], "--remove-request trains nothing: drop the hyperparameters"),
])
def test_removing_a_request_refuses_what_makes_no_sense(runs, capsys, run, name, extra, expect):
    err = _error(["--adapter", str(runs["root"] / run), "--remove-request", name, "--model", runs["model"],
                  "--output", str(runs["root"] / "never"), *extra], capsys)
    assert expect in err, err
    assert not (runs["root"] / "never").exists()


@pytest.mark.parametrize("argv,expect", [
    (["--remove-request", "forget"], "--remove-request needs --adapter"),
    (["--request-name", "x", "--forget", "f.jsonl", "--retain", "r.jsonl"], "--request-name needs --adapter"),
    (["--adapter", "@nowhere", "--remove-request", "forget"], "no adapter_config.json there"),
    (["--adapter", "@nowhere"], "give --forget NEW --retain R (or --remove-request NAME"),
])
def test_request_flags_without_an_adapter_are_refused(runs, capsys, argv, expect):
    argv = [str(runs["root"] / "nowhere") if a == "@nowhere" else a for a in argv]
    assert expect in _error(argv, capsys)


def test_a_yaml_config_may_only_set_what_a_new_request_takes(runs, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("phase2_epochs: 2\nr: 4\n")
    err = _error(["--adapter", str(runs["root"] / "one"), "--forget", runs["forget_2"], "--retain", runs["retain"],
                  "--config", str(tmp_path / "c.yaml"), "--output", str(tmp_path / "out")], capsys)
    assert "--r: fixed by the adapter" in err and not (tmp_path / "out").exists()


def test_a_baseline_run_is_no_adapter(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    err = _error(["--adapter", str(tmp_path), "--remove-request", "forget"], capsys)
    assert "a full-parameter baseline run (model/), not an ALTER adapter" in err


def test_a_token_router_adapter_cannot_take_a_request(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()
    meta = {"format": "alter-adapter", "domains": ["retain", "forget"], "config": {"router": "token"}}
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(meta))
    err = _error(["--adapter", str(tmp_path), "--forget", "f.jsonl", "--retain", "r.jsonl"], capsys)
    assert "router='token'" in err and "need router='question'" in err


def test_the_default_name_is_the_next_free_request_number():
    meta = {"domains": ["retain", "forget"]}
    assert requests.new_request_name(None, meta) == "request_2"
    assert requests.new_request_name(None, {"domains": ["retain", "forget", "request_3"]}) == "request_4"
    assert requests.new_request_name(" mine ", meta) == "mine"


def test_help_says_which_hyperparameters_a_new_request_takes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--adapter DIR" in text and "--remove-request NAME" in text and "--request-name NAME" in text
    assert "With --adapter only these hyperparameters apply" in text and "--lr-phase2" in text


def test_a_new_domain_gets_a_capped_bank_held_out_strengths_and_its_own_anchors(tiny_tokenizer):
    """train_new_domain fits the new bank as a fresh fit would (``router_bank_size``, held-out router
    strength per prompt) and sends phase II's retain anchors through the new expert, the one that trains."""
    from alter.data.schema import QAExample
    from alter.train import AlterTrainer
    from tests.helpers import make_tiny_llama

    torch.manual_seed(0)
    config = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, stop_level_scale=-1.0,
                               lr_phase2=1e-2)
    forget = [QAExample(r["question"], r["answer"], domain="forget") for r in FORGET_1]
    retain = [QAExample(r["question"], r["answer"]) for r in RETAIN]
    model = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, config, forget, retain,
                         progress=False).train()
    new = [QAExample(r["question"], r["answer"]) for r in FORGET_2]
    trainer = AlterTrainer(model, tiny_tokenizer, config.replace(router_bank_size=5, anchor_per_forget=1.0,
                                                                 plain_prompt_share=0.5), new, retain, progress=False)
    trainer.train_new_domain("request_2")
    index = model.domain_index("request_2")
    assert model.question_router.banks[index].shape[0] == 5
    strengths = [it.route_strength for it in trainer.items if it.domain_id == index and it.twin_of < 0]
    assert len(strengths) == 2 and all(0.5 <= z <= 3.0 for z in strengths), strengths
    twins = [it for it in trainer.items if it.twin_of >= 0]        # the same questions under plain prompts
    assert twins and all(it.route_strength == trainer.items[it.twin_of].route_strength for it in twins)
    assert trainer.report.entropy_summary["question_router"]["new_domain"] == "request_2"
    assert torch.equal(trainer._anchor_experts(4, "cpu"), torch.full((4,), index))
