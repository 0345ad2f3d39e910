"""Tsallis entropy (docs/method.md §2): the Triton launchers against the PyTorch references (see triton_common)."""

from __future__ import annotations

import math

import pytest
import torch

import alter_kernels as ak
from alter_kernels.reference import tsallis_entropy_reference
from alter_kernels.triton.entropy import tsallis_entropy_triton
from tests.kernels.triton_common import DEVICES, DTYPES, QS, _id, make, assert_entropy_stats


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
