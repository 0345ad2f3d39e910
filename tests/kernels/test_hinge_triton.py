"""Hinge forget loss (docs/method.md §4): the Triton launchers against the PyTorch references (see triton_common)."""

from __future__ import annotations

import math

import pytest
import torch

import alter_kernels as ak
from alter_kernels.reference import hinge_forget_loss_reference
from alter_kernels.triton.hinge import hinge_forward_triton
from tests.kernels.triton_common import DEVICES, DTYPES, _id, make


def hinge_rows_reference(logits, labels, margin, ignore_index):
    """(per_row, other value) in fp64 from the reference definition."""
    z = logits.double().cpu()
    labels = labels.cpu().long()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    z_y = z.gather(1, safe[:, None]).squeeze(1)
    others = z.scatter(1, safe[:, None], float("-inf"))
    z_other = others.amax(1)
    per_row = torch.where(valid, torch.clamp(z_y - z_other + margin, min=0.0), torch.zeros_like(z_y))
    return per_row, others, valid


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_hinge_launcher_matches_reference(dtype, device):
    for i, (n, v, block, label_dtype) in enumerate([(1, 2, 16, torch.int64), (6, 37, 16, torch.int32),
                                                     (9, 300, 64, torch.int64), (3, 1000, None, torch.int64)]):
        logits = make((n, v), dtype, scale=3.0, seed=i, device=device)
        labels = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(i))
        if n > 2:
            labels[1] = -100                                        # ignored
            logits[2, labels[2]] = logits[2].max() + 5              # true token on top by far
        labels = labels.to(label_dtype).to(device)
        for margin in (1.0, 0.0, 2.5):
            per_row, other = hinge_forward_triton(logits, labels, margin, -100, block=block)
            ref, others, valid = hinge_rows_reference(logits, labels, margin, -100)
            assert per_row.dtype == torch.float32 and other.dtype == torch.int64
            torch.testing.assert_close(per_row.cpu().double(), ref, rtol=1e-6, atol=1e-6)
            other = other.cpu()
            assert (other[~valid] == -1).all() and (per_row.cpu()[~valid] == 0).all()
            rows = valid.nonzero().squeeze(1)
            assert (other[rows] != labels.cpu().long()[rows]).all()
            # y' is the first index attaining the best other logit
            best = others[rows].amax(1)
            first = (others[rows] == best[:, None]).double().argmax(1)
            assert torch.equal(other[rows], first)


@pytest.mark.parametrize("device", DEVICES)
def test_hinge_ties_and_masked_vocab(device):
    z = torch.tensor([[1.0, 3.0, 3.0, 0.0],                      # tie among the others: first index
                      [5.0, 5.0, -1.0, 2.0],                     # the label ties with another token
                      [float("-inf"), 2.0, float("-inf"), float("-inf")],   # no finite competitor
                      [0.0, float("-inf"), 4.0, 4.0]], device=device)
    labels = torch.tensor([0, 0, 1, 3], device=device)
    per_row, other = hinge_forward_triton(z, labels, 1.0, -100, block=16)
    assert other.cpu().tolist() == [1, 1, 0, 2]
    assert per_row.cpu().tolist()[:2] == [0.0, 1.0] and per_row[2].item() == math.inf and per_row[3].item() == 1.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_hinge_public_api_forward_backward(dtype, device):
    n, v = 10, 77
    g = torch.Generator().manual_seed(4)
    base = (torch.randn(n, v, generator=g) * 0.5).to(dtype)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[3] = -100
    base[5, labels[5]] = base[5].max() + 3.0       # active hinge with the true token on top
    base[6, labels[6]] = base[6].min() - 3.0       # inactive hinge: no gradient
    others = base.scatter(1, labels.clamp(min=0)[:, None], float("-inf"))
    top2 = others.topk(2, dim=1).values
    assert (top2[:, 0] > top2[:, 1]).all()           # no tie for y': the reference would split its gradient
    logits = base.clone().to(device).requires_grad_()
    with ak.use_backend("triton"):
        loss = ak.hinge_forget_loss(logits, labels.to(device), 1.0)
    loss.backward()
    ref_logits = base.double().requires_grad_()
    ref = hinge_forget_loss_reference(ref_logits, labels, 1.0)
    ref.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.cpu().double(), ref.detach(), rtol=1e-6, atol=1e-6)
    assert logits.grad.dtype == dtype
    grad_tol = 1e-6 if dtype == torch.float32 else 2.0 ** -8     # +-1/M rounded to the logits' dtype
    torch.testing.assert_close(logits.grad.cpu().double(), ref_logits.grad, rtol=grad_tol, atol=1e-7)
    assert (logits.grad[6] == 0).all() and (logits.grad[3] == 0).all()
    # every row ignored: loss 0, gradient 0
    logits.grad = None
    with ak.use_backend("triton"):
        empty = ak.hinge_forget_loss(logits, torch.full((n,), -100, device=device), 1.0)
    empty.backward()
    assert empty.item() == 0.0 and (logits.grad == 0).all()


def test_hinge_launcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2 classes"):
        hinge_forward_triton(torch.randn(3, 1), torch.zeros(3, dtype=torch.long), 1.0, -100)
    with pytest.raises(TypeError, match="labels"):
        hinge_forward_triton(torch.randn(3, 4), torch.zeros(3), 1.0, -100)
    with pytest.raises(ValueError, match="labels must have shape"):
        hinge_forward_triton(torch.randn(3, 4), torch.zeros(2, dtype=torch.long), 1.0, -100)
