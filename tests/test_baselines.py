"""The unlearning baselines on a tiny Llama: loss directions, trainable sets, frozen reference, report, errors."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from alter.baselines import BASELINE_NAMES, METHODS, UNLEARNING_NAMES, UnlearningRun, resolve_method, run_unlearning
from alter.baselines.base import ForgetItems
from alter.baselines.lora import LoRAGradDiff
from alter.baselines.losses import kl_positions, masked_activation_mse, npo_loss, sequence_logprob
from alter.baselines.rl import random_answers
from alter.baselines.rmu import default_layer, random_direction
from alter.baselines.whp import generic_labels
from alter.modeling.blocks import block_output, decoder_layers
from alter.data.schema import QAExample
from alter.train.batches import collate_items, encode_items, phase2_plan
from alter.train.losses import answer_nll
from tests.helpers import make_tiny_llama

FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="forget") for n in ["Ana", "Bo", "Cy"]]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ["Di", "Ed", "Fa", "Gu", "Ho"]]


def _model(tok, layers=2, seed=0):
    torch.manual_seed(seed)
    return make_tiny_llama(len(tok), layers=layers)


def _run(name, tok, *, layers=2, lr=5e-3, epochs=1.0, batch_size=2, **method_kwargs):
    method = resolve_method(name, method_kwargs)
    return UnlearningRun(method, _model(tok, layers), tok, FORGET, RETAIN, epochs=epochs, batch_size=batch_size,
                         lr=lr, progress=False)


def _nll(model, batch):
    with torch.no_grad():
        return float(answer_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                batch["labels"]))


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


# ---- registry / errors
def test_registry_names_and_classes():
    assert set(BASELINE_NAMES) == {"ga", "graddiff", "kl", "npo", "npo_gd", "npo_kl", "rl", "rmu", "lora",
                                   "task_vector", "whp", "finetune", "retain"}
    assert set(UNLEARNING_NAMES) == set(BASELINE_NAMES) - {"finetune", "retain"}
    for name, cls in METHODS.items():
        assert cls.name == name and cls.citation and cls.__module__.startswith("alter.baselines.")
        doc = __import__(cls.__module__, fromlist=["x"]).__doc__
        assert doc and any(year in doc for year in ("2020", "2022", "2023", "2024")), name


def test_bad_input_errors(tiny_tokenizer):
    tok = tiny_tokenizer
    with pytest.raises(ValueError, match="unknown unlearning method 'sgd'.*ga, graddiff"):
        run_unlearning("sgd", _model(tok), tok, FORGET, RETAIN, progress=False)
    for name in ("alter", "asymlora", "ALTER"):
        with pytest.raises(ValueError, match="AlterTrainer"):
            run_unlearning(name, _model(tok), tok, FORGET, RETAIN, progress=False)
    for name in ("ga", "npo", "finetune", "retain"):
        with pytest.raises(ValueError, match="empty forget set"):
            run_unlearning(name, _model(tok), tok, [], RETAIN, progress=False)
    with pytest.raises(ValueError, match="retain set, which is empty"):
        run_unlearning("graddiff", _model(tok), tok, FORGET, [], progress=False)
    with pytest.raises(ValueError, match="non-empty retain set"):
        run_unlearning("retain", _model(tok), tok, FORGET, [], progress=False)
    with pytest.raises(ValueError, match="has no hyperparameter betta.*beta"):
        run_unlearning("npo", _model(tok), tok, FORGET, RETAIN, method_kwargs={"betta": 1.0}, progress=False)
    with pytest.raises(ValueError, match="beta > 0"):
        resolve_method("npo", {"beta": 0.0})
    with pytest.raises(ValueError, match="batch_size"):
        run_unlearning("ga", _model(tok), tok, FORGET, RETAIN, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="retain_per_forget must be > 0"):
        run_unlearning("kl", _model(tok), tok, FORGET, RETAIN, retain_per_forget=0.0, progress=False)
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        run_unlearning("rmu", _model(tok), tok, FORGET, RETAIN, method_kwargs={"layer": 5}, progress=False)
    same = [QAExample("Who?", "Same answer.")]
    with pytest.raises(ValueError, match="two different answers"):
        run_unlearning("rl", _model(tok), tok, same, same, progress=False)


# ---- loss formulas
def test_loss_helpers_match_their_formulas():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 2, -100, -100]])
    logp = torch.log_softmax(logits, -1)
    per = [logp[0, 1, 3] + logp[0, 2, 4] + logp[0, 3, 1], logp[1, 0, 2] + logp[1, 1, 2]]
    assert torch.allclose(sequence_logprob(logits, labels), torch.stack(per))
    assert torch.allclose(answer_nll(logits, labels), -(per[0] + per[1]) / 5)
    lp, lr = torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -2.0])
    expected = -(2 / 0.5) * torch.log(torch.sigmoid(-0.5 * (lp - lr))).mean()
    assert torch.allclose(npo_loss(lp, lr, 0.5), expected)
    assert math.isclose(float(npo_loss(lp, lp, 0.1)), 20 * math.log(2), rel_tol=1e-6)
    batch = {"labels": labels, "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    assert kl_positions(batch, "sequence").tolist() == batch["attention_mask"].bool().tolist()
    assert kl_positions(batch, "answer").tolist() == [[False, True, True, True, False],
                                                      [True, True, False, False, False]]
    h = torch.randn(2, 5, 3)
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 0, 0]]).bool()
    rows = [((h[0, 1] ** 2).mean() + (h[0, 2] ** 2).mean()) / 2, (h[1, 0] ** 2).mean()]
    assert torch.allclose(masked_activation_mse(h, torch.zeros(1, 1, 3), mask), (rows[0] + rows[1]) / 2)


# ---- pairing
def test_same_batch_pairing_as_alter_phase2(tiny_tokenizer):
    run = _run("graddiff", tiny_tokenizer, epochs=2.0, batch_size=2)
    nf = len(FORGET)
    assert run.plan == phase2_plan(list(range(nf)), list(range(nf, nf + len(RETAIN))), 2, 2.0, 1.0, 0)
    assert len(run.plan) == 4
    forget_batch, retain_batch = run.batches(0)
    assert forget_batch["input_ids"].shape[0] == 2 and retain_batch["input_ids"].shape[0] == 2
    ga = _run("ga", tiny_tokenizer, epochs=2.0, batch_size=2)
    assert [[i for i in c if i < nf] for c in ga.plan] == [[i for i in c if i < nf] for c in run.plan]
    assert all(i < nf for c in ga.plan for i in c) and ga.batches(0)[1] is None


# ---- directions
@pytest.mark.parametrize("name", ["ga", "graddiff", "kl", "lora"])
def test_gradient_ascent_family_raises_forget_nll(name, tiny_tokenizer):
    run = _run(name, tiny_tokenizer, lr=2e-2 if name == "lora" else 5e-3)
    forget_batch, retain_batch = run.batches(0)
    f0 = _nll(run.model, forget_batch)
    r0 = _nll(run.model, retain_batch) if retain_batch is not None else None
    record = run.step()
    assert record["forget_nll"] == pytest.approx(f0, rel=1e-5)
    assert _nll(run.model, forget_batch) > f0 + 1e-3
    if name == "ga":
        assert retain_batch is None
    else:
        assert _nll(run.model, retain_batch) < 2 * r0
    if name == "kl":
        assert record["retain_kl"] < 1e-7


@pytest.mark.parametrize("name", ["npo", "npo_gd", "npo_kl"])
def test_npo_starts_at_2_log2_over_beta_and_lowers_forget_likelihood(name, tiny_tokenizer):
    run = _run(name, tiny_tokenizer, beta=0.1)
    forget_batch, retain_batch = run.batches(0)
    out = run.method.loss(run.model, forget_batch, retain_batch, run.reference)
    assert float(out["npo"]) == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6, abs=1e-6)
    assert float(out["log_ratio"]) == pytest.approx(0.0, abs=1e-6)
    if name == "npo_kl":
        assert float(out["retain_kl"]) < 1e-7
    if name == "npo_gd":
        assert float(out["retain_nll"]) == pytest.approx(_nll(run.model, retain_batch), rel=1e-5)
    run.model.zero_grad(set_to_none=True)
    f0 = _nll(run.model, forget_batch)
    for _ in range(2):
        record = run.step()
    assert _nll(run.model, forget_batch) > f0
    assert record["log_ratio"] < 0 and record["npo"] < 2 / 0.1 * math.log(2)


def test_random_labels_are_seeded_and_trained_toward(tiny_tokenizer):
    a0, a0_again, a1 = (random_answers(FORGET, RETAIN, s) for s in (0, 0, 1))
    assert a0 == a0_again and len(a0) == len(FORGET)
    assert all(a != ex.answer for a, ex in zip(a0, FORGET))
    assert a0 != a1 or random_answers(FORGET, RETAIN, 2) != a0
    run = _run("rl", tiny_tokenizer, lr=5e-3)
    assert [ex.answer for ex in run.forget] == a0 and all(i < len(FORGET) for c in run.plan for i in c)
    items = encode_items(tiny_tokenizer, run.forget, [1] * len(FORGET))
    batch = collate_items(items, 0)
    n0 = _nll(run.model, batch)
    for _ in range(len(run.plan)):
        run.step()
    assert _nll(run.model, batch) < n0 - 1e-3


# ---- trainable sets / reference
@pytest.mark.parametrize("name", ["kl", "npo_gd", "rmu"])
def test_reference_is_a_frozen_copy_that_never_changes(name, tiny_tokenizer):
    run = _run(name, tiny_tokenizer, layers=4)
    ref = run.reference
    assert ref.is_copy and ref.module is not run.model
    assert all(not p.requires_grad for p in ref.module.parameters()) and not ref.module.training
    before = _snapshot(ref.module)
    model_before = _snapshot(run.model)
    result = run.run()
    assert not _changed(before, ref.module)
    assert _changed(model_before, result.model)
    assert run.reference is None


def test_rmu_trains_only_the_mlp_of_layers_up_to_the_steered_one(tiny_tokenizer):
    assert (default_layer(32), default_layer(30), default_layer(2)) == (7, 7, 0)
    u = random_direction(16, 3)
    assert torch.equal(u, random_direction(16, 3)) and float(u.norm()) == pytest.approx(1.0)
    assert bool((u >= 0).all())
    run = _run("rmu", tiny_tokenizer, layers=4, lr=1e-2, epochs=3.0, layer=3)
    assert len(decoder_layers(run.model)) == 4
    assert run.method.hyperparameters()["update_layers_used"] == [1, 2, 3]
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    assert trainable == {f"model.layers.{i}.mlp.down_proj.weight" for i in (1, 2, 3)}
    before = _snapshot(run.model)
    forget_batch, retain_batch = run.batches(0)
    first = run.step()
    assert first["retain_mse"] == 0.0
    coeff = run.method.hyperparameters()["steering_coeff_used"]
    with torch.no_grad():
        h = block_output(run.reference.module, 3, forget_batch)
    mask = forget_batch["labels"] != -100
    assert coeff == pytest.approx(5.0 * float(h.norm(dim=-1)[mask].mean()), rel=1e-5)
    while run.steps_done < len(run.plan):
        run.step()
    with torch.no_grad():
        h_after = block_output(run.model, 3, forget_batch)
    target = coeff * run.method._direction.view(1, 1, -1)
    assert float(masked_activation_mse(h_after, target, mask)) < first["forget_mse"]
    assert _changed(before, run.model) == trainable
    whole_mlp = _run("rmu", tiny_tokenizer, layers=4, layer=2, params=("mlp.",), steering_coeff=3.0)
    names = {n for n, p in whole_mlp.model.named_parameters() if p.requires_grad}
    assert names == {f"model.layers.{i}.mlp.{w}_proj.weight" for i in (0, 1, 2) for w in ("gate", "up", "down")}
    assert whole_mlp.method.hyperparameters()["steering_coeff_used"] == 3.0


def test_lora_trains_only_adapters_and_saves_them(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    base = _model(tok)
    base_before = _snapshot(base)
    result = run_unlearning("lora", base, tok, FORGET, RETAIN, epochs=1.0, batch_size=2, lr=2e-2, progress=False,
                            output_dir=tmp_path)
    peft_model = result.model
    lora = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
    assert lora and result.report.trainable_parameters == sum(
        p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert any(".mlp.down_proj." in n for n in lora) and any(".self_attn.q_proj." in n for n in lora)
    assert not any("lm_head" in n for n in lora)
    assert decoder_layers(peft_model) is peft_model.get_base_model().model.layers
    for n, p in peft_model.get_base_model().named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_before[n.replace(".base_layer", "")]), n
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in peft_model.named_parameters() if "lora_B" in n)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and not (tmp_path / "model").exists()
    from peft import PeftModel
    reloaded = PeftModel.from_pretrained(_model(tok), tmp_path / "adapter")
    ids = tok(["Who is Ana?"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(reloaded(**ids).logits, peft_model(**ids).logits, atol=1e-6)


def test_lora_reference_is_the_model_with_adapters_disabled(tiny_tokenizer):
    class LoRAKL(LoRAGradDiff):
        needs_reference = True

        def loss(self, model, forget_batch, retain_batch, reference):
            out = super().loss(model, forget_batch, retain_batch, reference)
            out["ref_logits_sum"] = reference.logits(retain_batch).sum()
            return out

    tok = tiny_tokenizer
    original = _model(tok)
    run = UnlearningRun(LoRAKL(), _model(tok), tok, FORGET, RETAIN, epochs=1.0, batch_size=2, lr=2e-2,
                        progress=False)
    assert not run.reference.is_copy and run.reference.module is run.model
    for _ in range(len(run.plan)):
        run.step()
    _, retain_batch = run.batches(0)
    with torch.no_grad():
        expected = original(input_ids=retain_batch["input_ids"], attention_mask=retain_batch["attention_mask"]).logits
        adapted = run.model(input_ids=retain_batch["input_ids"], attention_mask=retain_batch["attention_mask"]).logits
    assert torch.equal(run.reference.logits(retain_batch), expected)
    assert not torch.allclose(adapted, expected)


# ---- report / saving
def test_report_log_and_saved_model(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    model = _model(tok)
    n_params = sum(p.numel() for p in model.parameters())
    result = run_unlearning("npo_kl", model, tok, FORGET, RETAIN, epochs=2.0, batch_size=2, progress=False,
                            output_dir=tmp_path)
    rep = result.report
    assert rep.method == "npo_kl" and "Zhang" in rep.citation
    assert rep.steps == 4 and len(rep.log) == 4 and [r["step"] for r in rep.log] == [1, 2, 3, 4]
    assert rep.seconds >= rep.train_seconds > 0 and rep.peak_memory_bytes > 0 and rep.peak_memory_source
    assert rep.trainable_parameters == n_params == rep.total_parameters
    hp = rep.hyperparameters
    assert (hp["beta"], hp["gamma"], hp["alpha"], hp["lr"], hp["batch_size"], hp["retain_batch_size"]) == \
        (0.1, 1.0, 1.0, 1e-5, 2, 2)
    assert (rep.forget_examples, rep.retain_examples, rep.device) == (3, 5, "cpu")
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == rep.log
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["steps"] == 4 and "log" not in saved and saved["saved_to"] == str(tmp_path / "model")
    assert all(not p.requires_grad for p in result.model.parameters()) and not result.model.training
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    ids = tok(["Who is Bo?"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded(**ids).logits, result.model(**ids).logits)


def test_finetune_and_retain_models_through_the_same_entry(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    ft = run_unlearning("finetune", _model(tok), tok, FORGET, RETAIN, epochs=2.0, batch_size=4, lr=1e-2,
                        progress=False, output_dir=tmp_path / "ft")
    assert ft.report.steps == 4 and ft.report.forget_examples == 3
    assert ft.report.trainable_parameters == sum(p.numel() for p in ft.model.parameters())
    assert (tmp_path / "ft" / "model" / "model.safetensors").is_file()
    base = _model(tok)
    probe = collate_items(encode_items(tok, FORGET + RETAIN, [0] * 8), 0)
    assert _nll(ft.model, probe) < _nll(base, probe)
    rt = run_unlearning("retain", base, tok, FORGET, RETAIN, epochs=1.0, batch_size=2, lr=1e-2, progress=False)
    assert rt.report.steps == 3 and rt.report.forget_examples == 0 and rt.report.method == "retain"
    assert rt.report.hyperparameters["warmup_ratio"] == 0.1 and rt.report.peak_memory_bytes > 0


def test_same_seed_same_result(tiny_tokenizer):
    tok = tiny_tokenizer
    runs = [run_unlearning("rl", _model(tok), tok, FORGET, RETAIN, epochs=1.0, batch_size=2, lr=5e-3, seed=3,
                           progress=False) for _ in range(2)]
    assert runs[0].report.hyperparameters["seed"] == 3
    for (n, a), (_, b) in zip(runs[0].model.named_parameters(), runs[1].model.named_parameters()):
        assert torch.equal(a, b), n


def test_task_vector_reinforces_the_forget_set_then_subtracts_that_change(tiny_tokenizer):
    """theta = theta_0 - alpha (theta_r - theta_0): alpha = -1 gives the reinforced model theta_r itself
    (forget NLL down), alpha = 1 from the same start and seed its mirror image around theta_0."""
    tok = tiny_tokenizer
    start = _snapshot(_model(tok))
    runs = {a: _run("task_vector", tok, epochs=2.0, lr=5e-3, alpha=a) for a in (-1.0, 1.0)}
    batch = runs[1.0].batches(0)[0]
    assert runs[1.0].batches(0)[1] is None                   # forget batches only
    f0 = _nll(runs[1.0].model, batch)
    models = {a: r.run().model for a, r in runs.items()}
    reinforced, negated = _snapshot(models[-1.0]), _snapshot(models[1.0])
    for name, p0 in start.items():
        torch.testing.assert_close(negated[name], 2 * p0 - reinforced[name], rtol=1e-5, atol=1e-6)
    # the reinforcement learnt the forget answers; their negation is far from it (on a 2-block toy model the
    # mirror image is not guaranteed to know them less than the start did, so that is not asserted)
    assert _nll(models[-1.0], batch) < f0 - 1e-3 and _nll(models[1.0], batch) > _nll(models[-1.0], batch) + 0.5
    assert runs[1.0].reference is None and all(not p.requires_grad for p in models[1.0].parameters())


# ---- Who's Harry Potter (without anchored terms)
def test_whp_generic_labels_are_the_argmax_of_the_formula_by_hand():
    """v_generic = v_b - alpha relu(v_r - v_b) at the position predicting each answer token; the rest untouched."""
    v_b = torch.tensor([[[3.0, 2.0, 0.0], [0.0, 1.0, 0.5], [1.0, 1.0, 4.0], [9.0, 9.0, 9.0]]])
    v_r = torch.tensor([[[3.5, 2.0, -1.0], [0.0, 1.25, 2.0], [1.0, 1.0, 3.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 7, 7, 7]])       # position t predicts labels[t+1]: answer positions 0, 1, 2
    # alpha 5: t=0: [3-5*0.5, 2, 0] = [0.5, 2, 0] -> 1 (the token the reinforcement raised loses its lead)
    #          t=1: [0, 1-5*0.25, 0.5-5*1.5] = [0, -0.25, -7] -> 0
    #          t=2: [1, 1, 4] (nothing rose) -> 2 (the start's own greedy token); t=3 predicts no answer token
    assert generic_labels(v_b, v_r, labels, 5.0).tolist() == [[-100, 1, 0, 2]]
    # alpha 1: t=0 [2.5, 2, 0] -> 0, t=1 [0, 0.75, -1] -> 1; alpha 0: the start's greedy tokens, the same here
    assert generic_labels(v_b, v_r, labels, 1.0).tolist() == [[-100, 0, 1, 2]]
    assert generic_labels(v_b, v_r, labels, 0.0).tolist() == [[-100, 0, 1, 2]]
    # random case against an explicit loop; prompt and padding (-100) positions are left as they are
    torch.manual_seed(0)
    v_b, v_r = torch.randn(2, 6, 11), torch.randn(2, 6, 11)
    labels = torch.tensor([[-100, -100, 4, 5, 6, -100], [-100, 1, 2, 3, -100, -100]])
    got = generic_labels(v_b, v_r, labels, 2.5)
    for i in range(2):
        for t in range(6):
            if t == 0 or labels[i, t] == -100:
                assert got[i, t] == labels[i, t]
            else:
                g = [float(v_b[i, t - 1, v] - 2.5 * max(0.0, float(v_r[i, t - 1, v] - v_b[i, t - 1, v])))
                     for v in range(11)]
                assert int(got[i, t]) == max(range(11), key=lambda v: g[v])


def test_whp_reinforces_a_copy_then_trains_the_start_toward_its_generic_labels(tiny_tokenizer):
    """From a model partly taught the forget answers (as WHP's real starting point knows them): the reinforced copy
    knows them better, the labels are the formula's, each step is CE on them, and the true answers end less likely."""
    tok = tiny_tokenizer
    probe = collate_items(encode_items(tok, FORGET, [1] * len(FORGET)), 0)   # the true forget answers
    model = _model(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.0)
    for _ in range(20):
        answer_nll(model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits,
                   probe["labels"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    method = resolve_method("whp", {"reinforce_lr": 5e-3, "reinforce_epochs": 3.0})
    run = UnlearningRun(method, model, tok, FORGET, RETAIN, epochs=3.0, batch_size=2, lr=3e-3, progress=False)
    assert run.reference is not None and run.reference.is_copy and not run.started
    assert torch.equal(run.batches(0)[0]["labels"], collate_items([run.items[i] for i in run.plan[0]], 0)["labels"])
    start, ref_before = _snapshot(run.model), _snapshot(run.reference.module)
    f0 = _nll(run.model, probe)

    # the reinforced model: a trained copy that makes the true forget answers more likely; the model is untouched
    forget = ForgetItems(items=run.items[:len(FORGET)], collate=run._collate, batch_size=2, seed=0,
                         weight_decay=0.0, max_grad_norm=1.0)
    reinforced = run.method.reinforce(run.model, forget)
    assert reinforced is not run.model and not _changed(start, run.model)
    assert _nll(reinforced, probe) < f0 - 0.1

    # before the first step: the forget items now carry generic labels, computed once from that same reinforcement
    run.start()
    assert not _changed(start, run.model) and not _changed(ref_before, run.reference.module)
    with torch.no_grad():
        v_b = run.reference.module(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
        v_r = reinforced(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    expected = generic_labels(v_b, v_r, probe["labels"], 5.0)
    relabelled = collate_items(run.items[:len(FORGET)], 0)
    assert torch.equal(relabelled["labels"], expected) and torch.equal(relabelled["input_ids"], probe["input_ids"])
    hp = run.method.hyperparameters()
    assert hp["forget_nll_start"] == pytest.approx(f0, rel=1e-4)
    assert hp["forget_nll_reinforced"] == pytest.approx(_nll(reinforced, probe), rel=1e-4)
    answer = probe["labels"][:, 1:] != -100
    changed = float((expected[:, 1:] != probe["labels"][:, 1:])[answer].float().mean())
    assert hp["generic_labels_changed"] == pytest.approx(changed) and 0.2 < changed < 1.0
    assert all(i < len(FORGET) for chunk in run.plan for i in chunk)    # forget batches only

    # the fine-tune: each step is cross-entropy on the generic labels; they are learnt, and the true forget
    # answers end less likely than at the start; the reference never changes
    g0 = _nll(run.model, relabelled)
    first_batch, ref_module = run.batches(0)[0], run.reference.module
    assert torch.equal(first_batch["labels"], collate_items([run.items[i] for i in run.plan[0]], 0)["labels"])
    expected_first = _nll(run.model, first_batch)
    assert run.step()["generic_nll"] == pytest.approx(expected_first, rel=1e-5)
    result = run.run()
    assert _nll(result.model, relabelled) < g0 - 0.5
    assert _nll(result.model, probe) > f0 + 0.3
    assert not _changed(ref_before, ref_module)
    rep = result.report
    assert rep.hyperparameters["reinforce_steps_used"] == 6 and rep.hyperparameters["alpha"] == 5.0
    assert rep.train_seconds > 0 and rep.steps == len(run.plan) and run.reference is None


@pytest.mark.parametrize("kwargs,field", [({"alpha": -0.5}, "alpha"), ({"reinforce_epochs": 0}, "reinforce_epochs"),
                                          ({"reinforce_epochs": -1.0}, "reinforce_epochs"),
                                          ({"reinforce_lr": 0.0}, "reinforce_lr"),
                                          ({"reinforce_lr": -1e-5}, "reinforce_lr"),
                                          ({"reinforce_lr": float("nan")}, "reinforce_lr")])
def test_whp_bad_hyperparameters_name_the_field(kwargs, field, tiny_tokenizer):
    with pytest.raises(ValueError, match=f"whp: {field} must be"):
        resolve_method("whp", kwargs)
    with pytest.raises(ValueError, match=f"whp: {field} must be"):
        run_unlearning("whp", _model(tiny_tokenizer), tiny_tokenizer, FORGET, RETAIN, method_kwargs=kwargs,
                       progress=False)

