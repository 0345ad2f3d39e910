"""The structural KL against kept top-k base targets (alter/train/kl_targets.py)."""

import pytest
import torch
import torch.nn.functional as F

import alter
from alter.train import AlterTrainer
from alter.train.kl_targets import linear_top_k_targets, top_k_kl, top_k_targets
from tests.helpers import make_tiny_llama
from tests.test_alter_trainer import FORGET, RETAIN


def _full_kl(model_logits, base_logits):
    return F.kl_div(F.log_softmax(model_logits.float(), -1), F.log_softmax(base_logits.float(), -1),
                    log_target=True, reduction="batchmean")


def test_targets_hold_the_top_k_log_probs_and_the_rest_of_the_mass():
    torch.manual_seed(0)
    base = torch.randn(2, 3, 50) * 3
    ids, log_p = top_k_targets(base, 5)
    assert ids.shape == (2, 3, 5) and log_p.shape == (2, 3, 6)
    full = F.log_softmax(base, -1)
    torch.testing.assert_close(log_p[..., :5], full.topk(5, -1).values)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(2, 3))          # top-k + tail = all the mass
    with pytest.raises(ValueError, match="k must be"):
        top_k_targets(base, 0)


def test_top_k_kl_is_zero_at_the_base_below_the_full_kl_and_exact_when_k_covers_the_vocabulary():
    torch.manual_seed(1)
    base, model = torch.randn(6, 40) * 2, torch.randn(6, 40) * 2
    ids, log_p = top_k_targets(base, 8)
    assert top_k_kl(base, ids, log_p).abs() < 1e-6
    assert 0 < top_k_kl(model, ids, log_p) <= _full_kl(model, base) + 1e-6
    ids, log_p = top_k_targets(base, 39)                     # 39 tokens + a 1-token tail: the full KL
    m = model.clone().requires_grad_(True)
    top_k_kl(m, ids, log_p).backward()
    m2 = model.clone().requires_grad_(True)
    _full_kl(m2, base).backward()
    torch.testing.assert_close(top_k_kl(model, ids, log_p), _full_kl(model, base))
    torch.testing.assert_close(m.grad, m2.grad)


def test_top_k_kl_stays_finite_when_the_model_puts_all_mass_on_the_top_k():
    base = torch.zeros(2, 10)
    base[:, :3] = 50.0                                        # base tail ~ 0
    ids, log_p = top_k_targets(base, 3)
    model = torch.full((2, 10), -1e4, requires_grad=True)
    with torch.no_grad():
        model[:, :3] = 0.0                                    # model tail = exp(-1e4): underflows to 0
    loss = top_k_kl(model, ids, log_p)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(model.grad).all()


def test_phase_two_with_kept_targets_computes_each_example_once_and_matches_the_exact_kl(tiny_tokenizer):
    """With k covering the vocabulary, the kept-target KL is the exact KL: the first step's loss
    equals the per-step base pass's; the targets come from the entropy pass of ``prepare`` (chunked
    through the LM head), so phase II runs no base pass at all."""
    forget, retain = FORGET, RETAIN
    losses, calls = {}, {}
    for k in (0, 103):
        torch.manual_seed(0)
        model = make_tiny_llama(len(tiny_tokenizer))
        cfg = alter.AlterConfig(phase1_epochs=0, phase2_epochs=2, phase2_min_steps=0, batch_size=2,
                                struct_kl_top_k=k, forget_domains=sorted({ex.domain for ex in FORGET}))
        tr = AlterTrainer(model, tiny_tokenizer, cfg, forget, retain, progress=False)
        wrapped = tr.prepare()
        # forget rows keep targets; retain rows only feed the router's bank (no entropy, no targets)
        assert all((it.kl_targets is not None) == (k > 0 and it.domain_id > 0) for it in tr.items)
        assert all((it.position_entropy is None) == (it.domain_id == 0) for it in tr.items)
        n_calls = [0]
        real = wrapped.base_forward

        def counting(*a, **kw):
            n_calls[0] += 1
            return real(*a, **kw)

        wrapped.base_forward = counting
        seen = []
        real_step = tr._step
        tr._step = lambda phase, batch, m: seen.append(real_step(phase, batch, m)) or seen[-1]
        tr.train()
        losses[k], calls[k] = seen[0]["struct"], n_calls[0]
        steps = len(seen)
    torch.testing.assert_close(losses[103], losses[0], rtol=1e-4, atol=1e-6)
    assert calls[0] == steps                                   # exact: one base pass per step
    assert calls[103] == 0                                     # kept: made in prepare's entropy pass


def test_targets_through_the_lm_head_in_chunks_equal_the_targets_of_the_logits():
    torch.manual_seed(0)
    hidden, head = torch.randn(3, 5, 8), torch.nn.Linear(8, 1 << 19)     # 8 rows per chunk: 2 chunks
    ids, log_p = linear_top_k_targets(hidden, head.weight, 6, bias=head.bias)
    ref_ids, ref_log_p = top_k_targets(head(hidden), 6)
    assert ids.shape == (3, 5, 6) and log_p.shape == (3, 5, 7)
    torch.testing.assert_close(ids, ref_ids)
    torch.testing.assert_close(log_p, ref_log_p)
