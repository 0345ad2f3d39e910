"""No host syncs in ``AlterLinear.forward`` / backward or in a forward + backward of the wrapped model
with the question router's routing (what inference and phase II run); see tests/sync_guard.py."""

import pytest
import torch

import alter
import alter_kernels
from alter.layer import AlterLinear
from alter.question_router import QuestionRouter
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
