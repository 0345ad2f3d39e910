"""Phase II's fused model-side loss (alter/train/fused_loss.py) against the autograd composition of the same
terms (hinge + retain CE + top-k KL, each a masked mean over every position): forward + backward, time and
peak memory, as ratios measured in-process; and the same loss with the LM head applied inside it, chunk by
chunk (``fused_lm_head``), against the head's matmul followed by the loss on the whole logits.

Shape: 8 rows x 130 positions, SmolLM2's vocabulary (49152); on CUDA also Llama 3's (128256). fp32 logits,
half the rows forget rows (hinge on their answer positions), half retain (CE on theirs), the KL on every
other position. Run: ``pytest benchmarks/bench_losses.py --benchmark-only``. Nothing here asserts on time.
"""

from __future__ import annotations

import pytest
import torch

import alter_kernels
from alter.train.fused_loss import phase2_model_loss
from alter.train.kl_targets import top_k_kl
from benchmarks.conftest import peak_memory, synchronized

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
VOCABS = [49152, 128256] if CUDA else [49152]
ROWS, POSITIONS, K = 8, 130, 32


def _batch(V):
    g = torch.Generator(device=DEVICE).manual_seed(0)
    N = ROWS * POSITIONS
    z = torch.randn(N, V, generator=g, device=DEVICE) * 3
    labels = torch.randint(0, V, (N,), generator=g, device=DEVICE)
    position = torch.arange(N, device=DEVICE) % POSITIONS
    answer = position >= 70
    forget_row = torch.arange(N, device=DEVICE) // POSITIONS < ROWS // 2
    hinge_w, retain_w = forget_row & answer, ~forget_row & answer
    kl_w = ~hinge_w
    ids = torch.randint(0, V, (N, K), generator=g, device=DEVICE)
    log_p = torch.log_softmax(torch.randn(N, K + 1, generator=g, device=DEVICE), -1)
    return z, labels, hinge_w, retain_w, kl_w, ids, log_p


def _fused(z, labels, hinge_w, retain_w, kl_w, ids, log_p):
    zg = z.clone().requires_grad_(True)
    phase2_model_loss(zg, labels, hinge_w, retain_w, kl_w, ids, log_p, margin=1.0, lambda_forget=1.0,
                      lambda_retain=1.0, lambda_struct=1.0)["loss"].backward()
    return zg.grad


def _composed(z, labels, hinge_w, retain_w, kl_w, ids, log_p):
    zg = z.clone().requires_grad_(True)
    hinge = alter_kernels.hinge_forget_loss(zg, torch.where(hinge_w, labels, torch.full_like(labels, -100)), 1.0)
    nll = torch.logsumexp(zg, -1) - zg.gather(1, labels[:, None]).squeeze(1)
    retain = torch.where(retain_w, nll, torch.zeros_like(nll)).sum() / retain_w.sum().clamp_min(1)
    (hinge + retain + top_k_kl(zg, ids, log_p, weight=kl_w)).backward()
    return zg.grad


@pytest.mark.parametrize("V", VOCABS)
def test_fused_phase2_loss(benchmark, compare, record_ratio, V):
    inputs = _batch(V)
    fused = synchronized(lambda: _fused(*inputs), DEVICE)
    composed = synchronized(lambda: _composed(*inputs), DEVICE)
    compare(benchmark, fused, composed, rounds=5,
            label=f"fused phase II loss fwd+bwd vs autograd terms [{ROWS}x{POSITIONS}, {V}]")
    record_ratio(f"fused phase II loss vs autograd terms, peak memory [{V}]", peak_memory(fused, DEVICE) / 2 ** 20,
                 peak_memory(composed, DEVICE) / 2 ** 20, "MiB")


HIDDEN = 576      # SmolLM2-135M's width


def _head_batch(V):
    z, labels, hinge_w, retain_w, kl_w, ids, log_p = _batch(V)
    g = torch.Generator(device=DEVICE).manual_seed(1)
    h = torch.randn(z.shape[0], HIDDEN, generator=g, device=DEVICE)
    w = torch.randn(V, HIDDEN, generator=g, device=DEVICE) / HIDDEN ** 0.5
    return h, w, labels, hinge_w, retain_w, kl_w, ids, log_p


def _through_head(h, w, labels, hinge_w, retain_w, kl_w, ids, log_p, *, fused_head: bool):
    hg = h.clone().requires_grad_(True)
    kw = dict(margin=1.0, lambda_forget=1.0, lambda_retain=1.0, lambda_struct=1.0)
    if fused_head:
        out = phase2_model_loss(None, labels, hinge_w, retain_w, kl_w, ids, log_p, hidden=hg, head_weight=w, **kw)
    else:
        out = phase2_model_loss(hg @ w.T, labels, hinge_w, retain_w, kl_w, ids, log_p, **kw)
    out["loss"].backward()
    return hg.grad


@pytest.mark.parametrize("V", VOCABS)
def test_fused_head_phase2_loss(benchmark, compare, record_ratio, V):
    """The LM head inside the loss (``fused_lm_head``: logits chunk by chunk, never whole) against the head's
    matmul followed by the fused loss on the whole logits; frozen head, gradient to the hidden states."""
    inputs = _head_batch(V)
    inside = synchronized(lambda: _through_head(*inputs, fused_head=True), DEVICE)
    outside = synchronized(lambda: _through_head(*inputs, fused_head=False), DEVICE)
    compare(benchmark, inside, outside, rounds=5,
            label=f"phase II loss with the head inside vs head then loss [{ROWS}x{POSITIONS}, {HIDDEN}->{V}]")
    record_ratio(f"phase II loss with the head inside vs head then loss, peak memory [{V}]",
                 peak_memory(inside, DEVICE) / 2 ** 20, peak_memory(outside, DEVICE) / 2 ** 20, "MiB")
