"""The on-policy repetition unlikelihood option of phase II (alter/train/repetition_loss.py)."""

import math

import pytest
import torch

from alter.train.repetition_loss import (candidate_log_probs, candidate_positions, repeat_positions,
                                         stray_positions, unlikelihood)


def test_repeat_positions_marks_later_occurrences_of_a_repeated_ngram():
    loop = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7, 8]
    marked = repeat_positions(loop, n=4, min_share=0.1)
    assert marked == set(range(4, 12))          # the first occurrence is the model's own text, the rest repeat
    assert repeat_positions(list(range(20)), n=4) == set()
    # one name written twice in a 48-token answer (4 of 48 tokens < 10%) is left alone
    fluent = [1, 2, 3, 4] + list(range(100, 120)) + [1, 2, 3, 4] + list(range(200, 220))
    assert repeat_positions(fluent, n=4, min_share=0.1) == set()
    assert repeat_positions(fluent, n=4, min_share=0.0) == {24, 25, 26, 27}
    assert repeat_positions([], n=4) == set()


def test_stray_positions_flag_new_scripts_and_broken_bytes():
    pieces = ["Ji", "-Yeon", " Park", " was", " born", " in", " the", "해", "\ufffd", " Seoul"]
    assert stray_positions(pieces, "Where was Ji-Yeon Park born? In Seoul.") == {7, 8}
    assert stray_positions(pieces, "박 해 Ji-Yeon Park \ufffd") == set()


def test_candidate_positions_on_real_token_ids(tiny_tokenizer):
    ids = tiny_tokenizer("the genre of the genre of the genre of the genre of", add_special_tokens=False)["input_ids"]
    cand = candidate_positions(tiny_tokenizer, ids, "What genre?")
    assert cand and min(cand) > 0 and max(cand) == len(ids) - 1


def test_unlikelihood_is_minus_log_one_minus_p_and_finite_near_one():
    p = torch.tensor([0.5, 0.9, 0.01])
    assert torch.allclose(unlikelihood(p.log()), -torch.log1p(-p).mean())
    near_one = unlikelihood(torch.tensor([0.0]))
    assert math.isfinite(float(near_one))
    assert float(unlikelihood(torch.zeros(0))) == 0.0


def test_candidate_log_probs_reads_the_predicting_position():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    got = candidate_log_probs(logits, ids, [0, 1, 1], [1, 2, 4])
    lp = torch.log_softmax(logits, -1)
    want = torch.stack([lp[0, 0, ids[0, 1]], lp[1, 1, ids[1, 2]], lp[1, 3, ids[1, 4]]])
    assert torch.allclose(got, want, atol=1e-6)


def test_phase2_trains_with_the_repetition_term_on_forget_experts_only(tiny_tokenizer, monkeypatch):
    import alter
    import alter.train.repetition_loss as repetition_module
    from tests.test_answer_stop import FORGET, RETAIN
    from tests.helpers import make_tiny_llama

    # a random tiny model rarely loops within a few tokens: every generated token is made a candidate, so
    # the term's path (generation, routing as generated, backward) runs on every step
    monkeypatch.setattr(repetition_module, "candidate_positions", lambda tok, ids, ctx: list(range(len(ids))))
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, lambda_repetition=1.0,
                            stop_level_scale=-1.0, stop_forget_probability=-1.0, stop_when_forgotten=-1.0)
    tr = alter.train.AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, FORGET, RETAIN,
                                  progress=False, log_every=1)
    model = tr.prepare()
    retain_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B.0" in n or "lora_A" in n}
    tr.train()
    logged = [r for r in tr.report.log if "repetition" in r]
    assert logged and all(math.isfinite(r["repetition"]) and r["repetition"] > 0 for r in logged)
    assert all(r["repetition_rows"] >= 1 for r in logged)
    for n, p in model.named_parameters():
        if n in retain_before:
            assert torch.equal(p.detach(), retain_before[n]), n     # the shared A and B_R never move
    with pytest.raises(ValueError, match="lambda_repetition"):
        alter.AlterConfig(lambda_repetition=-1.0)
    with pytest.raises(ValueError, match="repetition_every"):
        alter.AlterConfig(repetition_every=0)
