"""Which positions each phase II loss term covers (docs/method.md §4), on hand-made tensors."""

import torch
import torch.nn.functional as F

from alter.train.losses import phase1_loss, phase2_losses

V = 7


def _batch():
    torch.manual_seed(0)
    # row 0: forget example, row 1: retain example; positions 0-2 prompt, 3-5 answer, row 1 padded at 5
    labels = torch.tensor([[-100, -100, -100, 1, 2, 3], [-100, -100, -100, 4, 5, -100]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    # entropy at each position (of the distribution predicting the next token); theta = 0.5
    ent = torch.tensor([[0.9, 0.1, 0.9, 0.1, 0.9, 0.1], [0.1, 0.9, 0.1, 0.9, 0.1, 0.1]])
    logits = torch.randn(2, 6, V, requires_grad=True)
    base = torch.randn(2, 6, V)
    return logits, base, labels, mask, ent


def _kl(lg, blg):
    return F.kl_div(F.log_softmax(lg, -1), F.log_softmax(blg, -1), log_target=True, reduction="batchmean")


def test_each_term_covers_exactly_its_positions():
    logits, base, labels, mask, ent = _batch()
    out = phase2_losses(logits, base, labels, ent, 0.5, torch.tensor([True, False]), margin=1.0, lambda_forget=1.0,
                        lambda_retain=1.0, lambda_struct=1.0, attention_mask=mask, struct_tokens="all")
    # hinge: forget row, answer labels at t+1 in {3,4,5}, low entropy at t in {2,3,4} -> t = 3 (predicting label 2)
    z = logits[0, 3]
    other = torch.cat([z[:2], z[3:]]).max()
    torch.testing.assert_close(out["forget"], torch.clamp(z[2] - other + 1.0, min=0))
    # retain CE: retain row, answer positions t = 2, 3 (labels 4, 5)
    torch.testing.assert_close(out["retain"], F.cross_entropy(logits[1, 2:4], torch.tensor([4, 5])))
    # structural KL over high-entropy positions with a real next token, prompt included:
    # row 0: t in {0, 2, 4}; row 1: t in {1, 3}
    lg = torch.stack([logits[0, 0], logits[0, 2], logits[0, 4], logits[1, 1], logits[1, 3]])
    blg = torch.stack([base[0, 0], base[0, 2], base[0, 4], base[1, 1], base[1, 3]])
    torch.testing.assert_close(out["struct"], _kl(lg, blg))
    out["loss"].backward()
    assert logits.grad[1, 5].abs().sum() == 0            # padding gets nothing


def test_struct_on_answer_positions_only():
    logits, base, labels, mask, ent = _batch()
    out = phase2_losses(logits, base, labels, ent, 0.5, torch.tensor([True, False]), margin=1.0, lambda_forget=0.0,
                        lambda_retain=0.0, lambda_struct=1.0, attention_mask=mask, struct_tokens="answer")
    lg = torch.stack([logits[0, 2], logits[0, 4], logits[1, 3]])
    blg = torch.stack([base[0, 2], base[0, 4], base[1, 3]])
    torch.testing.assert_close(out["struct"], _kl(lg, blg))


def test_phase1_cross_entropy_on_high_entropy_answer_tokens():
    logits, _, labels, _, ent = _batch()
    out = phase1_loss(logits, labels, ent, 0.5)
    expected = F.cross_entropy(torch.stack([logits[0, 2], logits[0, 4], logits[1, 3]]), torch.tensor([1, 3, 5]))
    torch.testing.assert_close(out["loss"], expected)


def test_the_hinge_count_is_the_hinge_rows_with_a_positive_hinge():
    logits, base, labels, mask, ent = _batch()
    for push in (0.0, 10.0):            # the only hinge row (row 0, t = 3, label 2) below / far above the margin
        with torch.no_grad():
            logits[0, 3, 2] = logits[0, 3].max() + push if push else logits[0, 3].min() - 5
        out = phase2_losses(logits, base, labels, ent, 0.5, torch.tensor([True, False]), margin=1.0,
                            lambda_forget=1.0, lambda_retain=1.0, lambda_struct=1.0, attention_mask=mask,
                            struct_tokens="non_hinge")
        assert int(out["forget_tokens"]) == 1 and int(out["forget_violating"]) == (1 if push else 0)


def test_non_hinge_kl_covers_every_position_the_hinge_does_not_push():
    logits, base, labels, mask, ent = _batch()
    out = phase2_losses(logits, base, labels, ent, 0.5, torch.tensor([True, False]), margin=1.0, lambda_forget=1.0,
                        lambda_retain=0.0, lambda_struct=1.0, attention_mask=mask, struct_tokens="non_hinge")
    # the hinge takes row 0, t = 3; the KL every other position with a real next token
    rows = [(0, 0), (0, 1), (0, 2), (0, 4), (1, 0), (1, 1), (1, 2), (1, 3)]
    lg = torch.stack([logits[b, t] for b, t in rows])
    blg = torch.stack([base[b, t] for b, t in rows])
    torch.testing.assert_close(out["struct"], _kl(lg, blg))
    assert int(out["forget_tokens"]) == 1


def test_content_mask_keeps_the_hinge_off_function_words():
    logits, base, labels, mask, ent = _batch()
    content = torch.ones_like(labels, dtype=torch.bool)
    content[0, 4] = False                 # the token at position 4 (label 2, the hinge's only target) is "the"
    out = phase2_losses(logits, base, labels, ent, 0.5, torch.tensor([True, False]), margin=1.0, lambda_forget=1.0,
                        lambda_retain=0.0, lambda_struct=0.0, attention_mask=mask, struct_tokens="all",
                        content=content)
    assert float(out["forget"]) == 0.0 and int(out["forget_tokens"]) == 0


def test_content_flags_mark_words_that_carry_the_fact():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from alter.train.batches import content_flags

    words = ["<eos>", "He", "was", "born", "in", "Paris", ".", ","]
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")
    ids = tok("He was born in Paris .", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    flags = content_flags(tok, ids, ids)
    assert [w for w, f in zip(["He", "was", "born", "in", "Paris", ".", "<eos>"], flags) if f] == ["born", "Paris"]
    assert content_flags(tok, ids, [-100] * len(ids)) == [False] * len(ids)     # prompt tokens never
