"""Gated shared-A / multi-B matmul (docs/method.md §1 and §4): the Triton launchers against the PyTorch references (see triton_common)."""

from __future__ import annotations

import math

import pytest
import torch

import alter_kernels as ak
from alter_kernels.composite import asym_lora as composite
from alter_kernels.reference import asym_lora_reference
from alter_kernels.triton import asym_lora as tri_lora
from tests.kernels.triton_common import DEVICES, DTYPES, MATMUL_TOL, _id, make


# (N, d_in, d_out, r, E): N = 1, sizes off the tiles, E = 1 and 5, r = 8 (padded to 16), r = 3,
# and E * r wide enough that expand_backward splits the experts into chunks
LORA_CASES = [(1, 33, 40, 8, 1), (37, 70, 50, 8, 5), (20, 16, 16, 4, 3), (9, 24, 130, 3, 2), (6, 20, 18, 16, 9)]


def assert_matmul_close(actual, expected, dtype):
    tol = MATMUL_TOL[dtype]
    scale = expected.abs().max().item() + 1e-30
    torch.testing.assert_close(actual.cpu().double(), expected.cpu().double(), rtol=tol, atol=tol * scale)


def lora_inputs(case, dtype, device, seed=0):
    n, d_in, d_out, r, e = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g).to(dtype).to(device)
    A = (torch.randn(r, d_in, generator=g) / math.sqrt(d_in)).to(dtype).to(device)
    gates = torch.rand(n, e, generator=g).to(dtype).to(device)
    B_cat = torch.randn(d_out, e * r, generator=g).to(dtype).to(device)
    return x, A, gates, B_cat


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("case", LORA_CASES, ids=_id)
def test_asym_lora_launchers_match_composite(case, dtype, device):
    x, A, gates, B_cat = lora_inputs(case, dtype, device)
    n, d_in, d_out, r, e = case
    dbl = lambda t: t.double().cpu()
    # shrink_gate: h = x A^T and hg[n, e*r + j] = g[n, e] h[n, j]
    h, hg = tri_lora.shrink_gate(x, A, gates)
    h_ref, hg_ref = composite.shrink_gate(dbl(x), dbl(A), dbl(gates))
    assert h.shape == (n, r) and hg.shape == (n, e * r) and h.dtype == hg.dtype == dtype
    assert_matmul_close(h, h_ref, dtype)
    assert_matmul_close(hg, hg_ref, dtype)
    # hg is built from the h the kernel returns (rounded to dtype first), expert by expert
    expect_hg = (gates.float().unsqueeze(2) * h.float().unsqueeze(1)).reshape(n, e * r).to(dtype)
    assert torch.equal(hg.cpu(), expect_hg.cpu())
    # expand_add: in place into a base output, or allocated
    base = make((n, d_out), dtype, seed=1, device=device)
    out = base.clone()
    ret = tri_lora.expand_add(hg, B_cat, 0.75, out)
    assert ret is out
    assert_matmul_close(out, composite.expand_add(dbl(hg), dbl(B_cat), 0.75, dbl(base)), dtype)
    fresh = tri_lora.expand_add(hg, B_cat, 0.75, None)
    assert fresh.shape == (n, d_out) and fresh.dtype == dtype
    assert_matmul_close(fresh, composite.expand_add(dbl(hg), dbl(B_cat), 0.75, None), dtype)
    # expand_backward: dh and dgates without dhg
    grad_out = make((n, d_out), dtype, seed=2, device=device)
    dh, dgates = tri_lora.expand_backward(grad_out, B_cat, h, gates, 0.75)
    dh_ref, dg_ref = composite.expand_backward(dbl(grad_out), dbl(B_cat), dbl(h), dbl(gates), 0.75)
    assert dh.shape == (n, r) and dgates.shape == (n, e) and dh.dtype == dgates.dtype == dtype
    assert_matmul_close(dh, dh_ref, dtype)
    assert_matmul_close(dgates, dg_ref, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_expand_add_into_strided_output(device):
    x, A, gates, B_cat = lora_inputs((11, 20, 36, 8, 2), torch.float32, device)
    _, hg = tri_lora.shrink_gate(x, A, gates)
    big = make((11, 50), seed=4, device=device)
    before = big.clone()
    view = big[:, 7:43]                            # row stride 50
    tri_lora.expand_add(hg, B_cat, 2.0, view)
    expected = before[:, 7:43] + 2.0 * hg @ B_cat.t()
    assert_matmul_close(big[:, 7:43], expected, torch.float32)
    assert torch.equal(big[:, :7], before[:, :7]) and torch.equal(big[:, 43:], before[:, 43:])
    # a transposed output (unit row stride) works too
    out_t = make((36, 11), seed=5, device=device)
    ref_t = out_t.t() + 2.0 * hg @ B_cat.t()
    tri_lora.expand_add(hg, B_cat, 2.0, out_t.t())
    assert_matmul_close(out_t.t(), ref_t, torch.float32)


def test_asym_lora_launchers_reject_bad_arguments():
    x, A, gates, B_cat = lora_inputs((4, 16, 16, 8, 2), torch.float32, "cpu")
    with pytest.raises(ValueError, match="A must have shape"):
        tri_lora.shrink_gate(x, A[:, :8], gates)
    with pytest.raises(TypeError, match="A must have x's dtype"):
        tri_lora.shrink_gate(x, A.half(), gates)
    _, hg = composite.shrink_gate(x, A, gates)
    with pytest.raises(ValueError, match="B_cat"):
        tri_lora.expand_add(hg, B_cat[:, :8], 1.0, None)
    with pytest.raises(ValueError, match="out must have shape"):
        tri_lora.expand_add(hg, B_cat, 1.0, torch.zeros(4, 15))
    with pytest.raises(ValueError, match="B_cat"):
        tri_lora.expand_backward(torch.zeros(4, 16), B_cat[:, :8], x[:, :8], gates, 1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
@pytest.mark.parametrize("fused", [False, True], ids=["asym_lora", "fused_alter_linear"])
def test_asym_lora_public_api_forward_backward(fused, dtype, device):
    n, d_in, d_out, r, e = 13, 24, 20, 8, 5
    g = torch.Generator().manual_seed(9)
    leaf = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(dtype).to(device).requires_grad_()
    x, A, B = leaf(n, d_in), leaf(r, d_in, scale=0.3), leaf(e, d_out, r, scale=0.3)
    gates = torch.softmax(torch.randn(n, e, generator=g), -1).to(dtype).to(device).requires_grad_()
    W, bias = leaf(d_out, d_in, scale=0.2), leaf(d_out)
    a_mask = (torch.arange(n) % 3 != 0).to(device)
    b_mask = (torch.arange(n) % 2 == 0).to(device)
    upstream = make((n, d_out), dtype, seed=10, device=device)
    inputs = (x, A, B, gates, W, bias) if fused else (x, A, B, gates)

    def run(use_triton):
        for t in inputs:
            t.grad = None
        kw = dict(a_grad_mask=a_mask, b_grad_mask=b_mask)
        if use_triton:
            with ak.use_backend("triton"):
                y = ak.fused_alter_linear(x, W, bias, A, B, gates, 2.0, **kw) if fused else \
                    ak.asym_lora(x, A, B, gates, 2.0, **kw)
        else:
            # the reference in fp64 on the same values
            d = [t.detach().double().cpu().requires_grad_() for t in inputs]
            y = asym_lora_reference(d[0], d[1], d[2], d[3], 2.0, a_grad_mask=a_mask.cpu(), b_grad_mask=b_mask.cpu())
            if fused:
                y = y + torch.nn.functional.linear(d[0], d[4], d[5])
            y.backward(upstream.double().cpu())
            return y.detach(), [t.grad for t in d]
        y.backward(upstream)
        return y.detach(), [t.grad for t in inputs]

    y, grads = run(True)
    y_ref, grads_ref = run(False)
    assert y.dtype == dtype and y.shape == (n, d_out)
    assert_matmul_close(y, y_ref, dtype)
    for got, ref in zip(grads, grads_ref):
        assert got is not None and got.dtype == dtype
        assert_matmul_close(got, ref, dtype)
