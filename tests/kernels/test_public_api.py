"""The public API's argument errors, on the cpp backend: each names the argument."""

from __future__ import annotations


import pytest
import torch

import alter_kernels as ak


PUBLIC_ERRORS = [
    ("entropy q <= 0", lambda: ak.tsallis_entropy(torch.randn(2, 5), 0.0), ValueError, "q"),
    ("entropy q NaN", lambda: ak.tsallis_entropy(torch.randn(2, 5), float("nan")), ValueError, "q"),
    ("entropy q type", lambda: ak.tsallis_entropy(torch.randn(2, 5), None), TypeError, "q"),
    ("entropy V = 0", lambda: ak.tsallis_entropy(torch.randn(2, 0)), ValueError, "logits"),
    ("entropy not a tensor", lambda: ak.tsallis_entropy([[0.0, 1.0]]), TypeError, "logits"),
    ("entropy int dtype", lambda: ak.tsallis_entropy(torch.ones(2, 3, dtype=torch.int64)), TypeError, "logits"),
    ("entropy 0-d", lambda: ak.tsallis_entropy(torch.tensor(1.0)), ValueError, "logits"),
    ("hinge 1-D logits", lambda: ak.hinge_forget_loss(torch.randn(5), torch.tensor([1])), ValueError, "logits"),
    ("hinge V = 1", lambda: ak.hinge_forget_loss(torch.randn(3, 1), torch.zeros(3, dtype=torch.long)),
     ValueError, "logits"),
    ("hinge labels shape", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.zeros(2, dtype=torch.long)),
     ValueError, "labels"),
    ("hinge labels dtype", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.zeros(3)), TypeError, "labels"),
    ("hinge labels too large", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.tensor([0, 4, 1])),
     ValueError, "labels"),
    ("hinge labels negative", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.tensor([0, -1, 1])),
     ValueError, "labels"),
    ("hinge margin type", lambda: ak.hinge_forget_loss(torch.randn(3, 4), torch.tensor([0, 1, 1]), "m"),
     TypeError, "margin"),
    ("route entropy shape", lambda: ak.route(torch.rand(3), torch.randn(4, 2), 0.5), ValueError, "entropy"),
    ("route router 1-D", lambda: ak.route(torch.rand(4), torch.randn(4), 0.5), ValueError, "router_logits"),
    ("route E = 0", lambda: ak.route(torch.rand(4), torch.randn(4, 0), 0.5), ValueError, "router_logits"),
    ("route theta NaN", lambda: ak.route(torch.rand(4), torch.randn(4, 2), float("nan")), ValueError, "theta"),
    ("route theta type", lambda: ak.route(torch.rand(4), torch.randn(4, 2), "x"), TypeError, "theta"),
    ("route tau_high", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, tau_high=0.0), ValueError,
     "tau_high"),
    ("route tau_low", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, tau_low=-1.0), ValueError,
     "tau_low"),
    ("route top_k", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, top_k=-2), ValueError, "top_k"),
    ("route retain_index", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, retain_index=2), ValueError,
     "retain_index"),
    ("route mode", lambda: ak.route(torch.rand(4), torch.randn(4, 2), 0.5, mode="eval"), ValueError, "mode"),
]


@pytest.mark.parametrize("call, error, argument", [c[1:] for c in PUBLIC_ERRORS], ids=[c[0] for c in PUBLIC_ERRORS])
def test_public_api_errors_name_the_argument(call, error, argument):
    with ak.use_backend("cpp"):
        with pytest.raises(error, match=argument):
            call()


def _inference_case():
    """x [5, 6], base weight and bias, A [3, 6], two experts B [2, 7, 3] and their expand layout, gates."""
    torch.manual_seed(0)
    x, w, b = torch.randn(5, 6), torch.randn(7, 6), torch.randn(7)
    A, B = torch.randn(3, 6), torch.randn(2, 7, 3)
    gates = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    return x, w, b, A, B, B.permute(1, 0, 2).reshape(7, 6).contiguous(), gates


def test_alter_linear_inference_equals_the_fused_linear_and_names_bad_input():
    x, w, b, A, B, B_cat, gates = _inference_case()
    want = ak.fused_alter_linear(x, w, b, A, B, gates, 2.0)
    torch.testing.assert_close(ak.alter_linear_inference(x, w, b, A, B_cat, gates, 2.0), want)
    with pytest.raises(ValueError, match="x must be"):
        ak.alter_linear_inference(torch.randn(5, 4), w, b, A, B_cat, gates, 2.0)
    with pytest.raises(ValueError, match="gates must be"):
        ak.alter_linear_inference(x, w, b, A, B_cat, gates[:, :1], 2.0)


def test_alter_linear_inference_fn_binds_the_weights_once_and_checks_each_call():
    x, w, b, A, B, B_cat, gates = _inference_case()
    run = ak.alter_linear_inference_fn(w, b, A, B_cat, 2.0)
    with torch.no_grad():
        torch.testing.assert_close(run(x, gates), ak.fused_alter_linear(x, w, b, A, B, gates, 2.0))
        B_cat.mul_(2.0)                                  # the bound tensors are read at each call
        torch.testing.assert_close(run(x, gates), ak.fused_alter_linear(x, w, b, A, 2.0 * B, gates, 2.0))
        with pytest.raises(ValueError, match="x must be"):
            run(torch.randn(5, 4), gates)
        with pytest.raises(ValueError, match="x must be"):
            run(x.double(), gates)
        with pytest.raises(ValueError, match="gates must be"):
            run(x, gates[:4])
    with pytest.raises(RuntimeError, match="no_grad"):
        run(x, gates)
    with pytest.raises(ValueError, match="weight must have shape"):
        ak.alter_linear_inference_fn(w[:, :5], b, A, B_cat, 2.0)
    with pytest.raises(ValueError, match="B_cat must be"):
        ak.alter_linear_inference_fn(w, b, A, B_cat[:, :5], 2.0)
    with pytest.raises(TypeError, match="one dtype"):
        ak.alter_linear_inference_fn(w, b, A.double(), B_cat, 2.0)


def test_alter_linear_inference_fn_folds_the_experts_for_shared_gates():
    """gates as a tuple: one row for every row of x; the experts are folded once per tuple (remade
    when B_cat changes in place); same value as the gates tensor up to rounding."""
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 6), torch.randn(7, 6), torch.randn(7)
    A, B_cat = torch.randn(3, 6), torch.randn(7, 9)
    row = (0.25, 0.0, 0.75)
    run = ak.alter_linear_inference_fn(w, b, A, B_cat, 2.0)
    with torch.no_grad():
        as_tensor = run(x, torch.tensor([row] * 3))
        torch.testing.assert_close(run(x, row), as_tensor, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(run(x[:1], row), as_tensor[:1], rtol=1e-5, atol=1e-5)
        B_cat.mul_(-1.0)
        torch.testing.assert_close(run(x, row), run(x, torch.tensor([row] * 3)), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(run(x, row), as_tensor)
        with pytest.raises(ValueError, match="E=3"):
            run(x, (0.5, 0.5))
