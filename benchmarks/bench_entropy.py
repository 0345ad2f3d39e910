"""Entropy kernels (docs/method.md §2): speed and memory, as ratios measured in-process.

- ``tsallis_entropy`` (dispatch "auto": Triton on CUDA, C++ on CPU) against the naive
  ``p = softmax(z); (1 - (p ** q).sum(-1)) / (q - 1)`` and against the single-read floor
  ``z.amax(-1)`` (a ratio near 1 there means the kernel runs at memory speed).
  Shapes: [2048, 49152] (SmolLM2's vocabulary) everywhere, [512, 49152] on CPU,
  [8192, 128256] (Llama 3's) on CUDA only; fp32, and bf16 on CUDA.
- ``linear_tsallis_entropy`` (chunked LM head + entropy) against materialising the logits:
  time and peak memory.

Run: ``pytest benchmarks/bench_entropy.py --benchmark-only``. Nothing here asserts on time.
"""

from __future__ import annotations

import pytest
import torch

import alter_kernels as ak
from alter_kernels._backend import select
from benchmarks.conftest import peak_memory, synchronized

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
SHAPES = [(2048, 49152), (8192, 128256)] if CUDA else [(512, 49152), (2048, 49152)]
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]
Q = 1.5


def naive_tsallis(z: torch.Tensor, q: float) -> torch.Tensor:
    p = torch.softmax(z, dim=-1)
    return (1 - (p ** q).sum(-1)) / (q - 1)


def _logits(shape, dtype):
    g = torch.Generator(device=DEVICE).manual_seed(0)
    return (torch.randn(*shape, generator=g, device=DEVICE) * 3).to(dtype)


def _rounds(shape) -> int:
    return 20 if CUDA else (10 if shape[0] <= 512 else 4)


def _id(value):
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value).replace("torch.", "")


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("reference", ["naive torch", "amax floor"])
def test_tsallis_entropy_speed(benchmark, compare, shape, dtype, reference):
    z = _logits(shape, dtype)
    backend = select(z.device, has_cpp=True)
    kernel = synchronized(lambda: ak.tsallis_entropy(z, Q), DEVICE)
    if reference == "naive torch":
        ref = synchronized(lambda: naive_tsallis(z, Q), DEVICE)
    else:
        ref = synchronized(lambda: z.amax(-1), DEVICE)
    compare(benchmark, kernel, ref, label=f"{backend} vs {reference}", rounds=_rounds(shape))
    del z


LINEAR = dict(n=8192, d=2048, vocab=128256, dtype=torch.bfloat16, chunk=None) if CUDA else \
    dict(n=512, d=576, vocab=49152, dtype=torch.float32, chunk=128)


def test_linear_tsallis_entropy_memory(benchmark, compare, record_ratio):
    cfg = LINEAR
    g = torch.Generator(device=DEVICE).manual_seed(1)
    hidden = torch.randn(cfg["n"], cfg["d"], generator=g, device=DEVICE).to(cfg["dtype"])
    weight = (torch.randn(cfg["vocab"], cfg["d"], generator=g, device=DEVICE) * cfg["d"] ** -0.5).to(cfg["dtype"])

    def chunked():
        return ak.linear_tsallis_entropy(hidden, weight, Q, chunk_size=cfg["chunk"])

    def materialised():
        with torch.no_grad():
            return ak.tsallis_entropy(hidden @ weight.t(), Q)

    tol = 1e-4 if cfg["dtype"] == torch.float32 else 2e-2      # bf16 GEMMs may round per chunk
    torch.testing.assert_close(chunked(), materialised(), rtol=tol, atol=tol)
    compare(benchmark, synchronized(chunked, DEVICE), synchronized(materialised, DEVICE),
            label="chunked vs materialised logits (time)", rounds=3 if not CUDA else 10)
    chunked_peak = peak_memory(chunked, DEVICE) / 2**20
    full_peak = peak_memory(materialised, DEVICE) / 2**20
    ratio = record_ratio("chunked vs materialised logits (peak memory)", chunked_peak, full_peak, "MiB")
    benchmark.extra_info.update(peak_mib=chunked_peak, materialised_peak_mib=full_peak, memory_ratio=ratio)


@pytest.mark.skipif(not CUDA, reason="HBM bandwidth share: CUDA only")
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_entropy_bandwidth_share(benchmark, record_ratio, dtype):
    """Share of the practical HBM bandwidth the entropy kernel reaches at Llama 3's vocabulary: its
    bytes read per second against a device copy's bytes moved (read + write) per second. Target
    (issue 10): >= 0.85."""
    from benchmarks.conftest import interleaved_medians

    z = _logits((8192, 128256), dtype)
    dst = torch.empty_like(z)
    kernel = synchronized(lambda: ak.tsallis_entropy(z, Q), DEVICE)
    copy = synchronized(lambda: dst.copy_(z), DEVICE)
    benchmark.pedantic(kernel, rounds=10, iterations=1, warmup_rounds=2)
    t_kernel, t_copy = interleaved_medians(kernel, copy, rounds=10, warmup_rounds=2)
    gb = z.numel() * z.element_size() / 1e9
    share = record_ratio("entropy GB/s read vs copy_ GB/s moved", t_kernel / gb, t_copy / (2 * gb), "s/GB")
    benchmark.extra_info.update(kernel_gbps=gb / t_kernel, copy_gbps=2 * gb / t_copy, share=share)
