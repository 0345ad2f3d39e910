"""Autograd wrapper of the gated shared-A / multi-B matmul (docs/method.md §1 and §4).

Forward, for x [N, d_in] (and optionally a frozen base weight W0 [d_out, d_in] with bias):

    out = [x W0^T + b] + s * hg B_cat^T,     hg[n, e*r:(e+1)*r] = gates[n, e] * (A x_n)

Backward, with G = dL/d(out):

    dhg     = s * G B_cat                               -> dh = sum_e g_e dhg_e, dgates_e = <dhg_e, h>
    dB_cat  = s * G^T (hg * b_mask)                     rows with b_grad_mask = False add nothing
    dA      = (dh * a_mask)^T x                         rows with a_grad_mask = False add nothing
    dx      = G W0 + dh A                               never masked

The launchers (``shrink_gate``, ``expand_add``, ``expand_backward``) come from a backend module:
``alter_kernels.triton.asym_lora`` on CUDA, ``alter_kernels.composite.asym_lora`` elsewhere. The
weight gradients and ``G W0`` are plain GEMMs and go to torch (cuBLAS / oneDNN).

The inputs arrive validated and contiguous from :mod:`alter_kernels.ops.asym_lora` (the only
caller), so the launchers are called with ``checked=False``: their own checks would repeat that
validation on every forward and backward.
"""

from __future__ import annotations

from typing import Optional

import torch


def asym_lora_forward(x, A, B, gates, scaling: float, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                      ops, B_cat: Optional[torch.Tensor] = None):
    """The forward of :class:`AsymLoRAFunction` alone: ``(out, B_cat, h, hg)`` (also the no-grad path).
    ``B_cat`` is B in its expand layout when the caller keeps it (then ``B`` may be None). The
    inputs must have passed :mod:`alter_kernels.ops.asym_lora`'s checks (the launchers skip theirs)."""
    if B_cat is None:
        E, d_out, r = B.shape
        B_cat = B.permute(1, 0, 2).reshape(d_out, E * r)
        if E > 1 and r == 1:                         # then reshape returns a view with stride d_out along E:
            B_cat = B_cat.contiguous()               # the expand launchers read B_cat with unit inner stride
    h, hg = ops.shrink_gate(x, A, gates, checked=False)
    out = None
    if weight is not None:
        out = torch.nn.functional.linear(x, weight, bias)
    out = ops.expand_add(hg, B_cat, scaling, out, checked=False)
    return out, B_cat, h, hg


class AsymLoRAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, A, B, gates, scaling: float, a_grad_mask: Optional[torch.Tensor],
                b_grad_mask: Optional[torch.Tensor], weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                ops):
        E, d_out, r = B.shape
        out, B_cat, h, hg = asym_lora_forward(x, A, B, gates, scaling, weight, bias, ops)
        ctx.save_for_backward(x, A, B_cat, gates, h, hg, a_grad_mask, b_grad_mask, weight)
        ctx.scaling = scaling
        ctx.ops = ops
        ctx.shape_B = (E, d_out, r)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, A, B_cat, gates, h, hg, a_mask, b_mask, weight = ctx.saved_tensors
        s = ctx.scaling
        E, d_out, r = ctx.shape_B
        need_x, need_A, need_B, need_g = ctx.needs_input_grad[:4]
        need_w, need_bias = ctx.needs_input_grad[7], ctx.needs_input_grad[8]
        grad_out = grad_out.contiguous()
        dx = dA = dB = dgates = dW = dbias = None

        if need_x or need_A or need_g:
            dh, dg = ctx.ops.expand_backward(grad_out, B_cat, h, gates, s, checked=False)
            if need_g:
                dgates = dg
            if need_A:
                # a bool mask multiplies as 0 / 1 in dh's dtype (the same values as a cast mask, one op fewer)
                dh_a = dh if a_mask is None else dh * a_mask.unsqueeze(1)
                dA = torch.mm(dh_a.t(), x)
            if need_x:
                if weight is not None:
                    dx = torch.mm(grad_out, weight).addmm_(dh, A)
                else:
                    dx = torch.mm(dh, A)
        if need_B:
            hg_b = hg if b_mask is None else hg * b_mask.unsqueeze(1)
            dB_cat = torch.mm(grad_out.t(), hg_b).mul_(s)                   # [d_out, E*r]
            dB = dB_cat.view(d_out, E, r).permute(1, 0, 2).contiguous()
        if need_w:
            dW = torch.mm(grad_out.t(), x)
        if need_bias and ctx.has_bias:
            dbias = grad_out.sum(0)
        return dx, dA, dB, dgates, None, None, None, dW, dbias, None
