"""Routing (docs/method.md §1 and §3): the Triton launchers against the PyTorch references (see triton_common)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import alter_kernels as ak
from alter_kernels.reference import route_reference
from alter_kernels.triton.routing import route_triton
from tests.kernels.triton_common import DEVICES, _id, make


ROUTE_CASES = [  # (N, E, top_k, retain_index)
    (1, 1, 3, 0), (7, 2, 1, 1), (37, 5, 3, 0), (37, 5, 3, 4), (20, 8, 0, 2), (300, 16, 3, 5), (9, 6, 10, 3)]


def route_inputs(n, e, u_dtype, h_dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = (torch.randn(n, e, generator=g) * 2).to(u_dtype)
    h = (torch.rand(n, generator=g) * 2).to(h_dtype)
    if n > 2:
        h[0] = float("inf")                       # first position of a sequence: high
        h[1] = 1.0                                # exactly at theta: high (H >= theta)
    return h.to(device), u.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("u_dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_route_launcher_matches_reference(u_dtype, mode, device):
    for i, (n, e, k, ri) in enumerate(ROUTE_CASES):
        h, u = route_inputs(n, e, u_dtype, torch.float32, device, seed=i)
        kw = dict(tau_high=2.0, tau_low=0.5, top_k=k, retain_index=ri, mode=mode)
        got = route_triton(h, u, 1.0, **kw)
        ref = route_reference(h.cpu(), u.cpu(), 1.0, **kw)
        assert got.dtype == torch.float32 and got.shape == (n, e)
        torch.testing.assert_close(got.cpu(), ref, rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(got.sum(-1).cpu(), torch.ones(n), rtol=1e-5, atol=1e-5)
        if mode == "infer":
            low = (h < 1.0).cpu()
            assert torch.equal(got.cpu()[low], ref[low])          # one-hot gates exactly
            kept = (got.cpu()[~low] > 0).sum(-1)
            assert (kept <= 1 + min(k, e - 1)).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("h_dtype", [torch.float32, torch.bfloat16, torch.float64], ids=_id)
def test_route_threshold_compares_like_torch(h_dtype, device):
    """high = entropy >= theta exactly as torch compares a tensor of that dtype with a float."""
    base = torch.tensor([0.1, 0.3, 0.7, 1.1], dtype=h_dtype)
    u = make((4, 3), seed=3)
    for value in base.tolist():
        for theta in (value, float(np.nextafter(value, math.inf)), float(np.nextafter(value, -math.inf)),
                      value + 1e-9, value - 1e-9):
            got = route_triton(base.to(device), u.to(device), theta, top_k=1, mode="train")
            ref = route_reference(base, u, theta, top_k=1, mode="train")
            torch.testing.assert_close(got.cpu(), ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_route_public_api(device):
    h, u = route_inputs(50, 6, torch.float32, torch.float32, device, seed=8)
    for mode in ("infer", "train"):
        with ak.use_backend("triton"):
            got = ak.route(h, u, 1.0, top_k=2, retain_index=1, mode=mode)
        ref = route_reference(h.cpu(), u.cpu(), 1.0, top_k=2, retain_index=1, mode=mode)
        torch.testing.assert_close(got.cpu(), ref, rtol=2e-6, atol=2e-6)
