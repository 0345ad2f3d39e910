"""The C++ routing kernel against the PyTorch reference (docs/method.md §1 and §3)."""

from __future__ import annotations


import pytest
import torch

import alter_kernels as ak
from alter_kernels.cpu.routing import route_cpp
from alter_kernels.reference import route_reference
from tests.kernels.cpp_common import DTYPES


def route_inputs(n, e, router_dtype, entropy_dtype, seed):
    """Entropies around theta = 1 (with +inf and exact-threshold rows) and tie-free router logits."""
    g = torch.Generator().manual_seed(seed)
    entropy = (torch.rand(n, generator=g, dtype=torch.float64) * 2).to(entropy_dtype)
    entropy[0] = float("inf")
    entropy[1 % n] = 1.0
    u = (torch.argsort(torch.rand(n, e, generator=g), dim=1).float() - e / 2) * 0.75
    return entropy, u.to(router_dtype)


ROUTE_CASES = [  # (E, top_k, retain_index)
    (1, 3, 0), (2, 0, 0), (2, 1, 1), (4, 3, 0), (4, 5, 2), (5, 0, 4), (9, 3, 0), (9, 3, 8), (16, 3, 7),
    (16, 15, 0), (16, 1, 15),
]


@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: f"E{c[0]}-k{c[1]}-r{c[2]}")
@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("router_dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_route_matches_reference(case, mode, router_dtype):
    E, top_k, retain = case
    for entropy_dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        entropy, u = route_inputs(37, E, router_dtype, entropy_dtype, seed=E * 31 + top_k)
        kwargs = dict(tau_high=2.0, tau_low=0.5, top_k=top_k, retain_index=retain, mode=mode)
        ref = route_reference(entropy, u, 1.0, **kwargs)
        with ak.use_backend("cpp"):
            got = ak.route(entropy, u, 1.0, **kwargs)
        direct = route_cpp(entropy, u, 1.0, **kwargs)
        assert got.dtype == torch.float32 and got.shape == (37, E)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
        assert torch.equal(got, direct)
        torch.testing.assert_close(got.sum(1), torch.ones(37), rtol=1e-6, atol=1e-6)
        assert got[0].count_nonzero() == (E if mode == "train" else min(E, 1 + min(top_k, E - 1)))


def test_route_low_tokens_are_one_hot_and_threshold_is_inclusive():
    entropy = torch.tensor([0.2, 0.5, 0.49, float("inf")])
    u = torch.tensor([[0.1, 2.0, -1.0], [0.3, 0.2, 0.1], [1.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    with ak.use_backend("cpp"):
        gates = ak.route(entropy, u, 0.5, top_k=0, retain_index=1)
    assert gates[0].tolist() == [0.0, 1.0, 0.0]
    assert gates[1].tolist() == [0.0, 1.0, 0.0]            # H == theta is high: retain expert alone (top_k 0)
    assert gates[2].tolist() == [1.0, 0.0, 0.0]            # tie in u: lowest index
    assert gates[3].tolist() == [0.0, 1.0, 0.0]


def test_route_theta_compared_in_the_entropy_dtype():
    """torch compares ``entropy >= theta`` in the entropy's dtype: theta is rounded to it first."""
    value = torch.tensor([0.1], dtype=torch.float32)
    theta = float(value) + 1e-12                           # above the fp32 value, rounds to it
    u = torch.tensor([[0.0, 1.0, 2.0]])
    ref = route_reference(value, u, theta)
    with ak.use_backend("cpp"):
        got = ak.route(value, u, theta)
    assert torch.equal(got, ref)
    assert got.count_nonzero() == 3                        # counted as high, like the reference


def test_route_launcher_errors():
    u = torch.randn(4, 3)
    with pytest.raises(ValueError, match="router_logits"):
        route_cpp(torch.rand(3), u.t(), 1.0, tau_high=2.0, tau_low=0.5, top_k=1, retain_index=0, mode="infer")
    with pytest.raises(ValueError, match="entropy"):
        route_cpp(torch.rand(5), u, 1.0, tau_high=2.0, tau_low=0.5, top_k=1, retain_index=0, mode="infer")
    with pytest.raises(ValueError, match="mode"):
        route_cpp(torch.rand(4), u, 1.0, tau_high=2.0, tau_low=0.5, top_k=1, retain_index=0, mode="dense")
    with pytest.raises(ValueError, match="retain_index"):
        route_cpp(torch.rand(4), u, 1.0, tau_high=2.0, tau_low=0.5, top_k=1, retain_index=3, mode="infer")
    with pytest.raises(ValueError, match="top_k"):
        route_cpp(torch.rand(4), u, 1.0, tau_high=2.0, tau_low=0.5, top_k=-1, retain_index=0, mode="infer")
    with pytest.raises(TypeError, match="router_logits"):
        route_cpp(torch.rand(4), u.double(), 1.0, tau_high=2.0, tau_low=0.5, top_k=1, retain_index=0, mode="infer")
