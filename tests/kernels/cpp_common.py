"""Shared helpers of the C++ kernel tests (tests/kernels/test_*_cpp.py)."""

from __future__ import annotations


import torch

from alter_kernels.reference import tsallis_entropy_reference


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
