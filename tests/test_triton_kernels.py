"""The Triton kernels (alter_kernels/triton/) against the PyTorch references.

Every launcher runs on the devices Triton can use here: CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1``, set by conftest when there is no CUDA) and CUDA tensors when a GPU is
present. Each kernel is checked directly through its launcher (small tiles, to exercise the
tiling and its masks) and through the public API with ``use_backend("triton")``:

- entropy (docs/method.md §2): entropy, lse, arg-max and runner-up, -inf entries, rows of
  only -inf, logits of +-1e4, V not a multiple of the tile, row strides;
- the gated shared-A / multi-B matmul (sections 1, 3): the three launchers against the composite
  (PyTorch) launchers evaluated in fp64, and asym_lora / fused_alter_linear forward + backward
  against the reference;
- routing (sections 1, 4) and the hinge forget loss (section 3), backward included.

The interpreter runs each program in Python (MEASURED_CPU.md: ~1000x a compiled kernel), so the
shapes are small; tests never skip: the device list is built from what is available.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import alter_kernels as ak
from alter_kernels._backend import triton_interpreting
from alter_kernels.composite import asym_lora as composite
from alter_kernels.reference import (
    asym_lora_reference,
    hinge_forget_loss_reference,
    route_reference,
    tsallis_entropy_reference,
)
from alter_kernels.triton import asym_lora as tri_lora
from alter_kernels.triton.entropy import tsallis_entropy_triton
from alter_kernels.triton.hinge import hinge_forward_triton
from alter_kernels.triton.routing import route_triton
from tests.conftest import devices


def triton_devices():
    """CPU when Triton interprets (no GPU here), CUDA when present."""
    return [d for d in devices() if d == "cuda" or triton_interpreting()]


DEVICES = triton_devices()
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
QS = [0.5, 1.0, 1.5, 2.0]

# Entropy: the kernel upcasts every logit exactly and computes in fp32, and the reference runs
# in fp64 on the same upcast values, so the input dtype does not change the error.
ENTROPY_TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (2e-5, 2e-5), torch.float16: (2e-5, 2e-5)}
# Matmuls: outputs are rounded to the input dtype (relative to the largest output entry).
MATMUL_TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _id(v):
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    if isinstance(v, tuple):
        return "x".join(map(str, v))
    return str(v)


def make(shape, dtype=torch.float32, *, scale=1.0, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype).to(device)


def assert_entropy_stats(got, logits, q, dtype):
    """got = (entropy, lse, argmax, runner_up) of the 2-D ``logits``."""
    rtol, atol = ENTROPY_TOL[dtype]
    ref = tsallis_entropy_reference(logits.double().cpu(), q, return_stats=True)
    entropy, lse, argmax, runner_up = (t.cpu() for t in got)
    assert entropy.dtype == lse.dtype == runner_up.dtype == torch.float32
    assert argmax.dtype == torch.int64
    assert not torch.isnan(entropy).any() and not torch.isnan(lse).any() and not torch.isnan(runner_up).any()
    torch.testing.assert_close(entropy.double(), ref.entropy, rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.double(), ref.lse, rtol=rtol, atol=atol)
    assert torch.equal(argmax, ref.argmax), (argmax, ref.argmax)
    assert torch.equal(runner_up.double(), ref.runner_up), (runner_up, ref.runner_up)


# ---------------------------------------------------------------------------------------------
# Tsallis entropy (docs/method.md §2)
# ---------------------------------------------------------------------------------------------

# (N, V, block): V = 1, V below / just above the tile, several tiles with a ragged end, N = 1
ENTROPY_CASES = [(1, 1, 16), (1, 37, 16), (2, 65, 64), (3, 200, 64)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_entropy_launcher_matches_reference(device, dtype):
    for q in QS:
        for i, (n, v, block) in enumerate(ENTROPY_CASES):
            logits = make((n, v), dtype, scale=3.0, seed=i, device=device)
            got = tsallis_entropy_triton(logits, q, True, block=block)
            assert_entropy_stats(got, logits, q, dtype)
        only = tsallis_entropy_triton(logits, q, False, block=block)       # STATS off: same entropy
        assert torch.equal(only, got[0])
    # the default block (one tile for V <= 16384) and a shape that needs no padding
    logits = make((2, 512), dtype, scale=3.0, seed=9, device=device)
    assert_entropy_stats(tsallis_entropy_triton(logits, 1.5, True), logits, 1.5, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_entropy_special_rows(device, dtype):
    """-inf entries, an all -inf row, a single finite entry, a tied max, ties below the max."""
    v = 50
    z = make((7, v), torch.float32, scale=2.0, seed=3)
    z[0, ::3] = float("-inf")                      # masked vocabulary
    z[1] = float("-inf")                           # no distribution: entropy 0, lse -inf
    z[2] = float("-inf")
    z[2, 41] = 1.5                                 # single finite entry: runner-up -inf
    z[3, 5] = z[3, 44] = z[3].max() + 1.0          # max attained twice, in different tiles
    z[4, 17] = z[4, 49] = z[4].max() + 1.0         # max attained twice, same lane of two tiles
    z[5] = 0.25                                    # uniform: every index ties
    z[6, :] = float("-inf")
    z[6, 0] = 2.0
    z[6, 49] = 2.0                                 # tie at the first and the last column
    logits = z.to(dtype).to(device)
    for q in QS:
        got = tsallis_entropy_triton(logits, q, True, block=32)
        assert_entropy_stats(got, logits, q, dtype)
        entropy, lse, argmax, runner_up = (t.cpu() for t in got)
        assert entropy[1] == 0 and lse[1] == float("-inf") and argmax[1] == 0 and runner_up[1] == float("-inf")
        assert entropy[2] == 0 and argmax[2] == 41 and runner_up[2] == float("-inf")
        assert argmax[3] == 5 and runner_up[3] == z[3, 5].to(dtype).float()
        assert argmax[5] == 0 and runner_up[5] == lse.new_tensor(0.25)
        bound = math.log(v) if q == 1.0 else (1 - v ** (1 - q)) / (q - 1)
        assert abs(entropy[5].item() - bound) <= 2e-5 * (1 + bound)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_entropy_extreme_logits_no_nan(device, dtype):
    g = torch.Generator().manual_seed(7)
    z = torch.where(torch.rand(4, 100, generator=g) < 0.5, -1e4, 1e4)
    z[1, torch.rand(100, generator=g) < 0.5] = float("-inf")
    z[2] = torch.randn(100, generator=g) * 1e4
    z[3] = -1e4
    logits = z.to(dtype).to(device)
    for q in QS:
        got = tsallis_entropy_triton(logits, q, True, block=32)
        assert all(torch.isfinite(t).all() for t in got[:2])
        ref = tsallis_entropy_reference(logits.double().cpu(), q, return_stats=True)
        torch.testing.assert_close(got[0].cpu().double(), ref.entropy, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[1].cpu().double(), ref.lse, rtol=1e-6, atol=1e-3)
        assert torch.equal(got[2].cpu(), ref.argmax)


@pytest.mark.parametrize("device", DEVICES)
def test_entropy_row_stride_and_one_hot(device):
    wide = make((4, 80), torch.float32, scale=2.0, seed=11, device=device)
    rows = wide[:, 5:66]                           # row stride 80, unit inner stride
    assert not rows.is_contiguous()
    assert_entropy_stats(tsallis_entropy_triton(rows, 1.5, True, block=16), rows, 1.5, torch.float32)
    one_hot = torch.full((3, 40), float("-inf"), device=device)
    one_hot[0, 3], one_hot[1, 39], one_hot[2, 0] = 1e4, -1e4, 0.0
    for q in QS:
        assert torch.equal(tsallis_entropy_triton(one_hot, q, False, block=16).cpu(), torch.zeros(3))


@pytest.mark.parametrize("device", DEVICES)
def test_entropy_public_api(device):
    logits = make((2, 3, 333), torch.bfloat16, scale=3.0, seed=5, device=device)
    with ak.use_backend("triton"):
        stats = ak.tsallis_entropy(logits, 1.5, return_stats=True)
        plain = ak.tsallis_entropy(logits, 1.0)
        transposed = ak.tsallis_entropy(logits.transpose(0, 1), 2.0)  # any strides: copied to rows
    assert isinstance(stats, ak.EntropyStats) and stats.entropy.shape == (2, 3)
    ref = tsallis_entropy_reference(logits.double().cpu(), 1.5, return_stats=True)
    torch.testing.assert_close(stats.entropy.cpu().double(), ref.entropy, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(stats.lse.cpu().double(), ref.lse, rtol=2e-5, atol=2e-5)
    assert torch.equal(stats.argmax.cpu(), ref.argmax)
    assert torch.equal(stats.runner_up.cpu().double(), ref.runner_up)
    torch.testing.assert_close(plain.cpu().double(), tsallis_entropy_reference(logits.double().cpu(), 1.0),
                               rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(transposed.cpu().double(),
                               tsallis_entropy_reference(logits.transpose(0, 1).double().cpu(), 2.0),
                               rtol=2e-5, atol=2e-5)


def test_entropy_launcher_rejects_bad_arguments():
    rows = torch.randn(2, 8)
    with pytest.raises(ValueError, match="block"):
        tsallis_entropy_triton(rows, 1.5, block=24)
    with pytest.raises(ValueError, match="q"):
        tsallis_entropy_triton(rows, 0.0)
    with pytest.raises(ValueError, match="rows"):
        tsallis_entropy_triton(rows[0], 1.5)
    with pytest.raises(ValueError, match="stride"):
        tsallis_entropy_triton(torch.randn(8, 2).t(), 1.5)
    with pytest.raises(TypeError, match="rows"):
        tsallis_entropy_triton(rows.double(), 1.5)


# ---------------------------------------------------------------------------------------------
# Gated shared-A / multi-B matmul (docs/method.md §1 and §4)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Routing (docs/method.md §1 and §3)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Hinge forget loss (docs/method.md §4)
# ---------------------------------------------------------------------------------------------

def hinge_rows_reference(logits, labels, margin, ignore_index):
    """(per_row, other value) in fp64 from the reference definition."""
    z = logits.double().cpu()
    labels = labels.cpu().long()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    z_y = z.gather(1, safe[:, None]).squeeze(1)
    others = z.scatter(1, safe[:, None], float("-inf"))
    z_other = others.amax(1)
    per_row = torch.where(valid, torch.clamp(z_y - z_other + margin, min=0.0), torch.zeros_like(z_y))
    return per_row, others, valid


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_hinge_launcher_matches_reference(dtype, device):
    for i, (n, v, block, label_dtype) in enumerate([(1, 2, 16, torch.int64), (6, 37, 16, torch.int32),
                                                     (9, 300, 64, torch.int64), (3, 1000, None, torch.int64)]):
        logits = make((n, v), dtype, scale=3.0, seed=i, device=device)
        labels = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(i))
        if n > 2:
            labels[1] = -100                                        # ignored
            logits[2, labels[2]] = logits[2].max() + 5              # true token on top by far
        labels = labels.to(label_dtype).to(device)
        for margin in (1.0, 0.0, 2.5):
            per_row, other = hinge_forward_triton(logits, labels, margin, -100, block=block)
            ref, others, valid = hinge_rows_reference(logits, labels, margin, -100)
            assert per_row.dtype == torch.float32 and other.dtype == torch.int64
            torch.testing.assert_close(per_row.cpu().double(), ref, rtol=1e-6, atol=1e-6)
            other = other.cpu()
            assert (other[~valid] == -1).all() and (per_row.cpu()[~valid] == 0).all()
            rows = valid.nonzero().squeeze(1)
            assert (other[rows] != labels.cpu().long()[rows]).all()
            # y' is the first index attaining the best other logit
            best = others[rows].amax(1)
            first = (others[rows] == best[:, None]).double().argmax(1)
            assert torch.equal(other[rows], first)


@pytest.mark.parametrize("device", DEVICES)
def test_hinge_ties_and_masked_vocab(device):
    z = torch.tensor([[1.0, 3.0, 3.0, 0.0],                      # tie among the others: first index
                      [5.0, 5.0, -1.0, 2.0],                     # the label ties with another token
                      [float("-inf"), 2.0, float("-inf"), float("-inf")],   # no finite competitor
                      [0.0, float("-inf"), 4.0, 4.0]], device=device)
    labels = torch.tensor([0, 0, 1, 3], device=device)
    per_row, other = hinge_forward_triton(z, labels, 1.0, -100, block=16)
    assert other.cpu().tolist() == [1, 1, 0, 2]
    assert per_row.cpu().tolist()[:2] == [0.0, 1.0] and per_row[2].item() == math.inf and per_row[3].item() == 1.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_hinge_public_api_forward_backward(dtype, device):
    n, v = 10, 77
    g = torch.Generator().manual_seed(4)
    base = (torch.randn(n, v, generator=g) * 0.5).to(dtype)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[3] = -100
    base[5, labels[5]] = base[5].max() + 3.0       # active hinge with the true token on top
    base[6, labels[6]] = base[6].min() - 3.0       # inactive hinge: no gradient
    others = base.scatter(1, labels.clamp(min=0)[:, None], float("-inf"))
    top2 = others.topk(2, dim=1).values
    assert (top2[:, 0] > top2[:, 1]).all()           # no tie for y': the reference would split its gradient
    logits = base.clone().to(device).requires_grad_()
    with ak.use_backend("triton"):
        loss = ak.hinge_forget_loss(logits, labels.to(device), 1.0)
    loss.backward()
    ref_logits = base.double().requires_grad_()
    ref = hinge_forget_loss_reference(ref_logits, labels, 1.0)
    ref.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.cpu().double(), ref.detach(), rtol=1e-6, atol=1e-6)
    assert logits.grad.dtype == dtype
    grad_tol = 1e-6 if dtype == torch.float32 else 2.0 ** -8     # +-1/M rounded to the logits' dtype
    torch.testing.assert_close(logits.grad.cpu().double(), ref_logits.grad, rtol=grad_tol, atol=1e-7)
    assert (logits.grad[6] == 0).all() and (logits.grad[3] == 0).all()
    # every row ignored: loss 0, gradient 0
    logits.grad = None
    with ak.use_backend("triton"):
        empty = ak.hinge_forget_loss(logits, torch.full((n,), -100, device=device), 1.0)
    empty.backward()
    assert empty.item() == 0.0 and (logits.grad == 0).all()


def test_hinge_launcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2 classes"):
        hinge_forward_triton(torch.randn(3, 1), torch.zeros(3, dtype=torch.long), 1.0, -100)
    with pytest.raises(TypeError, match="labels"):
        hinge_forward_triton(torch.randn(3, 4), torch.zeros(3), 1.0, -100)
    with pytest.raises(ValueError, match="labels must have shape"):
        hinge_forward_triton(torch.randn(3, 4), torch.zeros(2, dtype=torch.long), 1.0, -100)
