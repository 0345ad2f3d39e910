"""The C++ CPU kernels (csrc/, ``alter_kernels._C``) against the PyTorch references.

Each kernel runs through the public API with ``use_backend("cpp")`` and through its launcher
in :mod:`alter_kernels.cpu` directly. The references run in fp64 on the same values the kernel
reads (bf16 / fp16 upcast exactly), so the tolerances measure the kernel's fp32 arithmetic
only: docs/method.md §2 (entropy), 3 (hinge), 1 and 4 (routing).
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

import alter_kernels as ak
from alter_kernels.cpu.entropy import tsallis_entropy_cpp
from alter_kernels.cpu.hinge import hinge_forward_cpp
from alter_kernels.cpu.routing import route_cpp
from alter_kernels.reference import hinge_forget_loss_reference, route_reference, tsallis_entropy_reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
QS = [0.5, 1.0, 1.5, 2.0]
# V around the 16-lane accumulators and the 2048-element chunk, plus N = 1, V = 1 and a vocabulary
# of 50000 (the kernel reads a row 2048 at a time); (67, 1001) is large enough to use 2 threads.
ENTROPY_SHAPES = [(1, 1), (1, 7), (3, 15), (5, 16), (4, 17), (3, 2047), (2, 2048), (2, 2049), (3, 4099),
                  (67, 1001), (2, 50000)]
# The kernel upcasts every element exactly and computes in fp32 (fp64 across chunks), so the
# input dtype does not change its error: one relative tolerance for all three dtypes.
RTOL, ATOL = 2e-5, 2e-5


def make_logits(shape, dtype, *, scale=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def assert_stats_match(got, logits, q, ref=None):
    """got: (entropy, lse, argmax, runner_up) for 2-D ``logits``; reference in fp64 (or ``ref``)."""
    if ref is None:
        ref = tsallis_entropy_reference(logits.double(), q, return_stats=True)
    entropy, lse, argmax, runner_up = got
    assert entropy.dtype == torch.float32 and lse.dtype == torch.float32
    assert argmax.dtype == torch.int64 and runner_up.dtype == torch.float32
    torch.testing.assert_close(entropy.double(), ref.entropy, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(lse.double(), ref.lse, rtol=RTOL, atol=ATOL)
    assert torch.equal(argmax, ref.argmax)
    assert torch.equal(runner_up.double(), ref.runner_up)


def test_extension_is_built():
    assert ak.cpp_available(), "alter_kernels._C is missing: run `pip install -e .`"
    assert ak._backend.cpp_extension().simd_level() in ("avx512f", "avx2+fma", "avx", "sse2", "neon", "scalar")


# ---------------------------------------------------------------------------------------------
# Tsallis entropy (docs/method.md §2)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ENTROPY_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("q", QS)
def test_entropy_matches_reference(shape, dtype, q):
    logits = make_logits(shape, dtype, seed=shape[1])
    with ak.use_backend("cpp"):
        stats = ak.tsallis_entropy(logits, q, return_stats=True)
        plain = ak.tsallis_entropy(logits, q)
    ref = tsallis_entropy_reference(logits.double(), q, return_stats=True)
    assert_stats_match(tuple(stats), logits, q, ref)
    assert torch.equal(plain, stats.entropy)
    assert_stats_match(tsallis_entropy_cpp(logits, q, True), logits, q, ref)


@pytest.mark.parametrize("q", QS)
def test_entropy_wide_logits(q):
    """Logits spread over hundreds of nats: the running max moves far between chunks."""
    logits = torch.cat([make_logits((4, 3000), torch.float32, scale=80.0, seed=1),
                        torch.linspace(-300, 300, 3000).expand(2, 3000)])
    assert_stats_match(tsallis_entropy_cpp(logits, q, True), logits, q)


@pytest.mark.parametrize("q", QS)
def test_entropy_non_contiguous_inputs(q):
    base = make_logits((9, 3100), torch.float32, seed=3)
    sliced = base[::2, 5:3005]                           # row stride 6200, stride(-1) == 1: read in place
    assert sliced.stride() == (6200, 1)
    assert_stats_match(tsallis_entropy_cpp(sliced, q, True), sliced, q)
    transposed = make_logits((2500, 6), torch.float32, seed=4).t()   # stride(-1) == 6
    with ak.use_backend("cpp"):
        got = ak.tsallis_entropy(transposed, q, return_stats=True)
    assert_stats_match(tuple(got), transposed, q)
    batched = make_logits((2, 3, 777), torch.bfloat16, seed=5)
    with ak.use_backend("cpp"):
        got = ak.tsallis_entropy(batched, q, return_stats=True)
    assert got.entropy.shape == (2, 3) and got.argmax.shape == (2, 3)
    assert_stats_match(tuple(t.reshape(-1) for t in got), batched.reshape(-1, 777), q)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("q", QS)
def test_entropy_neg_inf_entries(dtype, q):
    logits = make_logits((6, 2100), torch.float32, seed=6)
    g = torch.Generator().manual_seed(7)
    logits[torch.rand(logits.shape, generator=g) < 0.4] = float("-inf")
    logits[1] = float("-inf")                             # no distribution at all
    logits[2, :] = float("-inf")
    logits[2, 2099] = 1.5                                 # a single finite entry, in the last chunk
    logits[3, :2048] = float("-inf")                      # first chunk entirely -inf
    logits = logits.to(dtype)
    entropy, lse, argmax, runner_up = got = tsallis_entropy_cpp(logits, q, True)
    assert_stats_match(got, logits, q)
    assert not torch.isnan(entropy).any()
    assert entropy[1] == 0 and lse[1] == float("-inf") and argmax[1] == 0 and runner_up[1] == float("-inf")
    assert entropy[2] == 0 and lse[2] == 1.5 and argmax[2] == 2099 and runner_up[2] == float("-inf")


@pytest.mark.parametrize("q", QS)
def test_entropy_extreme_logits(q):
    logits = make_logits((4, 3000), torch.float32, seed=8).sign() * 1e4
    logits[1] = -1e4
    logits[2, ::3] = float("-inf")
    for dtype in (torch.float32, torch.bfloat16):
        x = logits.to(dtype)
        got = tsallis_entropy_cpp(x, q, True)
        assert not any(torch.isnan(t.double()).any() for t in got)
        assert_stats_match(got, x, q)


def test_entropy_stats_on_ties():
    logits = torch.tensor([[1.0, 5.0, 5.0, 2.0], [3.0, 3.0, 3.0, 3.0], [0.0, -1.0, 7.0, float("-inf")]])
    _, _, argmax, runner_up = tsallis_entropy_cpp(logits, 1.5, True)
    assert argmax.tolist() == [1, 0, 2]
    assert runner_up.tolist() == [5.0, 3.0, 0.0]
    single = torch.tensor([[2.5], [float("-inf")]])
    entropy, lse, argmax, runner_up = tsallis_entropy_cpp(single, 1.0, True)
    assert entropy.tolist() == [0.0, 0.0] and lse.tolist() == [2.5, float("-inf")]
    assert argmax.tolist() == [0, 0] and runner_up.tolist() == [float("-inf")] * 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=lambda d: str(d).replace("torch.", ""))
def test_entropy_reads_every_half_precision_value(dtype):
    """All 2^16 bit patterns but NaN and +inf (subnormals, zeros, -inf, the largest finite values)."""
    values = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    values = values[~torch.isnan(values) & (values != float("inf"))]
    perm = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(9))
    rows = torch.cat([values[perm], torch.full((-values.numel() % 1000,), float("-inf"), dtype=dtype)])
    rows = rows.view(-1, 1000)
    for q in (1.0, 1.5):
        assert_stats_match(tsallis_entropy_cpp(rows, q, True), rows, q)
    small = values[(values.abs() < 1e-3) & (values != 0)].view(1, -1)   # subnormals and tiny normals
    assert_stats_match(tsallis_entropy_cpp(small, 1.5, True), small, 1.5)


def test_entropy_uniform_rows_reach_the_maximum():
    V = 5000
    logits = torch.full((4, V), 3.0)
    for q in QS:
        expected = math.log(V) if q == 1.0 else (1 - V ** (1 - q)) / (q - 1)
        torch.testing.assert_close(tsallis_entropy_cpp(logits, q), torch.full((4,), expected), rtol=1e-5, atol=0)


def test_entropy_launcher_errors():
    with pytest.raises(ValueError, match="rows"):
        tsallis_entropy_cpp(torch.randn(8, 6).t(), 1.5)
    with pytest.raises(ValueError, match="rows"):
        tsallis_entropy_cpp(torch.randn(3, 4, 5), 1.5)
    with pytest.raises(ValueError, match="rows"):
        tsallis_entropy_cpp(torch.randn(3, 0), 1.5)
    with pytest.raises(TypeError, match="rows"):
        tsallis_entropy_cpp(torch.randn(3, 5).double(), 1.5)
    with pytest.raises(ValueError, match="q"):
        tsallis_entropy_cpp(torch.randn(3, 5), 0.0)


# ---------------------------------------------------------------------------------------------
# Hinge forget loss (docs/method.md §4)
# ---------------------------------------------------------------------------------------------

def distinct_logits(n, v, dtype, seed):
    """Logits without ties (row permutations of integers, exact in bf16/fp16 for v <= 256)."""
    g = torch.Generator().manual_seed(seed)
    if v <= 256:
        values = torch.argsort(torch.rand(n, v, generator=g), dim=1).float() - v / 2
    else:
        values = torch.randn(n, v, generator=g, dtype=torch.float64) * 5
    return values.to(dtype)


def hinge_labels(logits, seed, ignore_index=-100, ignored=()):
    """Labels where every other row's true token is the top logit (an active hinge)."""
    n, v = logits.shape
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::2] = logits[::2].float().argmax(1)
    labels[0] = 0
    if n > 1:
        labels[1] = v - 1
    for row in ignored:
        labels[row] = ignore_index
    return labels


def hinge_per_row_reference(logits, labels, margin, ignore_index):
    z = logits.double()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
    others = z.scatter(1, safe[:, None], float("-inf"))
    per_row = torch.clamp(z.gather(1, safe[:, None]).squeeze(1) - others.amax(1) + margin, min=0)
    return torch.where(valid, per_row, torch.zeros_like(per_row)), torch.where(valid, others.argmax(1), -1)


HINGE_SHAPES = [(1, 2), (5, 17), (8, 256), (6, 2049), (3, 5000), (40, 1000)]


@pytest.mark.parametrize("shape", HINGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_hinge_forward_matches_reference(shape, dtype):
    # above 256 classes the values are rounded randn: bf16 / fp16 may tie, so compare the values at y'
    exact_indices = dtype == torch.float32 or shape[1] <= 256
    logits = distinct_logits(*shape, dtype, seed=shape[1])
    labels = hinge_labels(logits, seed=1, ignored=(2,) if shape[0] > 2 else ())
    for margin in (0.0, 1.0, 2.5):
        per_row, other = hinge_forward_cpp(logits, labels, margin, -100)
        ref_rows, ref_other = hinge_per_row_reference(logits, labels, margin, -100)
        assert per_row.dtype == torch.float32 and other.dtype == torch.int64
        torch.testing.assert_close(per_row.double(), ref_rows, rtol=1e-6, atol=1e-5)
        valid = labels != -100
        assert (other[~valid] == -1).all()
        if exact_indices:
            assert torch.equal(other, ref_other)
        else:
            z = logits.double()
            torch.testing.assert_close(z[valid].gather(1, other[valid, None]).squeeze(1),
                                       z[valid].scatter(1, labels[valid, None], float("-inf")).amax(1))
        assert (other[valid] != labels[valid]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32], ids=["int64", "int32"])
def test_hinge_loss_and_gradient_match_reference(dtype, label_dtype):
    logits = distinct_logits(12, 200, dtype, seed=11)
    labels = hinge_labels(logits, seed=12, ignored=(3, 8)).to(label_dtype)
    x_cpp = logits.clone().requires_grad_()
    x_ref = logits.clone().requires_grad_()
    with ak.use_backend("cpp"):
        loss = ak.hinge_forget_loss(x_cpp, labels, margin=1.5)
    ref = hinge_forget_loss_reference(x_ref, labels.long(), 1.5)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss, ref.float(), rtol=1e-6, atol=1e-6)
    assert loss.item() > 0
    loss.backward()
    ref.backward()
    assert x_cpp.grad.dtype == dtype
    torch.testing.assert_close(x_cpp.grad.float(), x_ref.grad.float(), rtol=0, atol=1e-6)
    assert (x_cpp.grad[3] == 0).all() and (x_cpp.grad[8] == 0).all()


def test_hinge_odd_vocab_gradient_and_wide_rows():
    logits = distinct_logits(5, 4099, torch.float32, seed=13)
    labels = hinge_labels(logits, seed=14)
    logits[0, 4098] = logits[0].max() + 0.25               # runner-up of row 0 in the last partial chunk
    x_cpp = logits.clone().requires_grad_()
    x_ref = logits.clone().requires_grad_()
    with ak.use_backend("cpp"):
        loss = ak.hinge_forget_loss(x_cpp, labels, 3.0)
    ref = hinge_forget_loss_reference(x_ref, labels, 3.0)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(x_cpp.grad, x_ref.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=lambda d: str(d).replace("torch.", ""))
def test_hinge_reads_every_half_precision_value(dtype):
    """Rows [v, 0] and [0, v] with label 0 and margin 0 give relu(v) and relu(-v) exactly: the
    kernel's bf16/fp16 -> fp32 conversion is exact for every finite value (subnormals included)."""
    values = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    values = values[torch.isfinite(values)]
    zeros = torch.zeros_like(values)
    labels = torch.zeros(values.numel(), dtype=torch.int64)
    first, _ = hinge_forward_cpp(torch.stack([values, zeros], 1), labels, 0.0, -100)
    second, _ = hinge_forward_cpp(torch.stack([zeros, values], 1), labels, 0.0, -100)
    exact = values.float()
    assert torch.equal(first, exact.clamp(min=0)) and torch.equal(second, (-exact).clamp(min=0))


def test_hinge_all_rows_ignored():
    logits = distinct_logits(4, 30, torch.float32, seed=15).requires_grad_()
    labels = torch.full((4,), -7)
    with ak.use_backend("cpp"):
        loss = ak.hinge_forget_loss(logits, labels, ignore_index=-7)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    per_row, other = hinge_forward_cpp(logits.detach(), labels, 1.0, -7)
    assert per_row.tolist() == [0.0] * 4 and other.tolist() == [-1] * 4


def test_hinge_other_logits_all_neg_inf():
    logits = torch.tensor([[2.0, float("-inf"), float("-inf")], [float("-inf"), float("-inf"), 0.5]])
    per_row, other = hinge_forward_cpp(logits, torch.tensor([0, 2]), 1.0, -100)
    assert per_row.tolist() == [float("inf")] * 2
    assert other.tolist() == [1, 0]                       # a valid index other than the label


def test_hinge_non_contiguous_logits():
    base = distinct_logits(10, 300, torch.float32, seed=16)
    sliced = base[1::3, 7:257]
    labels = hinge_labels(sliced.contiguous(), seed=17)
    per_row, other = hinge_forward_cpp(sliced, labels, 1.0, -100)
    ref_rows, ref_other = hinge_per_row_reference(sliced, labels, 1.0, -100)
    torch.testing.assert_close(per_row.double(), ref_rows)
    assert torch.equal(other, ref_other)
    transposed = distinct_logits(40, 6, torch.float32, seed=18).t()
    labels = torch.tensor([0, 39, 5, 20, 11, 3])
    with ak.use_backend("cpp"):
        loss = ak.hinge_forget_loss(transposed, labels, 1.0)
    torch.testing.assert_close(loss, hinge_forget_loss_reference(transposed, labels, 1.0))


def test_hinge_launcher_rejects_bad_labels():
    logits = torch.randn(3, 10)
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        hinge_forward_cpp(logits, torch.tensor([0, 10, 2]), 1.0, -100)
    with pytest.raises(ValueError, match=r"labels\[2\]"):
        hinge_forward_cpp(logits, torch.tensor([0, 1, -5], dtype=torch.int32), 1.0, -100)
    with pytest.raises(TypeError, match="labels"):
        hinge_forward_cpp(logits, torch.tensor([0.0, 1.0, 2.0]), 1.0, -100)
    with pytest.raises(ValueError, match="labels"):
        hinge_forward_cpp(logits, torch.tensor([0, 1]), 1.0, -100)
    with pytest.raises(ValueError, match="logits"):
        hinge_forward_cpp(torch.randn(3, 1), torch.tensor([0, 0, 0]), 1.0, -100)


# ---------------------------------------------------------------------------------------------
# Routing (docs/method.md §1 and §3)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# The public API's argument errors, on the cpp backend
# ---------------------------------------------------------------------------------------------

PUBLIC_ERRORS = [
    ("entropy q <= 0", lambda: ak.tsallis_entropy(torch.randn(2, 5), 0.0), ValueError, "q"),
    ("entropy q NaN", lambda: ak.tsallis_entropy(torch.randn(2, 5), float("nan")), ValueError, "q"),
    ("entropy q type", lambda: ak.tsallis_entropy(torch.randn(2, 5), None), TypeError, "q"),
    ("entropy V = 0", lambda: ak.tsallis_entropy(torch.randn(2, 0)), ValueError, "logits"),
    ("entropy not a tensor", lambda: ak.tsallis_entropy([[0.0, 1.0]]), TypeError, "logits"),
    ("entropy int dtype", lambda: ak.tsallis_entropy(torch.ones(2, 3, dtype=torch.int64)), TypeError, "logits"),
    ("entropy 0-d", lambda: ak.tsallis_entropy(torch.tensor(1.0)), ValueError, "logits"),
    ("hinge 1-D logits", lambda: ak.hinge_forget_loss(torch.randn(5), torch.tensor([1])), ValueError, "logits"),
    ("hinge V = 1", lambda: ak.hinge_forget_loss(torch.randn(3, 1), torch.zeros(3, dtype=torch.long)),
     ValueError, "logits"),
    ("hinge labels shape", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.zeros(2, dtype=torch.long)),
     ValueError, "labels"),
    ("hinge labels dtype", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.zeros(3)), TypeError, "labels"),
    ("hinge labels too large", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.tensor([0, 4, 1])),
     ValueError, "labels"),
    ("hinge labels negative", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.tensor([0, -1, 1])),
     ValueError, "labels"),
    ("hinge margin type", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.tensor([0, 1, 1]), "m"),
     TypeError, "margin"),
    ("route entropy shape", lambda: ak.route(torch.rand(3), torch.randn(4, 2), 0.5), ValueError, "entropy"),
    ("route router 1-D", lambda: ak.route(torch.rand(4), torch.randn(4), 0.5), ValueError, "router_logits"),
    ("route E = 0", lambda: ak.route(torch.rand(4), torch.randn(4, 0), 0.5), ValueError, "router_logits"),
    ("route theta NaN", lambda: ak.route(torch.rand(4), torch.randn(4, 2), float("nan")), ValueError, "theta"),
    ("route theta type", lambda: ak.route(torch.rand(4), torch.randn(4, 2), "x"), TypeError, "theta"),
    ("route tau_high", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, tau_high=0.0), ValueError,
     "tau_high"),
    ("route tau_low", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, tau_low=-1.0), ValueError,
     "tau_low"),
    ("route top_k", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, top_k=-2), ValueError, "top_k"),
    ("route retain_index", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, retain_index=2), ValueError,
     "retain_index"),
    ("route mode", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, mode="eval"), ValueError, "mode"),
]


@pytest.mark.parametrize("call, error, argument", [c[1:] for c in PUBLIC_ERRORS], ids=[c[0] for c in PUBLIC_ERRORS])
def test_public_api_errors_name_the_argument(call, error, argument):
    with ak.use_backend("cpp"):
        with pytest.raises(error, match=argument):
            call()


def _route_backends():
    names = ["torch"] + (["cpp"] if ak.cpp_available() else [])
    if importlib.util.find_spec("alter_kernels.triton.routing") is not None:
        names.append("triton")
    return names


@pytest.mark.parametrize("backend", _route_backends())
def test_route_high_entropy_mix_never_divides_zero_by_zero(backend):
    # the retain logit is so far below the others that its softmax weight underflows to 0
    u = torch.tensor([[-500.0, 10.0, 20.0], [0.0, 1.0, 2.0]])
    ent = torch.tensor([5.0, 5.0])
    with ak.use_backend(backend):
        only_retain = ak.route(ent, u, 1.0, top_k=0)
        mixed = ak.route(ent, u, 1.0, top_k=1)
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
        gates = ak.route(ent, u, 1.0, top_k=1, mode=mode)
    assert torch.isnan(gates[1]).all()
    assert torch.isfinite(gates[[0, 2]]).all()
    torch.testing.assert_close(gates[[0, 2]], ak.route_reference(ent[[0, 2]], u[[0, 2]], 1.0, top_k=1, mode=mode))
