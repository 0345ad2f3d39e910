"""Entropy-dispatched expert gates (docs/method.md §1 and §3).

Kernel: :func:`_route_kernel`; launcher: :func:`route_triton`, with the semantics of
:func:`alter_kernels.reference.route_reference`.
"""

from __future__ import annotations

import functools
import math
from typing import Tuple

import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def _route_kernel(ent_ptr, u_ptr, out_ptr, N, E, stride_u, theta_hi, theta_mid, theta_lo, tau_high, tau_low,
                  top_k, retain_index, BLOCK_N: tl.constexpr, E_PAD: tl.constexpr, TRAIN: tl.constexpr,
                  ENT_F64: tl.constexpr):
    """Gate weights of BLOCK_N tokens over E experts (docs/method.md §1 and §3).

    Math, per token n with entropy H and router logits u (E entries), high = H >= theta:
        TRAIN:  w = softmax(u / tau),  tau = tau_high if high else tau_low        (section 1)
        infer, low:  one-hot at argmax u (lowest index on ties)                    (section 4)
        infer, high: w = softmax(u / tau_high); keep the retain expert and the ``top_k`` forget
                     experts with the largest w (lower index first on ties); zero the rest and
                     renormalise the kept weights to sum 1 (computed as a softmax over the kept
                     logits, so it never divides 0 by 0).

    Shapes / dtypes:
        ent_ptr: [N] fp32 | bf16 | fp16 | fp64.  u_ptr: [N, E] float, unit stride along E, row
        stride ``stride_u``.  out_ptr: [N, E] fp32, contiguous.
        theta = theta_hi + theta_mid + theta_lo: the threshold split into fp32 parts. For an
        fp64 entropy (ENT_F64) the three are summed in fp64, which restores the double exactly;
        otherwise theta_hi already is theta rounded to the entropy's dtype and the comparison is
        made in fp32, which equals torch's comparison of that dtype with a Python float.
        ``top_k`` here is already min(top_k, E - 1). Grid: (cdiv(N, BLOCK_N),); E_PAD >= E is a
        power of two, padded columns hold -inf logits and are never kept.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, E_PAD)
    rmask = rows < N
    cmask = cols < E
    mask = rmask[:, None] & cmask[None, :]
    u = tl.load(u_ptr + rows.to(tl.int64)[:, None] * stride_u + cols[None, :], mask=mask,
                other=float("-inf")).to(tl.float32)
    u = tl.where(rmask[:, None], u, 0.0)             # rows past N: finite, never stored
    ent = tl.load(ent_ptr + rows, mask=rmask, other=0.0)
    if ENT_F64:
        theta = tl.cast(theta_hi, tl.float64) + tl.cast(theta_mid, tl.float64) + tl.cast(theta_lo, tl.float64)
        high = ent >= theta
    else:
        high = ent.to(tl.float32) >= theta_hi

    if TRAIN:
        tau = tl.where(high, tau_high, tau_low)
        x = tl.div_rn(u, tl.broadcast_to(tau[:, None], (BLOCK_N, E_PAD)))
        ex = tl.exp(x - tl.max(x, axis=1)[:, None])
        gates = ex / tl.sum(ex, axis=1)[:, None]
    else:
        x = tl.div_rn(u, tl.full((BLOCK_N, E_PAD), tau_high, tl.float32))
        keep = tl.broadcast_to((cols == retain_index)[None, :], (BLOCK_N, E_PAD))
        cand = tl.broadcast_to((cmask & (cols != retain_index))[None, :], (BLOCK_N, E_PAD))
        for _ in range(top_k):
            xc = tl.where(cand, x, float("-inf"))
            best = tl.max(xc, axis=1)
            pick = tl.min(tl.where(cand & (xc == best[:, None]), cols[None, :], E_PAD), axis=1)
            chosen = cols[None, :] == pick[:, None]
            keep = keep | chosen
            cand = cand & (~chosen)
        # softmax over the kept experts only: equal to renormalising the kept weights, but the
        # retain expert (always kept) can never underflow to a 0 / 0
        xk = tl.where(keep, x, float("-inf"))
        ek = tl.exp(xk - tl.max(xk, axis=1)[:, None])
        high_gates = ek / tl.sum(ek, axis=1)[:, None]
        u_max = tl.max(u, axis=1)
        arg = tl.min(tl.where(u == u_max[:, None], cols[None, :], E_PAD), axis=1)
        low_gates = tl.where(cols[None, :] == arg[:, None], 1.0, 0.0)
        gates = tl.where(high[:, None], high_gates, low_gates)
    gates = tl.where((ent != ent)[:, None], float("nan"), gates)     # NaN entropy: NaN gates
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * E + cols[None, :], gates, mask=mask)


def _rounded(theta: float, dtype: torch.dtype) -> float:
    """``theta`` rounded to ``dtype`` as ``torch.tensor(theta, dtype=dtype)`` rounds it (through fp32,
    to nearest-even), computed on the host without making a tensor (no device work, nothing to sync)."""
    with np.errstate(over="ignore"):
        f32 = np.float32(theta)
    if dtype == torch.float32 or not np.isfinite(f32):
        return float(f32)
    if dtype == torch.float16:
        with np.errstate(over="ignore"):
            return float(np.float16(f32))
    if dtype == torch.bfloat16:
        bits = int(f32.view(np.uint32))
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return float(np.uint32(bits & 0xFFFFFFFF).view(np.float32))
    raise ValueError(f"no rounding rule for {dtype}")


def _split_theta(theta: float, entropy_dtype: torch.dtype):
    """theta as (hi, mid, lo) fp32-exact parts, see :func:`_route_kernel`. Memoised (numpy's error
    states make it cost a microsecond or more per call, and a model routes with one theta): a pure function of
    (theta, dtype); the key also holds theta's sign, so that -0.0 and 0.0 (equal as keys) keep
    their own entries."""
    return _split_theta_cached(theta, math.copysign(1.0, theta), entropy_dtype)


@functools.lru_cache(maxsize=256)
def _split_theta_cached(theta: float, sign: float, entropy_dtype: torch.dtype):
    if entropy_dtype != torch.float64:
        # rounded to the entropy's dtype, as torch does when comparing a tensor with a Python float
        return _rounded(theta, entropy_dtype), 0.0, 0.0
    if not math.isfinite(theta):
        return theta, 0.0, 0.0
    hi = _rounded(theta, torch.float32)
    if not math.isfinite(hi):                        # |theta| beyond fp32: every fp32-sized H is on one side
        return hi, 0.0, 0.0
    mid = _rounded(theta - hi, torch.float32)
    lo = _rounded(theta - hi - mid, torch.float32)
    return hi, mid, lo


@functools.lru_cache(maxsize=4096)
def _route_plan(N: int, E: int) -> Tuple[Tuple[int], int, int]:
    """(grid, BLOCK_N, E_PAD) for N tokens over E experts; memoised, as a pure function of (N, E)."""
    e_pad = max(2, triton.next_power_of_2(E))
    block_n = max(16, min(triton.next_power_of_2(N), 2048 // e_pad))    # <= 2048 gate entries per program
    return (triton.cdiv(N, block_n),), block_n, e_pad


def route_triton(entropy: torch.Tensor, router_logits: torch.Tensor, theta: float, *, tau_high: float = 2.0,
                 tau_low: float = 0.5, top_k: int = 3, retain_index: int = 0, mode: str = "infer",
                 checked: bool = True) -> torch.Tensor:
    """Gate weights ``[N, E]`` fp32 from entropies and router logits (docs/method.md §1 and §3).

    Same semantics as :func:`alter_kernels.reference.route_reference`; arguments are validated
    by :func:`alter_kernels.route`. ``entropy`` ``[N]`` float, ``router_logits`` ``[N, E]`` float
    with unit stride along E, both on one device. ``checked=False`` (from
    :func:`alter_kernels.route`, which has made them) skips the checks of the shapes, ``mode`` and
    ``retain_index``.
    """
    if checked:
        if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
            raise ValueError("router_logits must be a 2-D tensor [N, E]")
    N, E = router_logits.shape
    if checked:
        if not isinstance(entropy, torch.Tensor) or entropy.shape != (N,):
            raise ValueError(f"entropy must be a tensor of shape [{N}], got {getattr(entropy, 'shape', None)}")
        if E < 1:
            raise ValueError(f"router_logits must have at least one expert column, got shape "
                             f"{tuple(router_logits.shape)}")
        if mode not in ("infer", "train"):
            raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
        if not 0 <= int(retain_index) < E:
            raise ValueError(f"retain_index must be in [0, {E}), got {retain_index}")
    if E > 1 and router_logits.stride(1) != 1:
        router_logits = router_logits.contiguous()
    entropy = entropy.contiguous()
    out = torch.empty(N, E, dtype=torch.float32, device=router_logits.device)
    if N == 0:
        return out
    grid, block_n, e_pad = _route_plan(N, E)
    hi, mid, lo = _split_theta(float(theta), entropy.dtype)
    k = max(0, min(int(top_k), E - 1))
    _route_kernel[grid](entropy, router_logits, out, N, E, router_logits.stride(0) if N > 1 else E, hi, mid, lo,
                        float(tau_high), float(tau_low), k, int(retain_index), BLOCK_N=block_n, E_PAD=e_pad,
                        TRAIN=(mode == "train"), ENT_F64=(entropy.dtype == torch.float64), num_warps=4)
    return out
