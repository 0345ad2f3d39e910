"""No host syncs in ``AlterLinear.forward`` / backward or in a forward + backward of the wrapped model
with the question router's routing (what inference and phase II run); see tests/sync_guard.py."""

import pytest
import torch

import alter
import alter_kernels
from alter.modeling.layer import AlterLinear
from alter.modeling.question_router import QuestionRouter
from tests.helpers import make_tiny_llama, make_tiny_tokenizer
from tests.sync_guard import HostSync, no_host_sync


def test_the_guard_catches_a_sync_in_our_code():
    x = torch.ones(3)
    with no_host_sync():
        assert bool(x.sum() > 0)                              # a test file is not ALTER's code: allowed
        with pytest.raises(HostSync, match="item"):
            alter_kernels.hinge_forget_loss(torch.randn(2, 5), torch.tensor([9, 1]))   # validation syncs


@pytest.mark.parametrize("with_entropy", [True, False])
def test_alter_linear_forward_and_backward_make_no_host_sync(with_entropy):
    torch.manual_seed(0)
    layer = AlterLinear(torch.nn.Linear(16, 12), r=4, num_forget_experts=2, theta=0.5)
    with torch.no_grad():
        for p in layer.lora_B:
            p.normal_()
    x = torch.randn(2, 5, 16, requires_grad=True)
    ent = torch.rand(2, 5) if with_entropy else None
    u = torch.randn(2, 3)
    with no_host_sync():
        out = layer(x, entropy=ent, router_logits=u)
        out.square().mean().backward()
        out2 = layer(x, entropy=ent)                          # the layer's own router
    assert out.shape == (2, 5, 12) and x.grad is not None and out2.shape == out.shape


def test_wrapped_model_step_with_question_routing_makes_no_host_sync():
    torch.manual_seed(0)
    tok = make_tiny_tokenizer()
    w = alter.wrap(make_tiny_llama(len(tok)), alter.AlterConfig(forget_domains=["a", "b"]), theta=1.0)
    for p in w.parameters():
        p.requires_grad_(False)
    for layer in w.adapter_layers().values():
        for p in layer.lora_B:
            torch.nn.init.normal_(p, 0, 0.1)
            p.requires_grad_(True)
    enc = tok(["who is ana", "the red car was sold"], return_tensors="pt", padding=True)
    ent = w.token_entropy(enc.input_ids, enc.attention_mask)          # the step's base pass (before)
    u = QuestionRouter.forced_logits(torch.tensor([1, 2]), torch.tensor([1.0, 2.0]), 3)
    with no_host_sync():
        out = w(enc.input_ids, attention_mask=enc.attention_mask, entropy=ent, router_logits=u)
        out.logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None for layer in w.adapter_layers().values() for p in layer.lora_B[1:])


@pytest.mark.parametrize("rules", [{}, {"stop_when_forgotten": 0.0}])
def test_each_training_step_makes_one_host_transfer_and_no_other_sync(tiny_tokenizer, monkeypatch, rules):
    # the whole phase I and phase II loops (forward, losses, backward, optimizer, stop rules, logging) under
    # the guard, at the defaults (question router, top-k KL, probability stop) and with the hinge-count stop;
    # the one place allowed to read the device is the step's single batched transfer
    from alter.train import trainer as trainer_module
    from tests.test_answer_stop import _trainer

    tr = _trainer(tiny_tokenizer, phase1_epochs=1, stop_forget_probability=0.05, **rules)
    model = tr.prepare()
    plans = tr._phase_plans()
    assert all(it.kl_targets is not None for it in tr.items)     # made by prepare's base pass, before phase II
    calls = []
    real = trainer_module.step_values
    monkeypatch.setattr(trainer_module, "step_values", lambda out, acc=None: calls.append(1) or real(out, acc))
    forget_b = [layer.lora_B[1] for layer in model.adapter_layers().values()]
    before = [b.detach().clone() for b in forget_b]
    with no_host_sync(allow=["alter/train/step_values.py"]):
        tr._run_phase("phase1", plans["phase1"], 0, 0)
        tr._run_phase("phase2", plans["phase2"], 0, 0)
    steps = len(plans["phase1"]) + tr.report.phases["phase2"]["steps"]
    assert len(calls) == steps and tr.report.phases["phase2"]["steps"] > 0
    assert any(not torch.equal(b, b0) for b, b0 in zip(forget_b, before))     # phase II trained the forget expert
