"""The C++ entropy kernel against the PyTorch reference (docs/method.md §2); see cpp_common."""

from __future__ import annotations

import math

import pytest
import torch

import alter_kernels as ak
from alter_kernels.cpu.entropy import tsallis_entropy_cpp
from alter_kernels.reference import tsallis_entropy_reference
from tests.kernels.cpp_common import DTYPES, QS, ENTROPY_SHAPES, make_logits, assert_stats_match


def test_extension_is_built():
    assert ak.cpp_available(), "alter_kernels._C is missing: run `pip install -e .`"
    assert ak._backend.cpp_extension().simd_level() in ("avx512f", "avx2+fma", "avx", "sse2", "neon", "scalar")


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
