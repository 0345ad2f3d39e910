"""Routing edge cases on every backend present (torch, cpp, triton): no 0 / 0, NaN in gives NaN out."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import alter_kernels as ak
from alter_kernels._backend import triton_interpreting


def _route_backends():
    names = ["torch"] + (["cpp"] if ak.cpp_available() else [])
    if importlib.util.find_spec("alter_kernels.triton.routing") is not None:
        names.append("triton")
    return names


def _device(backend):
    """Triton runs on CUDA tensors, or on CPU ones under TRITON_INTERPRET=1 (set by conftest without CUDA)."""
    return "cuda" if backend == "triton" and torch.cuda.is_available() and not triton_interpreting() else "cpu"


@pytest.mark.parametrize("backend", _route_backends())
def test_route_high_entropy_mix_never_divides_zero_by_zero(backend):
    # the retain logit is so far below the others that its softmax weight underflows to 0
    u = torch.tensor([[-500.0, 10.0, 20.0], [0.0, 1.0, 2.0]], device=_device(backend))
    ent = torch.tensor([5.0, 5.0], device=u.device)
    with ak.use_backend(backend):
        only_retain = ak.route(ent, u, 1.0, top_k=0).cpu()
        mixed = ak.route(ent, u, 1.0, top_k=1).cpu()
    assert torch.equal(only_retain, torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed.sum(-1), torch.ones(2))
    assert mixed[0, 1] == 0.0 and mixed[0, 2] == 1.0


@pytest.mark.parametrize("backend", _route_backends())
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_route_nan_entropy_gives_nan_gates(backend, mode):
    """NaN in, NaN out: a NaN entropy is never routed as a low-entropy (one-hot) token."""
    u = torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.1, 0.2], [1.0, 2.0, 0.0]])
    ent = torch.tensor([0.1, float("nan"), 3.0])
    with ak.use_backend(backend):
        gates = ak.route(ent.to(_device(backend)), u.to(_device(backend)), 1.0, top_k=1, mode=mode).cpu()
    assert torch.isnan(gates[1]).all()
    assert torch.isfinite(gates[[0, 2]]).all()
    torch.testing.assert_close(gates[[0, 2]], ak.route_reference(ent[[0, 2]], u[[0, 2]], 1.0, top_k=1, mode=mode))
