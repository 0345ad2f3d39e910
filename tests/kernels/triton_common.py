"""Shared helpers of the Triton kernel tests (tests/kernels/test_*_triton.py): devices, tolerances,
inputs. Under ``TRITON_INTERPRET=1`` (set by conftest without CUDA) the launchers run on CPU."""

from __future__ import annotations


import torch

from alter_kernels._backend import triton_interpreting
from alter_kernels.reference import tsallis_entropy_reference
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
