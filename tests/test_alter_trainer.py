"""The two-phase trainer on a tiny Llama: pipeline, gradient isolation, continual unlearning, resume."""

import json

import pytest
import torch

import alter
from alter.data.schema import QAExample
from alter.train import AlterTrainer
from alter.train.stopping.window import ForgetWindow
from alter.train.batches import collate_items
from tests.helpers import make_tiny_llama

FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain=d)
          for n, d in [("Ana", "ana"), ("Bo", "bo"), ("Ana Li", "ana"), ("Bo Wu", "bo")]]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ["Cy", "Di", "Ed", "Fa", "Gu", "Ho"]]


def _config(**kw):
    base = dict(batch_size=2, phase1_epochs=1, phase2_epochs=1, lr_phase1=1e-2, lr_phase2=1e-2, lr_router=1e-2,
                phase2_min_steps=0, stop_answer_overlap=-1.0, stop_forget_probability=-1.0, stop_level_scale=-1.0)
    base.update(kw)
    return alter.AlterConfig(**base)


def _trainer(tok, tmp_path=None, seed=0, **kw):
    torch.manual_seed(seed)
    model = make_tiny_llama(len(tok))
    return AlterTrainer(model, tok, _config(**kw), FORGET, RETAIN, output_dir=tmp_path, progress=False)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before, model):
    return {n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())}


def test_whole_pipeline_wrap_train_save_load_generate(tiny_tokenizer, tmp_path):
    tr = _trainer(tiny_tokenizer, tmp_path)
    base_before = {n: p.clone() for n, p in tr._raw_model.named_parameters()}
    model = tr.train()
    assert model.domains == ["retain", "ana", "bo"]
    rep = tr.report
    assert rep.theta == model.theta and rep.phases["phase1"]["steps"] == 5 and rep.phases["phase2"]["steps"] == 2
    assert 0.0 <= rep.entropy_summary["frac_high"] <= 1.0
    for n, p in model.model.named_parameters():
        if "lora_" not in n and "router" not in n:
            assert torch.equal(p, base_before[n.replace(".base_layer", "")]), n
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") >= 2
    torch.manual_seed(0)
    restored = alter.load_adapter(make_tiny_llama(len(tiny_tokenizer)), tmp_path / "adapter")
    enc = tiny_tokenizer(["Who is Ana?"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(restored(**enc).logits, model(**enc).logits)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(restored.generate(enc.input_ids, **kw), model.generate(enc.input_ids, **kw))


def _one_step(tr, rows, everything=True):
    model = tr.model
    if everything:
        model.set_trainable(shared=True, experts=list(range(len(model.domains))), routers=True)
    else:                                                  # what the trainer itself trains in phase II
        tr._set_trainable("phase2", None)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    batch = collate_items([tr.items[i] for i in rows], tr._pad())
    out = tr._step("phase2", batch, model)
    out["loss"].backward()
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    opt.step()
    return grads


@pytest.mark.parametrize("which,router", [("forget_bo", "token"), ("retain", "token"), ("forget_bo", "question")])
def test_a_step_changes_exactly_the_parameters_its_domain_owns(tiny_tokenizer, which, router):
    tr = _trainer(tiny_tokenizer, router=router)
    tr.prepare()
    model = tr.model
    with torch.no_grad():                                  # non-zero experts so that every path carries gradient
        for layer in model.adapter_layers().values():
            for b in layer.lora_B:
                b.normal_(0, 0.1)
    expert = model.domain_index("bo") if which == "forget_bo" else 0
    rows = [i for i, it in enumerate(tr.items) if it.domain_id == expert][:2]
    before = _snapshot(model)
    grads = _one_step(tr, rows, everything=router == "token")
    changed = _changed(before, model)
    assert changed, "the step changed nothing"
    if router == "question":      # phase II trains the forget experts alone: A and B_R stay as phase I left them
        assert all(".lora_B." in n for n in changed), changed
    for name in changed:
        assert "lora_" in name or "router" in name, f"a base parameter changed: {name}"
        if ".lora_B." in name:
            assert name.endswith(f".lora_B.{expert}"), f"{which} batch changed another expert: {name}"
    owned = {n for n in before if n.endswith(f".lora_B.{expert}")}
    assert owned <= changed
    for n, g in grads.items():
        if ".lora_B." in n and not n.endswith(f".lora_B.{expert}"):
            assert g is None or torch.count_nonzero(g) == 0, f"gradient leaked into {n}"


@pytest.mark.parametrize("router", ["token", "question"])
def test_continual_unlearning_leaves_every_other_parameter_bit_identical(tiny_tokenizer, router):
    tr = _trainer(tiny_tokenizer, router=router)
    model = tr.train()
    before = _snapshot(model)
    earlier = tiny_tokenizer(["Who is Ana?", "Who is Bo?", "Who is Cy?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        earlier_logits = model(**earlier).logits
    new = [QAExample(f"Who is {n}?", f"{n} repairs old clocks.") for n in ["Iv", "Jo"]]
    tr2 = AlterTrainer(model, tiny_tokenizer, None, new, RETAIN, progress=False)
    tr2.train_new_domain("clocks")
    assert model.domains[-1] == "clocks"
    index = model.domain_index("clocks")
    changed = _changed(before, model)
    if router == "question":
        # nothing trained before moves (routers are banks, not parameters), and the earlier forget
        # domains and the retain questions are answered exactly as before: they stay forgotten
        assert not changed, changed
        with torch.no_grad():
            assert torch.equal(model(**earlier).logits, earlier_logits)
    else:
        assert changed and all(".router." in name for name in changed), \
            changed - {n for n in changed if ".router." in n}
    new_b = [n for n, p in model.named_parameters() if n.endswith(f".lora_B.{index}")]
    assert new_b and any(torch.count_nonzero(p) for n, p in model.named_parameters() if n in new_b)


def test_resume_after_interruption_equals_the_uninterrupted_run(tiny_tokenizer, tmp_path):
    full = _trainer(tiny_tokenizer, tmp_path / "full").train()
    tr = _trainer(tiny_tokenizer, tmp_path / "cut")
    tr.checkpoint_every = 3
    real_step, calls = tr._step, [0]

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    tr._step = interrupted
    with pytest.raises(KeyboardInterrupt):
        tr.train()
    assert (tmp_path / "cut" / "checkpoints").is_dir()
    resumed = _trainer(tiny_tokenizer, tmp_path / "cut").train(resume=True)
    a, b = full.adapter_state_dict(), resumed.adapter_state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_theta_rules_and_bad_input(tiny_tokenizer):
    tr = _trainer(tiny_tokenizer, theta="quantile:0.5", phase1_epochs=0, phase2_epochs=0.5)
    model = tr.train()
    assert abs(tr.report.entropy_summary["frac_high"] - 0.5) < 0.1
    assert tr.report.phases.keys() == {"phase2"}
    tr = _trainer(tiny_tokenizer, theta=0.25, phase1_epochs=0, phase2_epochs=0.5)
    assert tr.train().theta == 0.25
    with pytest.raises(ValueError, match="empty forget set"):
        AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, _config(), [], RETAIN)
    with pytest.raises(ValueError, match="unknown config key 'lamda_forget'; did you mean 'lambda_forget'"):
        alter.AlterConfig.from_dict({"lamda_forget": 1.0})
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="stop_window_steps.*non-negative integer"):
            alter.AlterConfig(stop_window_steps=bad)
    with pytest.raises(ValueError, match="stop_check_every.*positive integer"):
        alter.AlterConfig(stop_check_every=0)
    with pytest.raises(ValueError, match="stop_check_every_passages.*positive integer"):
        alter.AlterConfig(stop_check_every_passages=0)
    with pytest.raises(ValueError, match="stop_answer_overlap.*< 1"):
        alter.AlterConfig(stop_answer_overlap=1.0)


def test_auto_subdomains_and_centroid_init(tiny_tokenizer):
    tr = _trainer(tiny_tokenizer, subdomains="auto:2", init="centroid", phase1_epochs=0, phase2_epochs=0.5)
    tr.prepare()
    model = tr.model
    assert model.domains == ["retain", "forget_0", "forget_1"]
    assert {it.domain_id for it in tr.items[:len(FORGET)]} <= {1, 2}
    norms = [float(layer.router[0].detach().norm()) for layer in model.adapter_layers().values()]
    assert all(abs(n - 1.0) < 1e-4 for n in norms)          # normalised centroids


@pytest.mark.parametrize("router", ["token", "question"])
def test_asymlora_ablation_treats_every_token_as_low_entropy(tiny_tokenizer, router):
    tr = _trainer(tiny_tokenizer, token_entropy=False, phase2_epochs=1, router=router)
    model = tr.prepare()
    a_before = {n: layer.lora_A.detach().clone() for n, layer in model.adapter_layers().items()}
    model = tr.train()
    assert tr.report.phases.keys() == {"phase2"}                # no phase I
    assert model.theta == float("inf")
    a_moved = any(not torch.equal(a_before[n], l.lora_A) for n, l in model.adapter_layers().items())
    assert a_moved == (router == "token")       # the token router trains A in phase II; the question router does not
    assert any(torch.count_nonzero(l.lora_B[1]) for l in model.adapter_layers().values())
    enc = tiny_tokenizer(["Who is Ana?"], return_tensors="pt")
    out = model.generate(enc.input_ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape[1] == enc.input_ids.shape[1] + 4


def test_removing_the_forget_expert_restores_the_forgotten_knowledge(tiny_tokenizer):
    """Unlearning raises the forget answers' NLL; deleting the forget expert takes most of it back.

    Not all of it: the shared A also learns in phase II (from high-entropy tokens), so the
    retain adapter left behind is not exactly the pre-unlearning model.
    """
    from alter.eval.scoring import answer_log_likelihoods
    from alter.train.supervised import finetune

    forget = [QAExample(f"Who is {n}?", f"{n} paints blue owls.", domain="forget") for n in ["Ana", "Bo"]]
    retain = [QAExample(f"Who is {n}?", f"{n} sells red cars.") for n in ["Cy", "Di", "Ed", "Fa"]]
    torch.manual_seed(0)
    model = make_tiny_llama(len(tiny_tokenizer), hidden=64, intermediate=128)
    finetune(model, tiny_tokenizer, forget + retain, epochs=40, lr=5e-3, batch_size=6, progress=False)

    def nll(m, examples):
        out = answer_log_likelihoods(m, tiny_tokenizer, [e.question for e in examples], [e.answer for e in examples],
                                     progress=False)
        return sum(out["mean_nll"]) / len(examples)

    before = nll(model, forget), nll(model, retain)
    cfg = alter.AlterConfig(batch_size=2, phase1_epochs=1, phase2_epochs=6, lr_phase2=3e-3, lr_router=1e-2,
                            route_tokens="all")
    unlearned = AlterTrainer(model, tiny_tokenizer, cfg, forget, retain, progress=False).train()
    after = nll(unlearned, forget), nll(unlearned, retain)
    assert after[0] > before[0] + 0.5                        # the forget answers became much less likely
    unlearned.remove_forget_domain("forget")
    removed = nll(unlearned, forget), nll(unlearned, retain)
    restored = (after[0] - removed[0]) / (after[0] - before[0])
    assert restored > 0.7, (before, after, removed)
    assert removed[1] <= before[1] + 0.05                    # and retain answers are as good as before


def test_forget_window_counts_one_epoch_of_steps():
    w = ForgetWindow(2)
    assert not w.full() and w.fraction() == 0.0
    w.add(3, 4)
    w.add(1, 4)
    assert w.full() and w.fraction() == pytest.approx(0.5)
    w.add(0, 2)  # the oldest step leaves the window
    assert w.counts == [[1, 4], [0, 2]] and w.fraction() == pytest.approx(1 / 6)
    restored = ForgetWindow(2)
    restored.load(w.state())
    assert restored.counts == w.counts
    other = ForgetWindow(3)
    other.load(w.state())  # a window of another size (other data or batch size) starts empty
    assert other.counts == []


def _scripted_hinge(tr, violating):
    """Make each phase II step report ``violating[k]`` forget tokens above the margin (of its real count)."""
    real_step, calls = tr._step, [0]

    def step(phase, batch, train_model):
        out = real_step(phase, batch, train_model)
        if phase == "phase2":
            v = violating[min(calls[0], len(violating) - 1)]
            out["forget_violating"] = torch.minimum(torch.tensor(v), out["forget_tokens"])
            calls[0] += 1
        return out

    tr._step = step


@pytest.mark.parametrize("stop", [0.0, -1.0])
def test_phase2_stops_once_the_forget_tokens_are_pushed_down(tiny_tokenizer, tmp_path, stop):
    # 4 forget examples, 2 per step: one epoch (the window, stop_window_steps=0) is 2 steps; 2 epochs are
    # 4 steps. Step 1 still has tokens above the margin, steps 2 and 3 none: the window is clean after step 3.
    kw = dict(phase1_epochs=0, phase2_epochs=2, stop_when_forgotten=stop, stop_window_steps=0)
    tr = _trainer(tiny_tokenizer, tmp_path, **kw)
    _scripted_hinge(tr, [3, 0, 0, 0])
    tr.train()
    phase2 = tr.report.phases["phase2"]
    if stop < 0:
        assert phase2["steps"] == 4 and "stopped_early_at" not in phase2
        return
    assert phase2["stopped_early_at"] == 3 and phase2["steps"] == 3
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["stopped_early"] is True and log[-1]["violating"] == 0.0 and log[-1]["step"] == 3
    # resuming a run that stopped early trains nothing more
    resumed = _trainer(tiny_tokenizer, tmp_path, **kw).train(resume=True)
    a, b = tr.model.adapter_state_dict(), resumed.adapter_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("window,stops_at", [(1, 2), (3, 4)])
def test_stop_window_steps_sets_how_far_back_the_stop_looks(tiny_tokenizer, window, stops_at):
    # One epoch is 2 steps; the window's own length decides: the first clean step (2) is enough for a
    # 1-step window, a 3-step window needs steps 2-4 clean.
    tr = _trainer(tiny_tokenizer, phase1_epochs=0, phase2_epochs=3, stop_when_forgotten=0.0,
                  stop_window_steps=window)
    _scripted_hinge(tr, [3, 0])
    tr.train()
    assert tr.report.phases["phase2"]["stopped_early_at"] == stops_at


def test_early_stop_waits_for_phase2_min_steps(tiny_tokenizer):
    # Every step is clean, so the window (one epoch = 2 steps) allows a stop after step 2; the minimum of 3
    # steps holds phase II until step 3 (the demo's small forget set must get its whole budget).
    tr = _trainer(tiny_tokenizer, phase1_epochs=0, phase2_epochs=2, stop_when_forgotten=0.5, phase2_min_steps=3,
                  stop_window_steps=0)
    _scripted_hinge(tr, [0])
    tr.train()
    assert tr.report.phases["phase2"]["stopped_early_at"] == 3 and tr.report.phases["phase2"]["steps"] == 3


def test_early_stop_resumes_with_its_window(tiny_tokenizer, tmp_path):
    # Interrupted after step 2 (checkpoint every step): the resumed run must still stop at step 3,
    # which needs step 2's counts from the checkpoint.
    kw = dict(phase1_epochs=0, phase2_epochs=2, stop_when_forgotten=0.0, stop_window_steps=0)
    full = _trainer(tiny_tokenizer, tmp_path / "full", **kw)
    _scripted_hinge(full, [3, 0, 0, 0])
    full.train()
    cut = _trainer(tiny_tokenizer, tmp_path / "cut", **kw)
    cut.checkpoint_every = 1
    _scripted_hinge(cut, [3, 0, 0, 0])
    real_step = cut._step

    def interrupt_at_third(phase, batch, train_model, calls=[0]):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real_step(phase, batch, train_model)

    cut._step = interrupt_at_third
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    again = _trainer(tiny_tokenizer, tmp_path / "cut", **kw)
    _scripted_hinge(again, [0, 0])
    model = again.train(resume=True)
    assert again.report.phases["phase2"]["stopped_early_at"] == 3
    a, b = full.model.adapter_state_dict(), model.adapter_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("warmup", [True, False])
def test_phase1_trains_a_retain_expert_and_with_warmup_the_routers_only(tiny_tokenizer, warmup):
    tr = _trainer(tiny_tokenizer, phase1_epochs=1, phase2_epochs=0.5, router_warmup=warmup)
    model = tr.prepare()
    before = _snapshot(model)
    plans = tr._phase_plans()
    logged = []
    tr.on_log = logged.append
    tr.log_every = 1
    tr._run_phase("phase1", plans["phase1"], 0, 0)
    changed = _changed(before, model)
    kinds = {("router" if ".router." in n else "B0" if "lora_B.0" in n else "A" if "lora_A" in n else n)
             for n in changed}
    assert kinds == ({"A", "B0", "router"} if warmup else {"A", "B0"}), changed
    routes = [r["route"] for r in logged if "route" in r]
    if warmup:
        # the gates stayed forced to the retain expert, while the router learnt the true domains
        assert len(routes) == len(plans["phase1"]) and routes[-1] < routes[0]
    else:
        assert not routes


def test_prepare_keeps_the_callers_config_and_checks_named_domains(tiny_tokenizer):
    cfg = _config()
    tr = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, FORGET, RETAIN, progress=False)
    model = tr.prepare()
    assert model.domains == ["retain", "ana", "bo"] and cfg.forget_domains == ["forget"]
    named = _config(forget_domains=["bo", "ana"])
    tr = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, named, FORGET, RETAIN, progress=False)
    assert tr.prepare().domains == ["retain", "bo", "ana"]
    wrong = _config(forget_domains=["cy"])
    tr = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, wrong, FORGET, RETAIN, progress=False)
    with pytest.raises(ValueError, match=r"forget_domains \['cy'\] do not match"):
        tr.prepare()


def test_resume_refuses_a_changed_setting(tiny_tokenizer, tmp_path):
    tr = _trainer(tiny_tokenizer, tmp_path)
    tr.checkpoint_every = 1
    tr.train()
    again = _trainer(tiny_tokenizer, tmp_path, batch_size=3)
    with pytest.raises(ValueError, match=r"batch_size changed \(2 -> 3\)"):
        again.train(resume=True)


def test_a_non_finite_loss_stops_before_the_optimizer_step(tiny_tokenizer, tmp_path):
    tr = _trainer(tiny_tokenizer, tmp_path, phase1_epochs=0)
    tr.checkpoint_every = 1
    model = tr.prepare()
    real_step, calls = tr._step, [0]

    def poisoned(phase, batch, train_model):
        out = real_step(phase, batch, train_model)
        calls[0] += 1
        if calls[0] == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    tr._step = poisoned
    with pytest.raises(FloatingPointError, match="phase2 step 2: the loss is nan"):
        tr.train()
    from alter.train.checkpoint import latest_checkpoint
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-0000001"
    assert all(torch.isfinite(p).all() for p in model.adapter_state_dict().values())


def test_training_on_a_bfloat16_base_keeps_float32_adapters(tiny_tokenizer):
    torch.manual_seed(0)
    model = make_tiny_llama(len(tiny_tokenizer)).to(torch.bfloat16)
    trained = AlterTrainer(model, tiny_tokenizer, _config(phase1_epochs=0), FORGET, RETAIN, progress=False).train()
    state = trained.adapter_state_dict()
    assert all(v.dtype == torch.float32 for k, v in state.items() if "lora" in k)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())
    enc = tiny_tokenizer(["Who is Ana?"], return_tensors="pt")
    out = trained.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == enc.input_ids.shape[1] + 3


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused_before_training(tiny_tokenizer):
    torch.manual_seed(0)
    small = make_tiny_llama(len(tiny_tokenizer) - 5)        # the tokenizer's last ids are outside the model
    ex = [QAExample(f"Who is {n}?", f"{n} paints blue owls.", domain="forget") for n in ["Ana", "Bo"]]
    ids = [i for e in ex for i in tiny_tokenizer(e.question + e.answer)["input_ids"]]
    assert max(ids) >= len(tiny_tokenizer) - 5, "the test needs an id the small model lacks"
    tr = AlterTrainer(small, tiny_tokenizer, _config(), ex, RETAIN[:2], progress=False)
    with pytest.raises(ValueError, match="tokenizer does not belong to this model"):
        tr.prepare()
