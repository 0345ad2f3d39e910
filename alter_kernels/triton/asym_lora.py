"""The gated shared-A / multi-B LoRA matmul as three Triton kernels (docs/method.md §1 and §4).

Launchers ``shrink_gate``, ``expand_add``, ``expand_backward`` and ``bind_inference`` have the
names and contracts of :mod:`alter_kernels.composite.asym_lora` (the CPU path), so that
:class:`alter_kernels.autograd.asym_lora.AsymLoRAFunction` drives either. The weight gradients
(dA, dB) and dx are plain GEMMs left to torch in the autograd function.

Shapes: x [N, d_in], A [r, d_in], gates [N, E], B_cat [d_out, E*r] (B_cat[:, e*r:(e+1)*r] = B_e),
h [N, r], hg [N, E*r] (hg[n, e*r + j] = gates[n, e] * h[n, j]). Inputs fp32, bf16, fp16 or
fp64; outputs in x's dtype; accumulation in CT = fp32 (fp64 for fp64 inputs), each output
rounded once.

Every ``tl.dot`` operand dimension is padded (with masked loads) to a power of two >= 16, as
the GPU compiler requires: a rank r = 8 runs as 16 columns of which 8 are zero. fp32 inputs
use TF32 tensor cores only when ``torch.backends.cuda.matmul.allow_tf32`` is set (torch's own
rule for fp32 matmuls) and otherwise the 3-pass TF32 split ("tf32x3"), which keeps fp32
accuracy on tensor cores; fp64 uses "ieee".

All three kernels are memory-bound at LoRA ranks (the inner or outer dimension is E*r, a few
dozen): tiles are sized so that the large operand (x, the base output, grad_out) is streamed
once through pipelined loads while the small one (A, B_cat) is re-read from L2.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl

from alter_kernels._backend import triton_interpreting


@triton.jit
def _round_to(x, ty: tl.constexpr, INTERP: tl.constexpr):
    """``x`` (CT) rounded to nearest-even in ``ty``.

    On the GPU this is the plain conversion (cvt.rn). Triton's interpreter truncates fp32 -> bf16
    instead, so under the interpreter the rounding is done on the bits first (the conversion of
    the then exactly representable value is exact).
    """
    if INTERP and ty == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        x = bits.to(tl.float32, bitcast=True)
    return x.to(ty)


@triton.jit
def _shrink_gate_kernel(x_ptr, a_ptr, g_ptr, h_ptr, hg_ptr, N, D_IN, R, E,
                        stride_xn, stride_ar, stride_gn, stride_hn, stride_hgn,
                        BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, R_PAD: tl.constexpr,
                        PRECISION: tl.constexpr, INTERP: tl.constexpr, CT: tl.constexpr):
    """Shrink and gate: h = x A^T, hg[:, e*r + j] = gates[:, e] * h[:, j] (docs/method.md §1).

    Shapes / dtypes: x [N, D_IN], A [R, D_IN] (unit stride along D_IN), gates [N, E];
    h [N, R] and hg [N, E*R] (unit inner stride) in x's dtype. Grid: (cdiv(N, BLOCK_M),).

    Each program streams BLOCK_M rows of x through BLOCK_K-wide tiles, accumulating
    ``x_tile @ A_tile^T`` ([BLOCK_M, R_PAD], CT) with R padded to R_PAD >= 16 by masked (zero)
    rows of A. h is rounded to x's dtype first and hg is formed from that rounded h (what the
    composite path computes: gates * h in x's dtype), one expert at a time, so hg never needs
    more than a [BLOCK_M, R_PAD] tile of registers whatever E is. INTERP (interpreter only)
    feeds 16-bit operands to tl.dot as fp32 and rounds to bf16 by hand (:func:`_round_to`).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    rr = tl.arange(0, R_PAD)
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, R_PAD), dtype=CT)
    for k0 in range(0, D_IN, BLOCK_K):
        kidx = k0 + kk
        kmask = kidx < D_IN
        x = tl.load(x_ptr + rows64[:, None] * stride_xn + kidx[None, :], mask=rmask[:, None] & kmask[None, :],
                    other=0.0)
        a = tl.load(a_ptr + rr[:, None] * stride_ar + kidx[None, :], mask=(rr < R)[:, None] & kmask[None, :],
                    other=0.0)
        if INTERP:
            x = x.to(CT)
            a = a.to(CT)
        acc = tl.dot(x, tl.trans(a), acc, input_precision=PRECISION, out_dtype=CT)

    out_ty: tl.constexpr = h_ptr.dtype.element_ty
    h = _round_to(acc, out_ty, INTERP)
    hmask = rmask[:, None] & (rr < R)[None, :]
    tl.store(h_ptr + rows64[:, None] * stride_hn + rr[None, :], h, mask=hmask)
    hc = h.to(CT)
    for e in range(E):
        g = tl.load(g_ptr + rows64 * stride_gn + e, mask=rmask, other=0.0).to(CT)
        hg = _round_to(g[:, None] * hc, out_ty, INTERP)
        tl.store(hg_ptr + rows64[:, None] * stride_hgn + (e * R + rr)[None, :], hg, mask=hmask)


@triton.jit
def _expand_add_kernel(hg_ptr, b_ptr, out_ptr, N, D_OUT, K, scaling,
                       stride_hgn, stride_bo, stride_on, stride_od,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       HAS_OUT: tl.constexpr, PRECISION: tl.constexpr, INTERP: tl.constexpr, CT: tl.constexpr):
    """Stacked expand with fused accumulate: out += scaling * hg @ B_cat^T (docs/method.md §1).

    Shapes / dtypes: hg [N, K = E*r], B_cat [D_OUT, K] (unit stride along K); out [N, D_OUT]
    (any strides), read and written in place when HAS_OUT, else written as the plain product.
    Grid: (cdiv(N, BLOCK_M), cdiv(D_OUT, BLOCK_N)).

    One GEMM over the whole expert stack: the K = E*r inner dimension is looped in BLOCK_K
    (>= 16, zero-padded by masks) chunks with an fp32 accumulator; the epilogue loads the base
    output tile, adds ``scaling * acc`` in fp32 and rounds once to out's dtype, so the adapter
    costs no [N, D_OUT] buffer of its own. The base tile is loaded before the GEMM loop so that
    its latency overlaps the (short: K is a few dozen) loop.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    cmask = cols < D_OUT
    rows64 = rows.to(tl.int64)
    cols64 = cols.to(tl.int64)
    out_ptrs = out_ptr + rows64[:, None] * stride_on + cols64[None, :] * stride_od
    omask = rmask[:, None] & cmask[None, :]
    if HAS_OUT:
        base = tl.load(out_ptrs, mask=omask, other=0.0)       # issued before the GEMM: overlaps it
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=CT)
    for k0 in range(0, K, BLOCK_K):
        kidx = k0 + kk
        kmask = kidx < K
        a = tl.load(hg_ptr + rows64[:, None] * stride_hgn + kidx[None, :], mask=rmask[:, None] & kmask[None, :],
                    other=0.0)
        b = tl.load(b_ptr + cols64[:, None] * stride_bo + kidx[None, :], mask=cmask[:, None] & kmask[None, :],
                    other=0.0)
        if INTERP:
            a = a.to(CT)
            b = b.to(CT)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION, out_dtype=CT)

    res = acc * scaling
    if HAS_OUT:
        res = base.to(CT) + res
    tl.store(out_ptrs, _round_to(res, out_ptr.dtype.element_ty, INTERP), mask=omask)


@triton.jit
def _expand_backward_kernel(go_ptr, b_ptr, h_ptr, g_ptr, dh_ptr, dg_ptr, N, D_OUT, R, E, scaling,
                            stride_gon, stride_bo, stride_hn, stride_gn, stride_dhc, stride_dhn, stride_dgn,
                            BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, EC: tl.constexpr, R_PAD: tl.constexpr,
                            DENSE: tl.constexpr, PRECISION: tl.constexpr, INTERP: tl.constexpr,
                            CT: tl.constexpr):
    """Backward of the gated expand without materialising dhg (docs/method.md §1 and §4).

    Math, with G = dL/d(out) [N, D_OUT]:
        dhg[n, e, j] = scaling * sum_o G[n, o] B_cat[o, e*R + j]
        dh[n, j]     = sum_e gates[n, e] dhg[n, e, j]
        dgates[n, e] = sum_j dhg[n, e, j] h[n, j]

    Shapes / dtypes: G [N, D_OUT], B_cat [D_OUT, E*R], h [N, R], gates [N, E] (unit inner
    strides); dgates [N, E] in gates' dtype; dh [N, R] in h's dtype, or (several expert chunks)
    fp32 partial sums [n_chunks, N, R] that the launcher adds up.
    Grid: (n_chunks, cdiv(N, BLOCK_M)) with n_chunks = cdiv(E, EC): program (c, m) handles rows
    m*BLOCK_M.. and experts c*EC..c*EC+EC-1 (chunks of one row block run side by side, so G is
    read from HBM once and from L2 by the other chunks).

    The dhg tile lives only in registers: columns are laid out as (expert e_local, rank j) on an
    [EC, R_PAD] grid (both powers of two, EC*R_PAD >= 16), loaded from B_cat through masks, one
    tl.dot per BLOCK_K slice of D_OUT accumulates it in fp32, and the epilogue reshapes it to
    [BLOCK_M, EC, R_PAD] and contracts it with gates (over e) and h (over j). DENSE (r a power
    of two, no rank padding) makes the B_cat tile one contiguous column range, so it is loaded
    with vector / async copies instead of a gather.
    """
    pid_c = tl.program_id(0)
    pid_m = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    cc = tl.arange(0, EC * R_PAD)
    e_of_c = pid_c * EC + cc // R_PAD
    j_of_c = cc % R_PAD
    if DENSE:                       # R == R_PAD: the chunk is one contiguous column range of B_cat
        bcol = pid_c * (EC * R_PAD) + cc
        cvalid = bcol < E * R
    else:
        cvalid = (e_of_c < E) & (j_of_c < R)
        bcol = e_of_c * R + j_of_c
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, EC * R_PAD), dtype=CT)
    for k0 in range(0, D_OUT, BLOCK_K):
        kidx = k0 + kk
        kmask = kidx < D_OUT
        go = tl.load(go_ptr + rows64[:, None] * stride_gon + kidx[None, :], mask=rmask[:, None] & kmask[None, :],
                     other=0.0)
        b = tl.load(b_ptr + kidx.to(tl.int64)[:, None] * stride_bo + bcol[None, :],
                    mask=kmask[:, None] & cvalid[None, :], other=0.0)
        if INTERP:
            go = go.to(CT)
            b = b.to(CT)
        acc = tl.dot(go, b, acc, input_precision=PRECISION, out_dtype=CT)

    dhg = tl.reshape(acc * scaling, (BLOCK_M, EC, R_PAD))
    ee = pid_c * EC + tl.arange(0, EC)
    rr = tl.arange(0, R_PAD)
    emask = ee < E
    g = tl.load(g_ptr + rows64[:, None] * stride_gn + ee[None, :], mask=rmask[:, None] & emask[None, :],
                other=0.0).to(CT)
    h = tl.load(h_ptr + rows64[:, None] * stride_hn + rr[None, :], mask=rmask[:, None] & (rr < R)[None, :],
                other=0.0).to(CT)
    dh = tl.sum(dhg * g[:, :, None], axis=1)                     # [BLOCK_M, R_PAD]
    dg = tl.sum(dhg * h[:, None, :], axis=2)                     # [BLOCK_M, EC]
    tl.store(dg_ptr + rows64[:, None] * stride_dgn + ee[None, :], _round_to(dg, dg_ptr.dtype.element_ty, INTERP),
             mask=rmask[:, None] & emask[None, :])
    tl.store(dh_ptr + pid_c * stride_dhc + rows64[:, None] * stride_dhn + rr[None, :],
             _round_to(dh, dh_ptr.dtype.element_ty, INTERP), mask=rmask[:, None] & (rr < R)[None, :])


# ---------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------
#
# Host cost: on the GPU these kernels run for microseconds, so the Python around a launch shows
# in a layer's wall time. Two things are therefore not redone per call:
# - the launch plan (tiles, warps, grid, tl.dot precision) is a pure function of the sizes, the
#   dtype, the device and two switches (whether Triton interprets, torch's allow_tf32), so it is
#   memoised per distinct key (:func:`_shrink_plan`, :func:`_expand_add_plan`,
#   :func:`_expand_backward_plan`); the switches are read at every call and are part of the key;
# - the input checks: a caller that has made them already (the autograd wrapper behind
#   :func:`alter_kernels.asym_lora` and :func:`alter_kernels.fused_alter_linear`, whose inputs
#   the ops layer validated and made contiguous) passes ``checked=False``. Direct callers keep the
#   default and get the same errors as before.

_FLOATS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_PLANS = 4096                 # plans kept per launcher (least recently used dropped): N varies with the batch


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _switches(dtype: torch.dtype, device: torch.device) -> Tuple[bool, bool]:
    """(interp, tf32): what a launch plan depends on besides sizes, dtype and device. Read at every
    call, as both can change while the process runs (``TRITON_INTERPRET``,
    ``torch.backends.cuda.matmul.allow_tf32``); tf32 matters, and is read, only for fp32 on the GPU."""
    interp = device.type != "cuda" or triton_interpreting()
    return interp, (dtype == torch.float32 and not interp and bool(torch.backends.cuda.matmul.allow_tf32))


def _launch_options(dtype: torch.dtype, interp: bool, tf32: bool) -> dict:
    """PRECISION (input_precision for tl.dot), INTERP and CT (accumulation dtype) for ``dtype``.

    INTERP works around two faults of Triton's interpreter (3.9), none of which exist on the GPU:
    its tl.dot reads bf16 operands as raw integers (so 16-bit operands are fed to it as fp32,
    which is exact) and it truncates fp32 -> bf16 (see :func:`_round_to`).
    """
    if dtype == torch.float32 and not interp:
        precision = "tf32" if tf32 else "tf32x3"
    elif dtype == torch.float64 or interp:
        precision = "ieee"
    else:
        precision = "tf32"                          # ignored for 16-bit operands
    return dict(PRECISION=precision, INTERP=interp, CT=(tl.float64 if dtype == torch.float64 else tl.float32))


def _rows_block(N: int, device: torch.device, interp: bool, cap: int = 64, floor: int = 16,
                other_programs: int = 1) -> int:
    """Rows per program: ``cap``, halved (down to ``floor``) while the grid would leave SMs idle.

    Large row tiles amortise the re-reads of the small operand (A or B_cat, from L2) over more
    rows; a small N (decoding) needs smaller tiles to spread the stream over the SMs.
    ``other_programs``: programs along the grid's other axis.
    """
    if interp:
        return max(16, min(cap, triton.next_power_of_2(max(N, 1))))
    n_sm = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    block = cap
    while block > floor and triton.cdiv(N, block) * other_programs < n_sm:
        block //= 2
    return block


def _check_2d(name: str, t, inner_unit: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{name} must be fp32, bf16, fp16 or fp64, got {t.dtype}")
    if inner_unit and t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"{name} must have unit stride along its last dimension, got strides {t.stride()}")


# Tile choices. Register counts were checked on the sm_90 SASS of each kernel (no spills at these
# sizes for fp32 / bf16 / fp16 / fp64); element size 2 = 16-bit, 4 = fp32 (3-pass TF32 needs
# ~3x the operand registers), 8 = fp64.

def _shrink_config(N: int, d_in: int, r: int, dtype: torch.dtype, device: torch.device, interp: bool) -> dict:
    size = dtype.itemsize
    r_pad = max(16, triton.next_power_of_2(r))
    return dict(BLOCK_M=_rows_block(N, device, interp, cap=64 if r_pad <= 64 else 32),
                BLOCK_K=max(16, min(128 if size == 2 else 64, triton.next_power_of_2(d_in))),
                R_PAD=r_pad, num_warps=4 if r_pad < 64 else 8, num_stages=3)


def _expand_add_config(N: int, d_out: int, K: int, dtype: torch.dtype, device: torch.device, interp: bool) -> dict:
    size = dtype.itemsize
    block_n = max(16, min({2: 128, 4: 64, 8: 32}[size], triton.next_power_of_2(d_out)))
    block_m = _rows_block(N, device, interp, cap=64, other_programs=triton.cdiv(d_out, block_n))
    block_k = max(16, min(64 if size <= 4 else 32, triton.next_power_of_2(K)))
    num_warps = 8 if (size == 2 and block_n == 128) or (size == 8 and block_m == 64) else 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=3)


def _expert_chunking(E: int, r: int, max_width: int) -> Tuple[int, int]:
    """(EC experts per program, R_PAD): EC * R_PAD in [16, max(max_width, R_PAD)], powers of two."""
    r_pad = triton.next_power_of_2(r)
    ec = min(triton.next_power_of_2(E), max(1, max_width // r_pad))
    if ec * r_pad < 16:
        r_pad = 16 // ec
    return ec, r_pad


def _expand_backward_config(N: int, d_out: int, r: int, E: int, dtype: torch.dtype, device: torch.device,
                            interp: bool) -> dict:
    wide = dtype.itemsize == 2
    ec, r_pad = _expert_chunking(E, r, 256 if wide else 64)
    n_chunks = triton.cdiv(E, ec)
    width = ec * r_pad
    block_m = _rows_block(N, device, interp, cap=128 if width <= 64 else (64 if wide else 32), floor=32,
                          other_programs=n_chunks)
    return dict(BLOCK_M=block_m, BLOCK_K=max(16, min(64 if wide else 32, triton.next_power_of_2(d_out))),
                EC=ec, R_PAD=r_pad, DENSE=(r_pad == r),
                num_warps=4 if (wide and block_m * width <= 4096) else 8, num_stages=3)


# The plans: (grid, kernel keywords) of one launch. Memoising them is safe because each is a pure
# function of its arguments, which are the whole key (the SM count behind _rows_block is fixed per
# device index, and a tensor's CUDA device always carries its index), and the keyword dict is only
# ever unpacked (**) into the launch, never changed.

@functools.lru_cache(maxsize=_PLANS)
def _shrink_plan(N: int, d_in: int, r: int, dtype: torch.dtype, device: torch.device, interp: bool,
                 tf32: bool) -> Tuple[Tuple[int], dict]:
    cfg = _shrink_config(N, d_in, r, dtype, device, interp)
    return (triton.cdiv(N, cfg["BLOCK_M"]),), dict(cfg, **_launch_options(dtype, interp, tf32))


@functools.lru_cache(maxsize=_PLANS)
def _expand_add_plan(N: int, d_out: int, K: int, dtype: torch.dtype, device: torch.device, has_out: bool,
                     interp: bool, tf32: bool) -> Tuple[Tuple[int, int], dict]:
    cfg = _expand_add_config(N, d_out, K, dtype, device, interp)
    grid = (triton.cdiv(N, cfg["BLOCK_M"]), triton.cdiv(d_out, cfg["BLOCK_N"]))
    return grid, dict(cfg, HAS_OUT=has_out, **_launch_options(dtype, interp, tf32))


@functools.lru_cache(maxsize=_PLANS)
def _expand_backward_plan(N: int, d_out: int, r: int, E: int, dtype: torch.dtype, device: torch.device,
                          interp: bool, tf32: bool) -> Tuple[Tuple[int, int], dict]:
    """Grid (n_chunks, row blocks) and keywords; n_chunks = grid[0] expert chunks."""
    cfg = _expand_backward_config(N, d_out, r, E, dtype, device, interp)
    grid = (triton.cdiv(E, cfg["EC"]), triton.cdiv(N, cfg["BLOCK_M"]))
    return grid, dict(cfg, **_launch_options(dtype, interp, tf32))


def shrink_gate(x: torch.Tensor, A: torch.Tensor, gates: torch.Tensor, *,
                checked: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """h = x A^T [N, r] and hg [N, E*r] with hg[n, e*r + j] = gates[n, e] * h[n, j] — one kernel.

    ``checked=False``: the caller guarantees what the checks enforce (x, A, gates 2-D float with
    unit inner stride, A [r, d_in] in x's dtype, gates with N rows, one device).
    """
    if checked:
        _check_2d("x", x)
        _check_2d("A", A)
        _check_2d("gates", gates)
    N, d_in = x.shape
    r = A.shape[0]
    E = gates.shape[1]
    if checked:
        if A.shape[1] != d_in:
            raise ValueError(f"A must have shape [r, d_in={d_in}], got {tuple(A.shape)}")
        if gates.shape[0] != N:
            raise ValueError(f"gates must have shape [N={N}, E], got {tuple(gates.shape)}")
        if A.dtype != x.dtype:
            raise TypeError(f"A must have x's dtype {x.dtype}, got {A.dtype}")
    h = torch.empty(N, r, dtype=x.dtype, device=x.device)
    hg = torch.empty(N, E * r, dtype=x.dtype, device=x.device)
    if N == 0 or r == 0:
        return h, hg
    if d_in == 0:
        h.zero_()
        hg.zero_()
        return h, hg
    grid, kw = _shrink_plan(N, d_in, r, x.dtype, x.device, *_switches(x.dtype, x.device))
    _shrink_gate_kernel[grid](x, A, gates, h, hg, N, d_in, r, E,
                              x.stride(0), A.stride(0), gates.stride(0), h.stride(0), hg.stride(0), **kw)
    return h, hg


def expand_add(hg: torch.Tensor, B_cat: torch.Tensor, scaling: float, out: Optional[torch.Tensor], *,
               checked: bool = True) -> torch.Tensor:
    """out += scaling * hg @ B_cat^T in place (allocated, as the plain product, when ``out`` is None).

    ``checked=False``: the caller guarantees what the checks enforce (hg, B_cat 2-D float with unit
    inner stride, B_cat [d_out, K] in hg's dtype, out [N, d_out] on hg's device), except B_cat's
    inner stride, which is still checked: B_cat is usually made by the caller from B (a view
    whose inner stride is not 1 when r = 1).
    """
    if checked:
        _check_2d("hg", hg)
        _check_2d("B_cat", B_cat)
    elif B_cat.shape[1] > 1 and B_cat.stride(1) != 1:
        _check_2d("B_cat", B_cat)                    # raises, as the checked call does
    N, K = hg.shape
    d_out = B_cat.shape[0]
    has_out = out is not None
    if checked:
        if B_cat.shape[1] != K:
            raise ValueError(f"B_cat must have shape [d_out, E*r={K}] to match hg {tuple(hg.shape)}, "
                             f"got {tuple(B_cat.shape)}")
        if B_cat.dtype != hg.dtype:
            raise TypeError(f"B_cat must have hg's dtype {hg.dtype}, got {B_cat.dtype}")
        if has_out:
            _check_2d("out", out, inner_unit=False)
            if out.shape != (N, d_out):
                raise ValueError(f"out must have shape [N={N}, d_out={d_out}], got {tuple(out.shape)}")
            if out.device != hg.device:
                raise ValueError(f"out is on {out.device} but hg is on {hg.device}")
    if not has_out:
        out = torch.empty(N, d_out, dtype=hg.dtype, device=hg.device)
    if N == 0 or d_out == 0:
        return out
    if K == 0:
        if not has_out:
            out.zero_()
        return out
    grid, kw = _expand_add_plan(N, d_out, K, hg.dtype, hg.device, has_out, *_switches(hg.dtype, hg.device))
    _expand_add_kernel[grid](hg, B_cat, out, N, d_out, K, float(scaling),
                             hg.stride(0), B_cat.stride(0), out.stride(0), out.stride(1), **kw)
    return out


def expand_backward(grad_out: torch.Tensor, B_cat: torch.Tensor, h: torch.Tensor, gates: torch.Tensor,
                    scaling: float, *, checked: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """dh [N, r] = sum_e g_e * (s G B_e) and dgates [N, E] = <s G B_e, h>, without writing dhg.

    ``checked=False``: the caller guarantees what the checks enforce (all four 2-D float with unit
    inner stride, B_cat [d_out, E*r] in grad_out's dtype, h and gates with N rows, one device).
    """
    if checked:
        _check_2d("grad_out", grad_out)
        _check_2d("B_cat", B_cat)
        _check_2d("h", h)
        _check_2d("gates", gates)
    N, d_out = grad_out.shape
    r = h.shape[1]
    E = gates.shape[1]
    if checked:
        if B_cat.shape != (d_out, E * r):
            raise ValueError(f"B_cat must have shape [d_out={d_out}, E*r={E * r}], got {tuple(B_cat.shape)}")
        if h.shape[0] != N or gates.shape[0] != N:
            raise ValueError(f"h and gates must have N={N} rows, got h {tuple(h.shape)} and gates "
                             f"{tuple(gates.shape)}")
        if B_cat.dtype != grad_out.dtype:
            raise TypeError(f"B_cat must have grad_out's dtype {grad_out.dtype}, got {B_cat.dtype}")
    dgates = torch.empty(N, E, dtype=gates.dtype, device=gates.device)
    if N == 0 or r == 0 or E == 0 or d_out == 0:
        return torch.zeros(N, r, dtype=h.dtype, device=h.device), dgates.zero_()
    grid, kw = _expand_backward_plan(N, d_out, r, E, grad_out.dtype, grad_out.device,
                                     *_switches(grad_out.dtype, grad_out.device))
    n_chunks = grid[0]
    if n_chunks == 1:
        dh = torch.empty(N, r, dtype=h.dtype, device=h.device)
        stride_dhc = 0
    else:                                            # fp32 / fp64 partial sums, one slab per chunk
        dh = torch.empty(n_chunks, N, r, dtype=torch.float64 if h.dtype == torch.float64 else torch.float32,
                         device=h.device)
        stride_dhc = dh.stride(0)
    _expand_backward_kernel[grid](grad_out, B_cat, h, gates, dh, dgates, N, d_out, r, E, float(scaling),
                                  grad_out.stride(0), B_cat.stride(0), h.stride(0), gates.stride(0), stride_dhc,
                                  dh.stride(-2), dgates.stride(0), **kw)
    if n_chunks > 1:
        dh = dh.sum(0).to(h.dtype)
    return dh, dgates


def bind_inference(weight: torch.Tensor, bias: Optional[torch.Tensor], A: torch.Tensor, B_cat: torch.Tensor,
                   scaling: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``launch(x, gates)``: cuBLAS base GEMM, then the shrink-gate and expand-add kernels above.

    A and B_cat are checked here, once; ``launch`` skips the launchers' checks, so its caller
    (:func:`alter_kernels.alter_linear_inference_fn`, which has checked the bound weights' shapes,
    dtype and device) passes x ``[N, d_in]`` in A's dtype and gates ``[N, E]``, both contiguous, and
    does not change the bound tensors' shapes, strides, dtype or device (in-place value updates
    are seen).
    """
    _check_2d("A", A)
    _check_2d("B_cat", B_cat)
    linear = torch.nn.functional.linear

    def launch(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        hg = shrink_gate(x, A, gates, checked=False)[1]
        return expand_add(hg, B_cat, scaling, linear(x, weight, bias), checked=False)

    return launch
