"""The gated shared-A / multi-B LoRA (docs/method.md §1 and §4) through the public API.

``alter_kernels.asym_lora`` and ``alter_kernels.fused_alter_linear`` on the default CPU path
(the composite launchers, PyTorch GEMMs), then the same equality checks for the Triton
launchers (``use_backend("triton")``: the interpreter on CPU, the GPU when present):

- gradients: ``torch.autograd.gradcheck`` in fp64, without and with masks, and equality of the
  values and of all gradients (x, A, B, gates, weight, bias) with the reference;
- gradient isolation (section 3), proven by perturbation: whatever the rows with
  ``a_grad_mask`` False carry (their upstream gradient, their x, their gates), ``A.grad`` stays
  bit-identical; likewise ``b_grad_mask`` for ``B.grad``; ``x.grad`` and ``gates.grad`` do not
  depend on the masks; with one-hot gates an expert's gradient comes only from its own rows;
- bad input raises ValueError / TypeError naming the argument.
"""

from __future__ import annotations

import pytest
import torch

import alter_kernels as ak
from alter_kernels._backend import triton_interpreting
from alter_kernels.reference import asym_lora_reference
from tests.conftest import devices

S = 1.75                                            # scaling alpha / r used throughout


def make_inputs(n=9, d_in=7, d_out=6, r=3, e=4, *, dtype=torch.float64, device="cpu", seed=0, one_hot=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    A = torch.randn(r, d_in, generator=g, dtype=torch.float64) * 0.5
    B = torch.randn(e, d_out, r, generator=g, dtype=torch.float64) * 0.5
    if one_hot:
        gates = torch.nn.functional.one_hot(torch.arange(n) % e, e).to(torch.float64)
    else:
        gates = torch.softmax(torch.randn(n, e, generator=g, dtype=torch.float64), -1)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) * 0.3
    bias = torch.randn(d_out, generator=g, dtype=torch.float64)
    upstream = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    cast = lambda t: t.to(dtype).to(device)
    return dict(x=cast(x), A=cast(A), B=cast(B), gates=cast(gates), W=cast(W), bias=cast(bias),
                upstream=cast(upstream))


def masks(n, device="cpu"):
    a = torch.tensor([i % 3 != 1 for i in range(n)], device=device)
    b = torch.tensor([i % 2 == 0 for i in range(n)], device=device)
    return a, b


def grads_of(inp, *, a_mask=None, b_mask=None, fused=False, names=("x", "A", "B", "gates")):
    """Run the public op with fresh leaves, backprop ``upstream``, return (output, {name: grad})."""
    leaves = {k: inp[k].detach().clone().requires_grad_(k in names) for k in ("x", "A", "B", "gates", "W", "bias")}
    if fused:
        y = ak.fused_alter_linear(leaves["x"], leaves["W"], leaves["bias"], leaves["A"], leaves["B"], leaves["gates"],
                                  S, a_grad_mask=a_mask, b_grad_mask=b_mask)
    else:
        y = ak.asym_lora(leaves["x"], leaves["A"], leaves["B"], leaves["gates"], S, a_grad_mask=a_mask,
                         b_grad_mask=b_mask)
    y.backward(inp["upstream"])
    return y.detach(), {k: leaves[k].grad for k in names}


def reference_grads(inp, *, a_mask=None, b_mask=None, fused=False, names=("x", "A", "B", "gates")):
    leaves = {k: inp[k].detach().clone().requires_grad_(k in names) for k in ("x", "A", "B", "gates", "W", "bias")}
    y = asym_lora_reference(leaves["x"], leaves["A"], leaves["B"], leaves["gates"], S, a_grad_mask=a_mask,
                            b_grad_mask=b_mask)
    if fused:
        y = y + torch.nn.functional.linear(leaves["x"], leaves["W"], leaves["bias"])
    y.backward(inp["upstream"])
    return y.detach(), {k: leaves[k].grad for k in names}


# ---------------------------------------------------------------------------------------------
# gradcheck (fp64, default CPU path)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 4, 3, 2, 1), (6, 5, 4, 3, 3)], ids=["E1", "E3"])
def test_gradcheck_asym_lora(shape):
    n, d_in, d_out, r, e = shape
    inp = make_inputs(n, d_in, d_out, r, e, seed=1)
    args = [inp[k].clone().requires_grad_() for k in ("x", "A", "B", "gates")]
    assert torch.autograd.gradcheck(lambda x, A, B, g: ak.asym_lora(x, A, B, g, S), args)


def test_gradcheck_fused_alter_linear():
    inp = make_inputs(5, 4, 3, 2, 3, seed=2)
    args = [inp[k].clone().requires_grad_() for k in ("x", "W", "bias", "A", "B", "gates")]
    assert torch.autograd.gradcheck(lambda x, W, b, A, B, g: ak.fused_alter_linear(x, W, b, A, B, g, S), args)
    # the base weight frozen and no bias (the usual LoRA setting)
    args = [inp[k].clone().requires_grad_(k != "W") for k in ("x", "W", "A", "B", "gates")]
    assert torch.autograd.gradcheck(lambda x, W, A, B, g: ak.fused_alter_linear(x, W, None, A, B, g, S), args)


def test_gradcheck_with_masks():
    inp = make_inputs(6, 4, 3, 2, 3, seed=3)
    a_mask, b_mask = masks(6)
    # x and gates are never masked: their gradient is the true derivative, masks or not
    A, B = inp["A"], inp["B"]
    args = [inp[k].clone().requires_grad_() for k in ("x", "gates")]
    assert torch.autograd.gradcheck(
        lambda x, g: ak.asym_lora(x, A, B, g, S, a_grad_mask=a_mask, b_grad_mask=b_mask), args)
    assert torch.autograd.gradcheck(
        lambda x, g: ak.fused_alter_linear(x, inp["W"], inp["bias"], A, B, g, S, a_grad_mask=a_mask,
                                           b_grad_mask=b_mask), args)
    # all-True masks run the masked code path and must give the true derivative for A and B too
    ones = torch.ones(6, dtype=torch.bool)
    args = [inp[k].clone().requires_grad_() for k in ("x", "A", "B", "gates")]
    assert torch.autograd.gradcheck(
        lambda x, A, B, g: ak.asym_lora(x, A, B, g, S, a_grad_mask=ones, b_grad_mask=ones), args)
    # masked dA / dB are the true derivatives of the rows that keep their flag: gradcheck that
    # sub-batch numerically, then require the masked full batch to give the same gradient
    keep_a, keep_b = a_mask.nonzero().squeeze(1), b_mask.nonzero().squeeze(1)
    sub = lambda rows: [inp[k][rows].clone() for k in ("x", "gates")]
    xa, ga = sub(keep_a)
    assert torch.autograd.gradcheck(lambda A: ak.asym_lora(xa, A, B, ga, S), [A.clone().requires_grad_()])
    xb, gb = sub(keep_b)
    assert torch.autograd.gradcheck(lambda B: ak.asym_lora(xb, A, B, gb, S), [B.clone().requires_grad_()])
    _, full = grads_of(inp, a_mask=a_mask, b_mask=b_mask)
    sub_a = dict(inp, x=xa, gates=ga, upstream=inp["upstream"][keep_a])
    sub_b = dict(inp, x=xb, gates=gb, upstream=inp["upstream"][keep_b])
    torch.testing.assert_close(full["A"], grads_of(sub_a)[1]["A"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full["B"], grads_of(sub_b)[1]["B"], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# equality with the reference (default CPU path)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("use_masks", [False, True], ids=["no-mask", "masks"])
@pytest.mark.parametrize("fused", [False, True], ids=["asym_lora", "fused_alter_linear"])
def test_matches_reference(fused, use_masks, dtype):
    inp = make_inputs(11, 13, 9, 4, 5, dtype=dtype, seed=4)
    a_mask, b_mask = masks(11) if use_masks else (None, None)
    names = ("x", "A", "B", "gates", "W", "bias") if fused else ("x", "A", "B", "gates")
    y, grads = grads_of(inp, a_mask=a_mask, b_mask=b_mask, fused=fused, names=names)
    y_ref, grads_ref = reference_grads(inp, a_mask=a_mask, b_mask=b_mask, fused=fused, names=names)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    assert y.dtype == dtype and y.shape == (11, 9)
    torch.testing.assert_close(y, y_ref, **tol)
    for name in names:
        assert grads[name] is not None and grads[name].dtype == dtype, name
        torch.testing.assert_close(grads[name], grads_ref[name], **tol, msg=lambda m: f"{name}: {m}")


def test_gates_of_another_dtype_get_their_gradient_back():
    inp = make_inputs(5, 4, 3, 2, 3, dtype=torch.float32, seed=5)
    gates = inp["gates"].double().requires_grad_()
    y = ak.asym_lora(inp["x"], inp["A"], inp["B"], gates, S)
    y.backward(inp["upstream"])
    assert gates.grad.dtype == torch.float64
    ref = inp["gates"].clone().requires_grad_()
    asym_lora_reference(inp["x"], inp["A"], inp["B"], ref, S).backward(inp["upstream"])
    torch.testing.assert_close(gates.grad.float(), ref.grad, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# gradient isolation, proven by perturbation (docs/method.md §4)
# ---------------------------------------------------------------------------------------------

def perturbed(inp, rows, *, what):
    """A copy of ``inp`` whose ``rows`` carry other upstream gradients / inputs / gates."""
    out = dict(inp)
    g = torch.Generator().manual_seed(99)
    for key in what:
        t = inp[key].clone()
        t[rows] = (torch.randn(t[rows].shape, generator=g, dtype=t.dtype) * 3.0).to(t.device)
        out[key] = t
    return out


@pytest.mark.parametrize("fused", [False, True], ids=["asym_lora", "fused_alter_linear"])
def test_a_grad_mask_isolates_A(fused):
    inp = make_inputs(12, 8, 6, 4, 3, dtype=torch.float32, seed=6)
    a_mask, _ = masks(12)
    off = (~a_mask).nonzero().squeeze(1)
    _, base = grads_of(inp, a_mask=a_mask, fused=fused)
    for what in (("upstream",), ("x",), ("gates",), ("upstream", "x", "gates")):
        _, other = grads_of(perturbed(inp, off, what=what), a_mask=a_mask, fused=fused)
        assert torch.equal(other["A"], base["A"]), what           # bit-identical
        assert not torch.equal(other["B"], base["B"]), what       # the perturbation is real
    # rows with the flag set do move A
    on = a_mask.nonzero().squeeze(1)
    _, moved = grads_of(perturbed(inp, on, what=("upstream",)), a_mask=a_mask, fused=fused)
    assert not torch.equal(moved["A"], base["A"])


@pytest.mark.parametrize("fused", [False, True], ids=["asym_lora", "fused_alter_linear"])
def test_b_grad_mask_isolates_B(fused):
    inp = make_inputs(12, 8, 6, 4, 3, dtype=torch.float32, seed=7)
    _, b_mask = masks(12)
    off = (~b_mask).nonzero().squeeze(1)
    _, base = grads_of(inp, b_mask=b_mask, fused=fused)
    for what in (("upstream",), ("x",), ("gates",), ("upstream", "x", "gates")):
        _, other = grads_of(perturbed(inp, off, what=what), b_mask=b_mask, fused=fused)
        assert torch.equal(other["B"], base["B"]), what
        assert not torch.equal(other["A"], base["A"]), what
    _, all_off = grads_of(inp, b_mask=torch.zeros(12, dtype=torch.bool), fused=fused)
    assert torch.equal(all_off["B"], torch.zeros_like(all_off["B"]))


@pytest.mark.parametrize("fused", [False, True], ids=["asym_lora", "fused_alter_linear"])
def test_masks_do_not_touch_x_and_gates_gradients(fused):
    inp = make_inputs(10, 6, 5, 3, 4, dtype=torch.float32, seed=8)
    a_mask, b_mask = masks(10)
    _, free = grads_of(inp, fused=fused)
    for kw in (dict(a_mask=a_mask), dict(b_mask=b_mask), dict(a_mask=a_mask, b_mask=b_mask),
               dict(a_mask=torch.zeros(10, dtype=torch.bool), b_mask=torch.zeros(10, dtype=torch.bool))):
        y, masked = grads_of(inp, fused=fused, **kw)
        assert torch.equal(masked["x"], free["x"])
        assert torch.equal(masked["gates"], free["gates"])
        y_free, _ = grads_of(inp, fused=fused)
        assert torch.equal(y, y_free)                              # masks never change the value


def test_one_hot_gates_route_expert_gradients():
    e = 4
    inp = make_inputs(12, 8, 6, 3, e, dtype=torch.float32, seed=9, one_hot=True)
    inp["gates"][:, 3] = 0.0
    inp["gates"][torch.arange(12) % e == 3, 0] = 1.0             # expert 3 gets no row at all
    routed = inp["gates"].argmax(1)
    _, base = grads_of(inp)
    assert torch.equal(base["B"][3], torch.zeros_like(base["B"][3]))
    for expert in range(3):
        others = (routed != expert).nonzero().squeeze(1)
        _, other = grads_of(perturbed(inp, others, what=("upstream",)))
        assert torch.equal(other["B"][expert], base["B"][expert]), expert
        mine = (routed == expert).nonzero().squeeze(1)
        sub = dict(inp, x=inp["x"][mine], gates=inp["gates"][mine], upstream=inp["upstream"][mine])
        torch.testing.assert_close(grads_of(sub)[1]["B"][expert], base["B"][expert], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------

def bad_call(**override):
    inp = make_inputs(4, 5, 3, 2, 2, dtype=torch.float32)
    args = dict(x=inp["x"], A=inp["A"], B=inp["B"], gates=inp["gates"], scaling=S, a_grad_mask=None,
                b_grad_mask=None)
    args.update(override)
    return ak.asym_lora(args.pop("x"), args.pop("A"), args.pop("B"), args.pop("gates"), args.pop("scaling"), **args)


@pytest.mark.parametrize("override, error, pattern", [
    (dict(x=[[1.0]]), TypeError, "x must be a torch.Tensor"),
    (dict(x=torch.ones(4, 5, dtype=torch.int64)), TypeError, "x must have dtype"),
    (dict(x=torch.ones(20)), ValueError, "x must be 2-D"),
    (dict(A=torch.ones(2, 6)), ValueError, "A must have shape"),
    (dict(B=torch.ones(2, 3, 4)), ValueError, "B must have shape"),
    (dict(gates=torch.ones(4, 3)), ValueError, "gates must have shape"),
    (dict(gates=torch.ones(5, 2)), ValueError, "gates must have shape"),
    (dict(B=torch.ones(0, 3, 2), gates=torch.ones(4, 0)), ValueError, "B must hold at least one expert"),
    (dict(A=torch.ones(0, 5), B=torch.ones(2, 3, 0)), ValueError, "rank r"),
    (dict(a_grad_mask=torch.ones(5, dtype=torch.bool)), ValueError, "a_grad_mask must have shape"),
    (dict(b_grad_mask=torch.ones(4, 1, dtype=torch.bool)), ValueError, "b_grad_mask must have shape"),
    (dict(a_grad_mask=torch.ones(4)), TypeError, "a_grad_mask must have dtype bool"),
    (dict(b_grad_mask=[True] * 4), TypeError, "b_grad_mask must be a bool tensor"),
    (dict(A=torch.ones(2, 5, dtype=torch.float64)), TypeError, "A: float64"),
    (dict(B=torch.ones(2, 3, 2, dtype=torch.bfloat16)), TypeError, "B: bfloat16"),
    (dict(A=torch.ones(2, 5, device="meta")), ValueError, "A on meta"),
    (dict(gates=torch.ones(4, 2, device="meta")), ValueError, "gates on meta"),
    (dict(a_grad_mask=torch.ones(4, dtype=torch.bool, device="meta")), ValueError, "a_grad_mask is on meta"),
    (dict(scaling="large"), TypeError, "scaling"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_names_the_argument(override, error, pattern):
    with pytest.raises(error, match=pattern):
        bad_call(**override)


def test_fused_bad_base_weight_names_the_argument():
    inp = make_inputs(4, 5, 3, 2, 2, dtype=torch.float32)
    call = lambda W, b: ak.fused_alter_linear(inp["x"], W, b, inp["A"], inp["B"], inp["gates"], S)
    with pytest.raises(ValueError, match="weight must have shape"):
        call(torch.ones(3, 4), None)
    with pytest.raises(ValueError, match="bias must have shape"):
        call(inp["W"], torch.ones(4))
    with pytest.raises(TypeError, match="weight: float64"):
        call(inp["W"].double(), None)
    with pytest.raises(ValueError, match="weight on meta"):
        call(torch.ones(3, 5, device="meta"), None)


# ---------------------------------------------------------------------------------------------
# the Triton launchers (interpreter on CPU, GPU when present): the same equalities, fp32
# ---------------------------------------------------------------------------------------------

TRITON_DEVICES = [d for d in devices() if d == "cuda" or triton_interpreting()]


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("use_masks", [False, True], ids=["no-mask", "masks"])
@pytest.mark.parametrize("fused", [False, True], ids=["asym_lora", "fused_alter_linear"])
def test_triton_matches_reference(fused, use_masks, device):
    inp = make_inputs(11, 13, 9, 8, 5, dtype=torch.float32, device=device, seed=10)
    a_mask, b_mask = masks(11, device) if use_masks else (None, None)
    names = ("x", "A", "B", "gates", "W", "bias") if fused else ("x", "A", "B", "gates")
    with ak.use_backend("triton"):
        y, grads = grads_of(inp, a_mask=a_mask, b_mask=b_mask, fused=fused, names=names)
    ref_inp = {k: v.double().cpu() for k, v in inp.items()}
    cpu = lambda m: None if m is None else m.cpu()
    y_ref, grads_ref = reference_grads(ref_inp, a_mask=cpu(a_mask), b_mask=cpu(b_mask), fused=fused, names=names)
    tol = dict(rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(y.cpu().double(), y_ref, **tol)
    for name in names:
        assert grads[name].dtype == torch.float32, name
        torch.testing.assert_close(grads[name].cpu().double(), grads_ref[name], **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("fused", [False, True], ids=["asym_lora", "fused_alter_linear"])
def test_triton_rank_one_with_several_experts(fused, device):
    # r = 1: B [E, d_out, 1] in the expand layout [d_out, E] is a strided view; the launch needs it contiguous
    inp = make_inputs(7, 6, 5, 1, 3, dtype=torch.float32, device=device, seed=13)
    names = ("x", "A", "B", "gates")
    with ak.use_backend("triton"):
        y, grads = grads_of(inp, fused=fused, names=names)
    ref_inp = {k: v.double().cpu() for k, v in inp.items()}
    y_ref, grads_ref = reference_grads(ref_inp, fused=fused, names=names)
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=2e-5, atol=2e-5)
    for name in names:
        torch.testing.assert_close(grads[name].cpu().double(), grads_ref[name], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_triton_isolation_is_bit_exact(device):
    inp = make_inputs(12, 8, 6, 4, 3, dtype=torch.float32, device=device, seed=11)
    a_mask, b_mask = masks(12, device)
    with ak.use_backend("triton"):
        _, base = grads_of(inp, a_mask=a_mask, b_mask=b_mask)
        _, pa = grads_of(perturbed(inp, (~a_mask).nonzero().squeeze(1), what=("upstream", "x")),
                         a_mask=a_mask, b_mask=b_mask)
        _, pb = grads_of(perturbed(inp, (~b_mask).nonzero().squeeze(1), what=("upstream", "gates")),
                         a_mask=a_mask, b_mask=b_mask)
        _, free = grads_of(inp)
    assert torch.equal(pa["A"], base["A"]) and torch.equal(pb["B"], base["B"])
    assert torch.equal(free["x"], base["x"]) and torch.equal(free["gates"], base["gates"])


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_triton_gradcheck_fp64(device):
    # fast mode (a random projection of the Jacobian): each interpreted launch costs milliseconds
    inp = make_inputs(5, 6, 4, 3, 3, device=device, seed=12)
    with ak.use_backend("triton"):
        args = [inp[k].clone().requires_grad_() for k in ("x", "A", "B", "gates")]
        assert torch.autograd.gradcheck(lambda x, A, B, g: ak.asym_lora(x, A, B, g, S), args, fast_mode=True)
        args = [inp[k].clone().requires_grad_() for k in ("x", "W", "bias", "A", "B", "gates")]
        assert torch.autograd.gradcheck(lambda x, W, b, A, B, g: ak.fused_alter_linear(x, W, b, A, B, g, S), args,
                                        fast_mode=True)
        a_mask, b_mask = masks(5, device)
        args = [inp[k].clone().requires_grad_() for k in ("x", "gates")]
        assert torch.autograd.gradcheck(
            lambda x, g: ak.asym_lora(x, inp["A"], inp["B"], g, S, a_grad_mask=a_mask, b_grad_mask=b_mask), args,
            fast_mode=True)


@pytest.mark.parametrize("fused", [False, True])
def test_inference_path_without_autograd_gives_the_same_values(fused):
    inp = make_inputs(dtype=torch.float32)
    call = (lambda: ak.fused_alter_linear(inp["x"], inp["W"], inp["bias"], inp["A"], inp["B"], inp["gates"], S)) \
        if fused else (lambda: ak.asym_lora(inp["x"], inp["A"], inp["B"], inp["gates"], S))
    inp["A"].requires_grad_(True)
    with_grad = call()
    assert with_grad.requires_grad
    with torch.no_grad():
        plain = call()
    assert not plain.requires_grad
    torch.testing.assert_close(plain, with_grad.detach())
