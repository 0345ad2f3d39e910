"""The C++ hinge forget loss against the PyTorch reference (docs/method.md §4)."""

from __future__ import annotations


import pytest
import torch

import alter_kernels as ak
from alter_kernels.cpu.hinge import hinge_forward_cpp
from alter_kernels.reference import hinge_forget_loss_reference
from tests.kernels.cpp_common import DTYPES


def distinct_logits(n, v, dtype, seed):
    """Logits without ties (row permutations of integers, exact in bf16/fp16 for v <= 256)."""
    g = torch.Generator().manual_seed(seed)
    if v <= 256:
        values = torch.argsort(torch.rand(n, v, generator=g), dim=1).float() - v / 2
    else:
        values = torch.randn(n, v, generator=g, dtype=torch.float64) * 5
    return values.to(dtype)


def hinge_labels(logits, seed, ignore_index=-100, ignored=()):
    """Labels where every other row's true token is the top logit (an active hinge)."""
    n, v = logits.shape
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::2] = logits[::2].float().argmax(1)
    labels[0] = 0
    if n > 1:
        labels[1] = v - 1
    for row in ignored:
        labels[row] = ignore_index
    return labels


def hinge_per_row_reference(logits, labels, margin, ignore_index):
    z = logits.double()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
    others = z.scatter(1, safe[:, None], float("-inf"))
    per_row = torch.clamp(z.gather(1, safe[:, None]).squeeze(1) - others.amax(1) + margin, min=0)
    return torch.where(valid, per_row, torch.zeros_like(per_row)), torch.where(valid, others.argmax(1), -1)


HINGE_SHAPES = [(1, 2), (5, 17), (8, 256), (6, 2049), (3, 5000), (40, 1000)]


@pytest.mark.parametrize("shape", HINGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_hinge_forward_matches_reference(shape, dtype):
    # above 256 classes the values are rounded randn: bf16 / fp16 may tie, so compare the values at y'
    exact_indices = dtype == torch.float32 or shape[1] <= 256
    logits = distinct_logits(*shape, dtype, seed=shape[1])
    labels = hinge_labels(logits, seed=1, ignored=(2,) if shape[0] > 2 else ())
    for margin in (0.0, 1.0, 2.5):
        per_row, other = hinge_forward_cpp(logits, labels, margin, -100)
        ref_rows, ref_other = hinge_per_row_reference(logits, labels, margin, -100)
        assert per_row.dtype == torch.float32 and other.dtype == torch.int64
        torch.testing.assert_close(per_row.double(), ref_rows, rtol=1e-6, atol=1e-5)
        valid = labels != -100
        assert (other[~valid] == -1).all()
        if exact_indices:
            assert torch.equal(other, ref_other)
        else:
            z = logits.double()
            torch.testing.assert_close(z[valid].gather(1, other[valid, None]).squeeze(1),
                                       z[valid].scatter(1, labels[valid, None], float("-inf")).amax(1))
        assert (other[valid] != labels[valid]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32], ids=["int64", "int32"])
def test_hinge_loss_and_gradient_match_reference(dtype, label_dtype):
    logits = distinct_logits(12, 200, dtype, seed=11)
    labels = hinge_labels(logits, seed=12, ignored=(3, 8)).to(label_dtype)
    x_cpp = logits.clone().requires_grad_()
    x_ref = logits.clone().requires_grad_()
    with ak.use_backend("cpp"):
        loss = ak.hinge_forget_loss(x_cpp, labels, margin=1.5)
    ref = hinge_forget_loss_reference(x_ref, labels.long(), 1.5)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss, ref.float(), rtol=1e-6, atol=1e-6)
    assert loss.item() > 0
    loss.backward()
    ref.backward()
    assert x_cpp.grad.dtype == dtype
    torch.testing.assert_close(x_cpp.grad.float(), x_ref.grad.float(), rtol=0, atol=1e-6)
    assert (x_cpp.grad[3] == 0).all() and (x_cpp.grad[8] == 0).all()


def test_hinge_odd_vocab_gradient_and_wide_rows():
    logits = distinct_logits(5, 4099, torch.float32, seed=13)
    labels = hinge_labels(logits, seed=14)
    logits[0, 4098] = logits[0].max() + 0.25               # runner-up of row 0 in the last partial chunk
    x_cpp = logits.clone().requires_grad_()
    x_ref = logits.clone().requires_grad_()
    with ak.use_backend("cpp"):
        loss = ak.hinge_forget_loss(x_cpp, labels, 3.0)
    ref = hinge_forget_loss_reference(x_ref, labels, 3.0)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(x_cpp.grad, x_ref.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=lambda d: str(d).replace("torch.", ""))
def test_hinge_reads_every_half_precision_value(dtype):
    """Rows [v, 0] and [0, v] with label 0 and margin 0 give relu(v) and relu(-v) exactly: the
    kernel's bf16/fp16 -> fp32 conversion is exact for every finite value (subnormals included)."""
    values = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    values = values[torch.isfinite(values)]
    zeros = torch.zeros_like(values)
    labels = torch.zeros(values.numel(), dtype=torch.int64)
    first, _ = hinge_forward_cpp(torch.stack([values, zeros], 1), labels, 0.0, -100)
    second, _ = hinge_forward_cpp(torch.stack([zeros, values], 1), labels, 0.0, -100)
    exact = values.float()
    assert torch.equal(first, exact.clamp(min=0)) and torch.equal(second, (-exact).clamp(min=0))


def test_hinge_all_rows_ignored():
    logits = distinct_logits(4, 30, torch.float32, seed=15).requires_grad_()
    labels = torch.full((4,), -7)
    with ak.use_backend("cpp"):
        loss = ak.hinge_forget_loss(logits, labels, ignore_index=-7)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    per_row, other = hinge_forward_cpp(logits.detach(), labels, 1.0, -7)
    assert per_row.tolist() == [0.0] * 4 and other.tolist() == [-1] * 4


def test_hinge_other_logits_all_neg_inf():
    logits = torch.tensor([[2.0, float("-inf"), float("-inf")], [float("-inf"), float("-inf"), 0.5]])
    per_row, other = hinge_forward_cpp(logits, torch.tensor([0, 2]), 1.0, -100)
    assert per_row.tolist() == [float("inf")] * 2
    assert other.tolist() == [1, 0]                       # a valid index other than the label


def test_hinge_non_contiguous_logits():
    base = distinct_logits(10, 300, torch.float32, seed=16)
    sliced = base[1::3, 7:257]
    labels = hinge_labels(sliced.contiguous(), seed=17)
    per_row, other = hinge_forward_cpp(sliced, labels, 1.0, -100)
    ref_rows, ref_other = hinge_per_row_reference(sliced, labels, 1.0, -100)
    torch.testing.assert_close(per_row.double(), ref_rows)
    assert torch.equal(other, ref_other)
    transposed = distinct_logits(40, 6, torch.float32, seed=18).t()
    labels = torch.tensor([0, 39, 5, 20, 11, 3])
    with ak.use_backend("cpp"):
        loss = ak.hinge_forget_loss(transposed, labels, 1.0)
    torch.testing.assert_close(loss, hinge_forget_loss_reference(transposed, labels, 1.0))


def test_hinge_launcher_rejects_bad_labels():
    logits = torch.randn(3, 10)
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        hinge_forward_cpp(logits, torch.tensor([0, 10, 2]), 1.0, -100)
    with pytest.raises(ValueError, match=r"labels\[2\]"):
        hinge_forward_cpp(logits, torch.tensor([0, 1, -5], dtype=torch.int32), 1.0, -100)
    with pytest.raises(TypeError, match="labels"):
        hinge_forward_cpp(logits, torch.tensor([0.0, 1.0, 2.0]), 1.0, -100)
    with pytest.raises(ValueError, match="labels"):
        hinge_forward_cpp(logits, torch.tensor([0, 1]), 1.0, -100)
    with pytest.raises(ValueError, match="logits"):
        hinge_forward_cpp(torch.randn(3, 1), torch.tensor([0, 0, 0]), 1.0, -100)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_hinge_forget_rows_gives_the_kernels_per_row_values_and_runner_up(backend):
    from alter_kernels.reference import hinge_forget_rows_reference

    logits = distinct_logits(9, 40, torch.float32, seed=3)
    labels = hinge_labels(logits, seed=3, ignored=(4,))
    with ak.use_backend(backend):
        per_row, other = ak.hinge_forget_rows(logits, labels, 1.0)
    ref_rows, ref_other = hinge_forget_rows_reference(logits, labels, 1.0)
    torch.testing.assert_close(per_row, ref_rows)
    assert torch.equal(other, ref_other) and int(other[4]) == -1 and float(per_row[4]) == 0.0
    assert int((per_row > 0).sum()) > 0                          # some rows active, as hinge_labels makes them
    torch.testing.assert_close(per_row.sum() / (labels != -100).sum(), ak.hinge_forget_loss(logits, labels, 1.0))
    with pytest.raises(ValueError, match="labels must be in"):
        ak.hinge_forget_rows(logits, torch.full_like(labels, 40), 1.0)
