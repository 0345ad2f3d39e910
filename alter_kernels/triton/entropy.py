"""One-pass Tsallis entropy of softmax(logits) on rows of logits (docs/method.md §2).

Kernel: :func:`_tsallis_entropy_kernel`; launcher: :func:`tsallis_entropy_triton`.

Performance design. Every logit is read from HBM exactly once, so the target is the memory
bandwidth ([2048, 49152] and [8192, 128256], fp32 and bf16, on an H100: 3.35 TB/s). Per logit
the loop executes about 13 SASS instructions (bf16 at 32 logits per thread, counted in the
sm_90 SASS of this kernel) of which two are MUFU.EX2 (one for q = 1 and q = 2). At 16 MUFU
results per clock per SM the exponentials need 0.125 clock per logit and SM, while HBM
delivers a bf16 logit every ~0.15 clock per SM (an fp32 one every ~0.3): bf16 with a general
q is the tight case (exp throughput ~80% of the memory time), fp32 and q in {1, 2} have ample
slack. Loads are 128-bit (rows with a 16-element-aligned stride, as Triton specialises them),
the next tile is prefetched into registers while the current one is reduced, and the two
sums share one reduction tree (one barrier pair per tile). ``(BLOCK, num_warps)`` is autotuned
on CUDA over 2048-16384 logits per tile and 4-16 warps (:data:`_CUDA_CONFIGS`).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple, Union

import torch
import triton
import triton.language as tl

from alter_kernels._backend import triton_interpreting

_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)
_IDX_NONE = tl.constexpr(2147483647)      # int32 max: "no finite logit seen in this lane yet"
_FLT_MAX = 3.4028234663852886e38

# Q_MODE constexpr values
_Q_GENERAL = 0                  # any q > 0 other than 1 and 2
_Q_SHANNON = 1                  # q == 1 exactly: Shannon entropy
_Q_TWO = 2                      # q == 2 exactly: sum p^2 needs no second exp


@triton.jit
def _add_pair(a0, a1, b0, b1):
    """Combine function of a two-operand sum reduction (one reduction tree, one barrier pair)."""
    return a0 + b0, a1 + b1


@triton.jit
def _tsallis_entropy_kernel(rows_ptr, ent_ptr, lse_ptr, amax_ptr, runner_ptr, V, stride_row, q, d_floor,
                            BLOCK: tl.constexpr, Q_MODE: tl.constexpr, STATS: tl.constexpr):
    """Tsallis entropy S_q of p = softmax(z) for one row z of the logits (docs/method.md §2).

    Math (one pass, online softmax over tiles of BLOCK logits; m is the running max):
        s1 = sum_i exp(z_i - m),  sq = sum_i exp(q (z_i - m))      (Q_MODE 0, 2)
        t  = sum_i exp(z_i - m) (z_i - m)                          (Q_MODE 1, Shannon)
    When the max grows from m to m' (d = m - m' <= 0): s1 <- e^d s1, sq <- e^(q d) sq,
    t <- e^d (t + d s1). At the end
        S_q = (1 - sq / s1^q) / (q - 1)          (q != 1;  sum_i p_i^q = sq / s1^q)
        S_1 = log s1 - t / s1                    (q == 1)
    and with STATS: lse = m + log s1, argmax (first index on ties), runner-up logit value (the
    largest logit after removing one occurrence of the max: equals the max when it is attained
    twice, -inf when the row has a single finite entry).

    Implementation: exponentials run in base 2: per element ``d = (z - m) log2 e`` (exactly 0
    at the max, so a one-hot row gives s1 = sq = 1 and entropy exactly 0), ``exp2(d)`` and, for
    general q, ``exp2(q d)`` — one MUFU instruction each; t is accumulated in log2 units and
    scaled by ln 2 at the end. The per-tile max and the two sums are block reductions (the two
    sums share one reduction tree).

    Shapes / dtypes:
        rows_ptr: [N, V] fp32 | bf16 | fp16, unit stride along V, row stride ``stride_row``.
        ent_ptr: [N] fp32. With STATS: lse_ptr [N] fp32, amax_ptr [N] int64, runner_ptr [N] fp32.
        q: fp32 scalar (unused when Q_MODE is 1 or 2). Grid: (N,), one program per row.
        Arithmetic in fp32.

    A row holding a NaN gives NaN entropy, lse and runner-up (NaN in, NaN out; docs/method.md §2).
    -inf logits contribute nothing (exp2(-inf) = 0); an all -inf row yields entropy 0, lse
    -inf, argmax 0 and runner-up -inf without forming exp(-inf - -inf): the rescaling exponent
    (and, for Shannon, d) is clamped below at ``d_floor``, a huge negative finite number chosen
    by the launcher so that ``q * d_floor`` stays finite, where exp2 is 0 and ``0 * d_floor``
    is 0 rather than NaN.

    Latency hiding: the next tile is loaded into registers before the current one is reduced,
    so every program always has one tile's worth of loads in flight.
    """
    row = tl.program_id(0).to(tl.int64)
    base = rows_ptr + row * stride_row
    offs = tl.arange(0, BLOCK)

    m = tl.full([], float("-inf"), tl.float32)       # running max of the row (raw logit units)
    s1 = tl.zeros([], dtype=tl.float32)              # sum exp(z - m)
    acc = tl.zeros([], dtype=tl.float32)             # sq (Q_MODE 0, 2) or t in log2 units (Q_MODE 1)
    if STATS:
        top1 = tl.full([BLOCK], float("-inf"), tl.float32)   # per-lane max
        top2 = tl.full([BLOCK], float("-inf"), tl.float32)   # per-lane runner-up
        top_idx = tl.full([BLOCK], _IDX_NONE, tl.int32)     # per-lane index of top1 (first)

    z_raw = tl.load(base + offs, mask=offs < V, other=float("-inf"))
    for start in range(0, V, BLOCK):
        cols = start + offs
        nxt = cols + BLOCK
        z_next = tl.load(base + nxt, mask=nxt < V, other=float("-inf"))     # prefetch (raw dtype)
        z = z_raw.to(tl.float32)

        m_new = tl.maximum(m, tl.max(z, axis=0))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)         # finite reference point
        dm = tl.maximum((m - m_ref) * _LOG2E, d_floor)              # <= 0; d_floor while m = -inf
        alpha = tl.exp2(dm)                                          # e^(m - m'); 0 while m = -inf
        d = (z - m_ref) * _LOG2E                                     # log2 units; exactly 0 at the max
        if Q_MODE == 1:
            d = tl.maximum(d, d_floor)                               # e * d = 0 (not NaN) at -inf
            e = tl.exp2(d)
            sum_e, sum_ed = tl.reduce((e, e * d), 0, _add_pair)
            acc = alpha * (acc + dm * s1) + sum_ed
        elif Q_MODE == 2:
            e = tl.exp2(d)
            sum_e, sum_ee = tl.reduce((e, e * e), 0, _add_pair)
            acc = acc * (alpha * alpha) + sum_ee
        else:
            e = tl.exp2(d)
            sum_e, sum_eq = tl.reduce((e, tl.exp2(d * q)), 0, _add_pair)
            acc = acc * tl.exp2(dm * q) + sum_eq
        s1 = s1 * alpha + sum_e
        m = m_new

        if STATS:
            gt = z > top1
            top2 = tl.where(gt, top1, tl.maximum(top2, z))
            top1 = tl.where(gt, z, top1)
            top_idx = tl.where(gt, cols, top_idx)
        z_raw = z_next

    s1_safe = tl.where(s1 > 0.0, s1, 1.0)            # s1 >= ~1 whenever the row has a finite entry
    if Q_MODE == 1:
        ent = tl.log(s1_safe) - (acc / s1_safe) * _LN2
    else:
        ratio = acc / tl.exp2(q * tl.log2(s1_safe))  # sum_i p_i^q
        ent = (1.0 - ratio) / (q - 1.0)
    has_nan = s1 != s1                                # a NaN logit reaches s1 whatever the max does
    ent = tl.where(s1 > 0.0, ent, tl.where(has_nan, float("nan"), 0.0))
    tl.store(ent_ptr + row, ent)

    if STATS:
        lse = tl.where(s1 > 0.0, m + tl.log(s1_safe), float("-inf"))
        best = tl.max(top1, axis=0)
        arg = tl.min(tl.where(top1 == best, top_idx, _IDX_NONE), axis=0)
        arg = tl.where(arg == _IDX_NONE, 0, arg)    # all -inf row: index 0, like torch.argmax
        runner = tl.max(tl.where(top_idx == arg, top2, top1), axis=0)
        lse = tl.where(has_nan, float("nan"), lse)
        runner = tl.where(has_nan, float("nan"), runner)
        tl.store(lse_ptr + row, lse)
        tl.store(amax_ptr + row, arg.to(tl.int64))
        tl.store(runner_ptr + row, runner)


# (BLOCK, num_warps) tried on CUDA. A thread holds BLOCK / (32 num_warps) logits of the current
# tile plus as many prefetched: 16-32 per thread here (~50-115 registers without STATS, checked
# on sm_90 SASS), which leaves room for 2-3 resident programs per SM and 16-64 KB of loads in
# flight per SM.
_CUDA_CONFIGS = ((2048, 4), (4096, 4), (4096, 8), (8192, 8), (8192, 16), (16384, 16))


def _prune_configs(configs, named_args, **kwargs):
    """Drop tiles wider than the row, and for STATS (3 more per-lane vectors) > 16 logits per thread."""
    v_pow2 = triton.next_power_of_2(int(named_args["V"]))
    if v_pow2 <= 2048:                               # one tile covers the row
        block = max(16, v_pow2)
        return [triton.Config({"BLOCK": block}, num_warps=max(1, min(4, block // 256)), num_stages=1)]
    kept = [c for c in configs if c.kwargs["BLOCK"] <= v_pow2]
    if kwargs.get("STATS"):
        kept = [c for c in kept if c.kwargs["BLOCK"] // (32 * c.num_warps) <= 16]
    return kept


@functools.lru_cache(maxsize=None)
def _tuned_kernel():
    """The kernel autotuned over :data:`_CUDA_CONFIGS` (CUDA only; never under the interpreter)."""
    configs = [triton.Config({"BLOCK": b}, num_warps=w, num_stages=1) for b, w in _CUDA_CONFIGS]
    return triton.autotune(configs=configs, key=["V", "Q_MODE", "STATS"],
                           prune_configs_by={"early_config_prune": _prune_configs})(_tsallis_entropy_kernel)


def _default_block(V: int) -> int:
    """Tile of the untuned path (the interpreter, whose cost is per tile: as large as useful)."""
    return max(16, min(triton.next_power_of_2(V), 16384))


def _num_warps(block: int, stats: bool) -> int:
    """Warps for an explicit ``block``: 32 logits per thread (16 with STATS), 1 to 16 warps."""
    return max(1, min(16, block // (32 * (16 if stats else 32))))


def tsallis_entropy_triton(rows: torch.Tensor, q: float, return_stats: bool = False, *,
                           block: Optional[int] = None
                           ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Tsallis entropy of softmax over each row of ``rows`` (docs/method.md §2), one pass.

    Args:
        rows: ``[N, V]`` fp32, bf16 or fp16; ``rows.stride(-1) == 1`` (row stride arbitrary);
            on CUDA, or on CPU under ``TRITON_INTERPRET=1``.
        q: Tsallis parameter > 0; exactly 1.0 gives Shannon entropy.
        return_stats: also return log-sum-exp, arg-max and runner-up logit of each row.
        block: logits per tile (a power of two >= 16). None: autotuned on CUDA (with the
            interpreter: ``min(next_pow2(V), 16384)``). Tests pass small blocks to exercise
            the tiling and its masks.

    Returns:
        ``[N]`` fp32 entropies, or ``(entropy fp32, lse fp32, argmax int64, runner_up fp32)``.
    """
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2:
        raise ValueError(f"rows must be a 2-D tensor [N, V], got {getattr(rows, 'shape', type(rows).__name__)}")
    if rows.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"rows must be fp32, bf16 or fp16, got {rows.dtype}")
    N, V = rows.shape
    if V == 0:
        raise ValueError(f"rows must have a non-empty vocabulary dimension, got shape {tuple(rows.shape)}")
    if V > 1 and rows.stride(1) != 1:
        raise ValueError(f"rows must have unit stride along V, got strides {rows.stride()}")
    if V >= 2**31 - 2**20:
        raise ValueError(f"rows has V = {V} columns; at most 2^31 - 2^20 are supported (int32 indices)")
    q = float(q)
    if not q > 0.0 or q == float("inf"):
        raise ValueError(f"q must be a finite number > 0, got {q}")
    if block is not None:
        block = int(block)
        if block < 16 or block & (block - 1):
            raise ValueError(f"block must be a power of two >= 16, got {block}")

    q_mode = _Q_SHANNON if q == 1.0 else (_Q_TWO if q == 2.0 else _Q_GENERAL)
    device = rows.device
    entropy = torch.empty(N, dtype=torch.float32, device=device)
    if return_stats:
        lse = torch.empty(N, dtype=torch.float32, device=device)
        argmax = torch.empty(N, dtype=torch.int64, device=device)
        runner_up = torch.empty(N, dtype=torch.float32, device=device)
    else:
        lse = argmax = runner_up = entropy             # unused by the kernel when STATS is False
    if N == 0:
        return (entropy, lse, argmax, runner_up) if return_stats else entropy

    row_stride = rows.stride(0) if N > 1 else V
    d_floor = -_FLT_MAX / (4.0 * max(1.0, q))       # finite after scaling by q * log2(e)
    grid = (N,)
    if device.type == "cuda" and block is None and not triton_interpreting():
        _tuned_kernel()[grid](rows, entropy, lse, argmax, runner_up, V, row_stride, q, d_floor,
                              Q_MODE=q_mode, STATS=bool(return_stats))
    else:
        if block is None:
            block = _default_block(V)
        _tsallis_entropy_kernel[grid](rows, entropy, lse, argmax, runner_up, V, row_stride, q, d_floor,
                                      BLOCK=block, Q_MODE=q_mode, STATS=bool(return_stats),
                                      num_warps=_num_warps(block, bool(return_stats)), num_stages=1)
    if return_stats:
        return entropy, lse, argmax, runner_up
    return entropy
