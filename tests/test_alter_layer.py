"""AlterLinear: exactness at init, routing by entropy and by domain, expert management, errors."""

import pytest
import torch
from torch import nn

import alter_kernels
from alter import AlterLinear
from alter.modeling.routing_state import RoutingState
from tests.conftest import devices


def _layer(d_in=12, d_out=10, experts=3, dtype=torch.float32, device="cpu", theta=0.5, bias=True):
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out, bias=bias).to(device=device, dtype=dtype)
    return AlterLinear(base, r=4, alpha=8, num_forget_experts=experts - 1, theta=theta)


def _randomise(layer, std=0.3):
    with torch.no_grad():
        for p in list(layer.lora_B) + list(layer.router):
            p.normal_(0, std)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_initialised_experts_return_the_base_output_exactly(device, dtype):
    layer = _layer(dtype=dtype, device=device)
    x = torch.randn(2, 5, 12, device=device, dtype=dtype)
    ent = torch.rand(2, 5, device=device)
    expected = layer.base_layer(x)
    assert torch.equal(layer(x), expected)
    assert torch.equal(layer(x, entropy=ent), expected)
    assert torch.equal(layer(x, entropy=ent, domain=torch.tensor([0, 2], device=device)), expected)
    assert layer(x).dtype == dtype


def test_inference_matches_the_reference_routing_and_matmul():
    layer = _layer()
    _randomise(layer)
    x = torch.randn(3, 4, 12)
    ent = torch.tensor([[float("inf"), 0.1, 0.9, 0.2]] * 3)
    out = layer(x, entropy=ent)
    x2 = x.reshape(-1, 12)
    u = x2 @ layer.router_weight().t()
    gates = alter_kernels.reference.route_reference(ent.reshape(-1), u, 0.5, tau_high=2.0, tau_low=0.5, top_k=3)
    delta = alter_kernels.reference.asym_lora_reference(x2, layer.lora_A, layer.stacked_experts(), gates, 2.0)
    torch.testing.assert_close(out.reshape(-1, 10), layer.base_layer(x2) + delta, rtol=1e-5, atol=1e-5)


def test_low_entropy_tokens_use_exactly_one_expert():
    layer = _layer(experts=4)
    _randomise(layer)
    x = torch.randn(6, 12)
    ent = torch.zeros(6)                                   # every token below theta
    u = x @ layer.router_weight().t()
    chosen = u.argmax(-1)
    out = layer(x, entropy=ent)
    A, B = layer.lora_A, layer.stacked_experts()
    for n in range(6):
        single = layer.base_layer(x[n]) + layer.scaling * B[chosen[n]] @ (A @ x[n])
        torch.testing.assert_close(out[n], single, rtol=1e-5, atol=1e-5)


def test_entropy_none_treats_every_token_as_high():
    layer = _layer(experts=3)
    _randomise(layer)
    x = torch.randn(5, 12)
    assert torch.allclose(layer(x), layer(x, entropy=torch.full((5,), 1e9)))


def test_training_routes_each_row_to_its_domain_expert_and_isolates_gradients():
    layer = _layer(experts=3)
    _randomise(layer)
    x = torch.randn(2, 3, 12)
    ent = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1]])    # theta 0.5: one high token per row
    domain = torch.tensor([0, 2])
    out = layer(x, entropy=ent, domain=domain)
    out.pow(2).sum().backward()
    assert layer.lora_B[1].grad is not None and torch.count_nonzero(layer.lora_B[1].grad) == 0
    assert torch.count_nonzero(layer.lora_B[0].grad) > 0 and torch.count_nonzero(layer.lora_B[2].grad) > 0
    # A's gradient equals the one from the high-entropy tokens alone
    a_grad = layer.lora_A.grad.clone()
    layer.zero_grad()
    high = (ent >= 0.5).reshape(-1)
    x2 = x.reshape(-1, 12)
    gates = torch.nn.functional.one_hot(domain.repeat_interleave(3), 3).float()
    ref = alter_kernels.reference.asym_lora_reference(x2, layer.lora_A, layer.stacked_experts(), gates, 2.0,
                                                      a_grad_mask=high)
    (layer.base_layer(x2) + ref).pow(2).sum().backward()
    torch.testing.assert_close(a_grad, layer.lora_A.grad, rtol=1e-5, atol=1e-6)


def test_soft_training_gates_must_sum_to_one():
    layer = _layer(experts=2)
    x = torch.randn(4, 12)
    with pytest.raises(ValueError, match="sum to 1"):
        layer(x, domain=torch.tensor([[0.5, 0.4]] * 4))
    ok = layer(x, domain=torch.tensor([[0.25, 0.75]] * 4))
    assert ok.shape == (4, 10)


def test_bad_input_is_reported_clearly():
    layer = _layer(experts=2)
    with pytest.raises(ValueError, match="last dimension 12"):
        layer(torch.randn(3, 11))
    with pytest.raises(ValueError, match="domain indices"):
        layer(torch.randn(3, 12), domain=torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="does not match"):
        layer(torch.randn(3, 12), entropy=torch.rand(4))
    unset = AlterLinear(nn.Linear(12, 10), num_forget_experts=1)
    with pytest.raises(ValueError, match="theta is not set"):
        unset(torch.randn(3, 12), entropy=torch.rand(3))
    with pytest.raises(TypeError, match="nn.Linear"):
        AlterLinear(nn.Conv1d(3, 3, 1))
    with pytest.raises(ValueError, match="r must be"):
        AlterLinear(nn.Linear(4, 4), r=0)


def test_add_and_remove_forget_experts_keep_other_parameters():
    layer = _layer(experts=2)
    _randomise(layer)
    kept = [p.clone() for p in layer.lora_B]
    idx = layer.add_forget_expert()
    assert idx == 2 and layer.num_experts == 3
    assert torch.count_nonzero(layer.lora_B[2]) == 0 and torch.count_nonzero(layer.router[2]) == 0
    layer.remove_forget_expert(1)
    assert layer.num_experts == 2
    assert torch.equal(layer.lora_B[0], kept[0])
    with pytest.raises(ValueError, match="retain expert"):
        layer.remove_forget_expert(0)


def test_merge_is_refused_with_a_reason():
    layer = _layer()
    with pytest.raises(NotImplementedError, match="per token"):
        layer.merge()
    with pytest.raises(NotImplementedError):
        layer.unmerge()


def test_router_loss_is_collected_on_low_entropy_tokens_only():
    layer = _layer(experts=3)
    state = RoutingState(theta=0.5, collect_route_loss=True)
    layer.state = state
    x = torch.randn(2, 4, 12)
    ent = torch.tensor([[0.9, 0.1, 0.1, 0.9], [0.1, 0.1, 0.1, 0.1]])
    layer(x, entropy=ent, domain=torch.tensor([1, 2]))
    loss = state.pop_route_loss()
    assert loss is not None and loss.requires_grad
    loss.backward()
    assert layer.router[0].grad is not None
    assert layer.lora_A.grad is None                       # features are detached: only the router learns
    assert state.route_losses == []


def test_inference_caches_follow_every_change_of_an_expert():
    """The stacked experts and the zero-expert flags kept at inference are rebuilt when an expert changes
    in place (an optimizer step, a loaded adapter), is added or removed."""
    layer = AlterLinear(torch.nn.Linear(6, 5), r=2, num_forget_experts=1, theta=0.5)
    with torch.no_grad():
        first = layer.stacked_experts()
        assert layer._zero_experts() == [True, True]
        layer.lora_B[1].add_(1.0)                                  # in place: the version moves
        assert torch.equal(layer.stacked_experts()[1], torch.ones(5, 2)) and not torch.equal(first[1], torch.ones(5, 2))
        assert layer._zero_experts() == [True, False]
        k = layer.add_forget_expert()
        assert layer.stacked_experts().shape[0] == 3 and layer._zero_experts() == [True, False, True]
        layer.remove_forget_expert(k)
        assert layer.stacked_experts().shape[0] == 2


def test_the_inference_path_gives_the_training_path_s_output():
    """At inference the layer takes its cached expand layout (``alter_linear_inference``); the
    output equals the autograd path's, before and after an in-place change of an expert."""
    torch.manual_seed(0)
    layer = AlterLinear(torch.nn.Linear(6, 5), r=2, num_forget_experts=2, theta=0.5)
    with torch.no_grad():
        for p in layer.lora_B:
            p.normal_()
        for p in layer.router:
            p.normal_()
    x, ent = torch.randn(2, 4, 6), torch.rand(2, 4)
    for _ in range(2):
        with torch.no_grad():
            fast = layer(x, entropy=ent)
        torch.testing.assert_close(fast, layer(x, entropy=ent).detach())
        with torch.no_grad():
            layer.lora_B[2].mul_(-3.0)
