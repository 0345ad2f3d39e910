"""The complement KL option of phase II (alter/train/complement_loss.py): where the forgotten token's mass goes."""

import math

import pytest
import torch

from alter.train.complement_loss import complement_kl


def _targets(base_logits, k):
    lp = torch.log_softmax(base_logits, dim=-1)
    top = lp.topk(k, dim=-1)
    rest = torch.logsumexp(lp.scatter(1, top.indices, float("-inf")), dim=-1)      # as alter.train.kl_targets
    return top.indices, torch.cat([top.values, rest[:, None]], dim=1)


def _brute(logits, labels, ids, base_logits):
    """The KL over buckets (each kept id, the rest), both distributions renormalised without the label."""
    out = []
    for n in range(logits.shape[0]):
        p, q = torch.softmax(base_logits[n].double(), -1), torch.softmax(logits[n].double(), -1)
        y = int(labels[n])
        kept = [int(i) for i in ids[n] if int(i) != y]
        rest = [v for v in range(len(p)) if v not in kept and v != y]
        pb = [p[i] for i in kept] + [p[rest].sum()]
        pm = [q[i] for i in kept] + [q[rest].sum()]
        zb, zm = 1 - p[y], 1 - q[y]
        out.append(sum(a / zb * math.log((a / zb) / (b / zm)) for a, b in zip(pb, pm) if a > 0))
    return float(sum(out) / len(out))


def test_complement_kl_matches_the_bucket_kl_and_is_zero_at_the_starting_model():
    torch.manual_seed(0)
    V, N, k = 12, 5, 4
    base = torch.randn(N, V) * 2
    base[:, 3] += 8                                                 # a memorised token at probability ~1
    labels = torch.tensor([3, 3, 3, 7, 0])                          # the last two: the label may be outside top-k
    ids, log_p = _targets(base, k)
    inside = (ids == labels[:, None]).any(dim=1)
    assert inside.tolist()[:3] == [True] * 3 and not bool(inside.all())
    model = torch.randn(N, V, requires_grad=True)
    exact = complement_kl(model[inside], labels[inside], ids[inside], log_p[inside])
    assert float(exact.detach()) == pytest.approx(_brute(model.detach()[inside], labels[inside], ids[inside],
                                                         base[inside]), rel=1e-4)
    value = complement_kl(model, labels, ids, log_p)     # a label outside the kept top-k: its mass stays in the rest
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(model.grad).all()
    # the starting model itself: nothing to move, whatever probability it gives the forgotten token
    same = complement_kl(base[:3].clone(), labels[:3], ids[:3], log_p[:3])
    assert float(same) == pytest.approx(0.0, abs=1e-5)
    pushed = base[:3].clone()
    pushed[:, 3] -= 30                                               # the hinge's job done: still 0
    assert float(complement_kl(pushed, labels[:3], ids[:3], log_p[:3])) == pytest.approx(0.0, abs=1e-5)
    assert float(complement_kl(torch.zeros(0, V), labels[:0], ids[:0], log_p[:0])) == 0.0


def test_phase2_trains_with_the_complement_term_and_needs_the_kept_targets(tiny_tokenizer):
    import alter
    from tests.test_answer_stop import FORGET, RETAIN
    from tests.helpers import make_tiny_llama

    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, lambda_complement=1.0,
                            stop_level_scale=-1.0, stop_forget_probability=-1.0, stop_when_forgotten=-1.0)
    tr = alter.train.AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, FORGET, RETAIN,
                                  progress=False)
    tr.train()
    logged = [r for r in tr.report.log if "complement" in r]
    assert logged and all(math.isfinite(r["complement"]) for r in logged)
    with pytest.raises(ValueError, match="lambda_complement"):
        alter.AlterConfig(lambda_complement=-1.0)
    no_targets = cfg.replace(struct_kl_top_k=0)
    with pytest.raises(ValueError, match="lambda_complement needs"):
        alter.train.AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, no_targets, FORGET, RETAIN,
                                 progress=False)
