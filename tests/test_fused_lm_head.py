"""Training with the LM head applied inside the loss (``fused_lm_head``, the default) is training with the
model's logits: same adapter, and a forward with ``hidden_only`` gives the hidden states the head maps to
the logits (alter/train/fused_loss.py, docs/method.md section 4 "Cost")."""

import pytest
import torch

import alter
from alter.data.schema import QAExample
from alter.train.trainer import AlterTrainer
from tests.helpers import make_tiny_llama, make_tiny_tokenizer

FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana") for n in ("Ana", "Ana Li")]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ("Cy", "Di", "Ed", "Fa")]


def _train(flag: bool):
    tok = make_tiny_tokenizer()
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase1_epochs=1, phase2_epochs=2, lr_phase1=1e-2, lr_phase2=1e-2,
                            phase2_min_steps=0, fused_lm_head=flag)
    trainer = AlterTrainer(make_tiny_llama(len(tok)), tok, cfg, FORGET, RETAIN, progress=False)
    return trainer, trainer.train()


def test_training_with_the_fused_head_learns_the_adapter_the_logits_give():
    (_, plain), (trainer, fused) = _train(False), _train(True)
    assert trainer._fused_head(True) is not None              # the tiny Llama has a plain head: the path ran
    a, b = plain.adapter_state_dict(), fused.adapter_state_dict()
    assert a.keys() == b.keys()
    moved = 0
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=1e-4, atol=1e-6, msg=key)
        moved += int(value.abs().sum() > 0 and "lora_B" in key)
    assert moved > 0


def test_hidden_only_forward_gives_the_states_the_head_turns_into_the_logits():
    _, model = _train(True)
    tok = make_tiny_tokenizer()
    ids = torch.tensor([tok.encode("Who is Ana? Ana paints")])
    ent = torch.rand(ids.shape)
    u = torch.tensor([[0.0, 2.0]])
    with torch.no_grad():
        logits = model(input_ids=ids, entropy=ent, router_logits=u).logits
        hidden = model(input_ids=ids, entropy=ent, router_logits=u, hidden_only=True)[0]
    head = model.plain_lm_head()
    torch.testing.assert_close(head(hidden), logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="hidden_only=True needs entropy"):
        model(input_ids=ids, hidden_only=True)
