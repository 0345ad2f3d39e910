"""Activation checkpointing recomputes every block during backward, after the forward returned:
the routing plan of that forward (entropies, gates, isolation masks) must still hold there, or the
recompute routes every token as high entropy with no isolation."""

import pytest
import torch

import alter
from alter.data.schema import QAExample
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama, make_tiny_tokenizer


def _batch():
    tok = make_tiny_tokenizer()
    return tok(["who is ana li and bo", "the red car was sold"], return_tensors="pt", padding=True).input_ids


def _wrapped(tok, seed=0):
    torch.manual_seed(seed)
    w = alter.wrap(make_tiny_llama(len(tok)), alter.AlterConfig(forget_domains=["a", "b"], router="token"), theta=1.0)
    with torch.no_grad():
        for layer in w.adapter_layers().values():
            for p in list(layer.lora_B) + list(layer.router):
                p.normal_(0, 0.5)
    ent = w.token_entropy(_batch())
    w.set_theta(float(ent[torch.isfinite(ent)].median()))      # half the tokens high, half low
    for p in w.parameters():
        p.requires_grad_(False)
    for layer in w.adapter_layers().values():
        for p in [layer.lora_A, *layer.lora_B, *layer.router]:
            p.requires_grad_(True)
    return w


def _enable(base):
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _disable(base):
    (getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable)()


def _is_checkpointing(base):
    return getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing


def _loss_and_grads(w, checkpointing, **forward):
    base = w.model
    if checkpointing:
        _enable(base)
    w.train()
    w.zero_grad(set_to_none=True)
    ids = _batch()
    with w.state.scope(b_grad_high_only=forward.pop("phase1", False)):
        out = w(ids, labels=ids, **forward)
        out.loss.backward()
    if checkpointing:
        _disable(base)
    grads = {n: p.grad.clone() for n, p in w.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


@pytest.mark.parametrize("case", ["inference_routing", "teacher_forced", "phase1_isolation"])
def test_same_loss_and_gradients_with_and_without_checkpointing(case):
    tok = make_tiny_tokenizer()
    w = _wrapped(tok)
    forward = {}
    if case != "inference_routing":
        forward["domain"] = torch.tensor([1, 0])
    if case == "phase1_isolation":
        forward["phase1"] = True
    plain_loss, plain = _loss_and_grads(w, False, **dict(forward))
    assert not _is_checkpointing(w.model)
    ckpt_loss, ckpt = _loss_and_grads(w, True, **dict(forward))
    assert any(n.endswith("lora_A") for n in plain) and len(plain) == len(ckpt)
    torch.testing.assert_close(ckpt_loss, plain_loss)
    for name, g in plain.items():
        torch.testing.assert_close(ckpt[name], g, rtol=1e-5, atol=1e-6, msg=name)


FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana") for n in ("Ana", "Ana Li")]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in ("Cy", "Di", "Ed", "Fa")]


def test_trainer_with_gradient_checkpointing_learns_the_same_adapter():
    tok = make_tiny_tokenizer()
    adapters = []
    for flag in (False, True):
        torch.manual_seed(0)
        cfg = alter.AlterConfig(batch_size=2, phase1_epochs=1, phase2_epochs=1, lr_phase1=1e-2, lr_phase2=1e-2,
                                phase2_min_steps=0, gradient_checkpointing=flag)
        model = AlterTrainer(make_tiny_llama(len(tok)), tok, cfg, FORGET, RETAIN, progress=False).train()
        assert not _is_checkpointing(model.model)         # switched off again after training
        adapters.append(model.adapter_state_dict())
    assert adapters[0].keys() == adapters[1].keys()
    moved = 0
    for key, value in adapters[0].items():
        torch.testing.assert_close(adapters[1][key], value, rtol=1e-4, atol=1e-6, msg=key)
        moved += int(value.abs().sum() > 0 and "lora_B" in key)
    assert moved > 0


def test_on_by_default_and_a_model_without_support_trains_without_it(caplog):
    from torch import nn

    from alter.train.activation_checkpointing import activation_checkpointing

    assert alter.AlterConfig().gradient_checkpointing          # the default (docs/method.md section 4, Cost)
    plain = nn.Linear(2, 2)
    with caplog.at_level("WARNING", logger="alter.train.activation_checkpointing"):
        with activation_checkpointing(plain, True):
            plain(torch.ones(1, 2)).sum().backward()
    assert "does not support it" in caplog.text and plain.weight.grad is not None


def test_checkpointing_the_user_switched_on_stays_on_after_training():
    from alter.train.activation_checkpointing import activation_checkpointing

    base = make_tiny_llama(64)
    _enable(base)
    with activation_checkpointing(base, True):
        assert _is_checkpointing(base)
    assert _is_checkpointing(base)                            # not switched off behind the user's back
    fresh = make_tiny_llama(64)
    with activation_checkpointing(fresh, True):
        assert _is_checkpointing(fresh)
    assert not _is_checkpointing(fresh)                       # ours: switched off again
