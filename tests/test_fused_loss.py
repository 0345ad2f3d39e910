"""The fused phase II loss (alter/train/fused_loss.py) against the autograd composition of its terms."""

import pytest
import torch
import torch.nn.functional as F

from alter.train import fused_loss
from alter.train.fused_loss import phase2_model_loss
from alter.train.kl_targets import top_k_kl, top_k_targets
from alter_kernels import hinge_forget_rows_reference

V, K = 50, 6


def _case(seed=0):
    torch.manual_seed(seed)
    N = 14
    z = torch.randn(N, V) * 3
    labels = torch.randint(0, V, (N,))
    labels[[0, 5, 13]] = -100                                   # rows without a next token
    hinge_w = torch.zeros(N, dtype=torch.bool)
    hinge_w[[1, 2, 3, 4]] = True
    retain_w = torch.zeros(N, dtype=torch.bool)
    retain_w[[7, 8, 9]] = True
    kl_w = ~hinge_w
    kl_w[13] = False                                            # a padding row
    ids, log_p = top_k_targets(torch.randn(N, V) * 2, K)
    ids[13], log_p[13] = 0, 0.0                                 # padding targets: repeated id 0, as collate pads
    z[2, labels[2]] = z[2].max() + 3                            # hinge row 2 far above its runner-up: active
    z[3, labels[3]] = z[3].min() - 5                            # hinge row 3 far below: inactive
    z[10] = -2e4                                                # row 10: all of the model's mass on the base's top-k,
    z[10, ids[10]] = torch.randn(K)                             # its tail log-mass under the clamp
    return z, labels, hinge_w, retain_w, kl_w, ids, log_p


def _reference(z, labels, hinge_w, retain_w, kl_w, ids, log_p, margin, lf, lr, ls):
    y = labels.clamp_min(0)
    hinge_labels = torch.where(hinge_w, labels, torch.full_like(labels, -100))
    per_row, _ = hinge_forget_rows_reference(z, hinge_labels, margin)
    hinge = per_row.sum() / hinge_w.sum().clamp_min(1)
    nll = torch.logsumexp(z, -1) - z.gather(1, y[:, None]).squeeze(1)
    retain = torch.where(retain_w, nll, torch.zeros_like(nll)).sum() / retain_w.sum().clamp_min(1)
    struct = top_k_kl(z, ids, log_p, weight=kl_w)
    return lf * hinge + lr * retain + ls * struct, torch.stack([hinge, retain, struct]), nll, (per_row > 0).sum()


@pytest.mark.parametrize("chunk_rows", [1, 4, 100])
@pytest.mark.parametrize("lambdas", [(1.0, 1.0, 1.0), (0.7, 0.0, 2.0), (0.0, 1.5, 0.0)])
def test_values_and_gradient_equal_the_autograd_composition(monkeypatch, chunk_rows, lambdas):
    monkeypatch.setattr(fused_loss, "CHUNK_BYTES", 4 * V * chunk_rows)     # several chunks, a ragged last one
    z, labels, hinge_w, retain_w, kl_w, ids, log_p = _case()
    lf, lr, ls = lambdas
    zf = z.clone().requires_grad_(True)
    out = phase2_model_loss(zf, labels, hinge_w, retain_w, kl_w, ids, log_p, margin=1.0, lambda_forget=lf,
                            lambda_retain=lr, lambda_struct=ls)
    (2.5 * out["loss"]).backward()
    zr = z.double().requires_grad_(True)
    total, terms, nll, violating = _reference(zr, labels, hinge_w, retain_w, kl_w, ids, log_p.double(), 1.0,
                                              lf, lr, ls)
    (2.5 * total).backward()
    torch.testing.assert_close(out["loss"].double(), total, rtol=1e-5, atol=1e-5)
    for i, name in enumerate(("forget", "retain", "struct")):
        assert (name in out) == bool(lambdas[i])
        if name in out:
            torch.testing.assert_close(out[name].double(), terms[i], rtol=1e-5, atol=1e-5)
    valid = labels != -100
    torch.testing.assert_close(out["nll"][valid].double(), nll[valid].detach(), rtol=1e-5, atol=1e-5)
    assert (out["nll"][~valid] == 0).all()
    assert int(out["forget_violating"]) == (int(violating) if lf else 0)
    assert torch.isfinite(zf.grad).all()
    torch.testing.assert_close(zf.grad.double(), zr.grad, rtol=1e-4, atol=1e-6)
    assert zf.grad[13].abs().sum() == 0                         # padding: in no term


def test_no_rows_give_zero_terms_and_zero_gradient():
    z, labels, hinge_w, retain_w, kl_w, ids, log_p = _case()
    none = torch.zeros_like(hinge_w)
    zf = z.clone().requires_grad_(True)
    out = phase2_model_loss(zf, labels, none, none, none, ids, log_p, margin=1.0, lambda_forget=1.0,
                            lambda_retain=1.0, lambda_struct=1.0)
    out["loss"].backward()
    assert float(out["loss"].detach()) == 0.0 and int(out["forget_violating"]) == 0
    assert zf.grad.abs().sum() == 0


def test_bf16_logits_give_a_bf16_gradient_close_to_the_fp32_one():
    z, labels, hinge_w, retain_w, kl_w, ids, log_p = _case(1)
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        zf = z.to(dtype).clone().requires_grad_(True)
        phase2_model_loss(zf, labels, hinge_w, retain_w, kl_w, ids, log_p, margin=1.0, lambda_forget=1.0,
                          lambda_retain=1.0, lambda_struct=1.0)["loss"].backward()
        grads[dtype] = zf.grad
    assert grads[torch.bfloat16].dtype == torch.bfloat16
    torch.testing.assert_close(grads[torch.bfloat16].float(), grads[torch.float32], rtol=0.05, atol=2e-3)


def test_without_kl_targets_the_struct_term_is_left_out():
    z, labels, hinge_w, retain_w, kl_w, _, _ = _case()
    zf = z.clone().requires_grad_(True)
    out = phase2_model_loss(zf, labels, hinge_w, retain_w, kl_w, None, None, margin=1.0, lambda_forget=1.0,
                            lambda_retain=1.0, lambda_struct=1.0)
    out["loss"].backward()
    assert "struct" not in out
    expected = F.cross_entropy(z[retain_w], labels[retain_w])
    torch.testing.assert_close(out["retain"], expected)


@pytest.mark.parametrize("chunk_rows", [1, 5, 100])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_head_form_equals_the_logits_form_in_values_and_every_gradient(monkeypatch, chunk_rows, with_bias):
    """Phase2LinearLoss(h, W, b) == Phase2Loss(h W^T + b): the logits are computed chunk by chunk, twice,
    and never held whole; the gradient reaches h, and W / b only when they ask for one."""
    monkeypatch.setattr(fused_loss, "LINEAR_CHUNK_BYTES", 4 * V * chunk_rows)
    _, labels, hinge_w, retain_w, kl_w, ids, log_p = _case(2)
    torch.manual_seed(3)
    N, d = labels.shape[0], 8
    h = torch.randn(N, d, dtype=torch.float64)
    w = torch.randn(V, d, dtype=torch.float64)
    b = torch.randn(V, dtype=torch.float64) if with_bias else None
    kwargs = dict(margin=1.0, lambda_forget=1.0, lambda_retain=0.8, lambda_struct=1.3)

    hl, wl = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    bl = b.clone().requires_grad_(True) if with_bias else None
    out = phase2_model_loss(None, labels, hinge_w, retain_w, kl_w, ids, log_p.double(), hidden=hl, head_weight=wl,
                            head_bias=bl, **kwargs)
    (1.7 * out["loss"]).backward()

    hr, wr = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    br = b.clone().requires_grad_(True) if with_bias else None
    ref = phase2_model_loss(F.linear(hr, wr, br), labels, hinge_w, retain_w, kl_w, ids, log_p.double(), **kwargs)
    (1.7 * ref["loss"]).backward()

    for key in ("loss", "forget", "retain", "struct", "nll"):
        torch.testing.assert_close(out[key].double(), ref[key].double(), rtol=1e-6, atol=1e-6)
    assert int(out["forget_violating"]) == int(ref["forget_violating"])
    # the linear-head form computes its loss in fp32 (its values come back as fp32), so the fp64 gradients agree to
    # fp32 precision of their scale (~1), not to 1e-8: which elements land within 1e-8 depends on the CPU's kernels
    torch.testing.assert_close(hl.grad, hr.grad, rtol=1e-6, atol=2e-7)
    torch.testing.assert_close(wl.grad, wr.grad, rtol=1e-6, atol=2e-7)
    if with_bias:
        torch.testing.assert_close(bl.grad, br.grad, rtol=1e-6, atol=2e-7)


def test_linear_head_form_leaves_a_frozen_head_without_gradient_and_checks_shapes():
    _, labels, hinge_w, retain_w, kl_w, ids, log_p = _case()
    h = torch.randn(labels.shape[0], 8, requires_grad=True)
    w = torch.randn(V, 8)                                       # frozen, as ALTER's LM head
    out = phase2_model_loss(None, labels, hinge_w, retain_w, kl_w, ids, log_p, hidden=h, head_weight=w,
                            margin=1.0, lambda_forget=1.0, lambda_retain=1.0, lambda_struct=1.0)
    out["loss"].backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and w.grad is None
    with pytest.raises(ValueError, match="agree on d"):
        phase2_model_loss(None, labels, hinge_w, retain_w, kl_w, ids, log_p, hidden=h, head_weight=w[:, :5],
                          margin=1.0, lambda_forget=1.0, lambda_retain=1.0, lambda_struct=1.0)
    with pytest.raises(ValueError, match="not both"):
        phase2_model_loss(h @ w.T, labels, hinge_w, retain_w, kl_w, ids, log_p, hidden=h, head_weight=w,
                          margin=1.0, lambda_forget=1.0, lambda_retain=1.0, lambda_struct=1.0)
