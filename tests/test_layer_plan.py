"""The inference plan path of ``AlterLinear`` (the per-layer work of a decoded token).

In a question-routed inference forward the first adapted layer routes and records the plan; every
later layer takes ``AlterLinear._forward_on_plan``: the plan's gates and a per-layer entry (plan key,
dtype, device, zero flags, a bound ``alter_linear_inference_fn``; for a single token the experts
folded for its gates, equal up to rounding). Inside one ``generate`` call the
entries are kept (``RoutingState.inference_entries``), so each layer reads its parameters once per
call instead of once per token. These tests hold that path to the general one."""

import pytest
import torch

import alter
import alter_kernels
from alter.modeling.layer import AlterLinear
from tests.helpers import make_tiny_llama


def _wrapped(tok, dtype=torch.float32, adapter_dtype="float32"):
    torch.manual_seed(0)
    model = make_tiny_llama(len(tok)).to(dtype)
    w = alter.wrap(model, alter.AlterConfig(forget_domains=["a", "b"], adapter_dtype=adapter_dtype), theta=1.0)
    with torch.no_grad():
        for layer in w.adapter_layers().values():
            for p in list(layer.lora_B) + list(layer.router):
                p.normal_(0, 0.5)
    w.eval()
    return w


def _general_only(monkeypatch):
    """Every layer routes for itself and runs the general path (the reference)."""
    monkeypatch.setattr(AlterLinear, "_forward_on_plan", lambda self, *a: None)
    monkeypatch.setattr(AlterLinear, "_shared_gates", lambda self, *a: None)


def _count_runs(monkeypatch):
    """Count ``alter_linear_inference_fn`` bindings and the launches of the runs it returns."""
    counts = {"bound": 0, "runs": 0, "folded": 0}
    real = alter_kernels.alter_linear_inference_fn

    def counted(*a, **k):
        counts["bound"] += 1
        run = real(*a, **k)

        def counted_run(x, gates):
            counts["runs"] += 1
            counts["folded"] += isinstance(gates, tuple)
            return run(x, gates)
        return counted_run

    monkeypatch.setattr(alter_kernels, "alter_linear_inference_fn", counted)
    return counts


@pytest.mark.parametrize("dtype,adapter_dtype", [(torch.float32, "float32"), (torch.bfloat16, "float32"),
                                                 (torch.bfloat16, "base")])
def test_the_plan_path_equals_routing_in_every_layer(tiny_tokenizer, monkeypatch, dtype, adapter_dtype):
    """Same logits as every layer routing and running the general path; with a bf16 base and fp32
    adapters the plan path steps aside (the adapter's dtype differs) and the general path runs."""
    w = _wrapped(tiny_tokenizer, dtype, adapter_dtype)
    enc = tiny_tokenizer(["some text here", "more"], return_tensors="pt", padding=True, padding_side="left")
    ent = w.token_entropy(enc.input_ids, enc.attention_mask)
    u = torch.tensor([[0.0, 2.0, -1e4], [0.0, -1e4, 1.0]])
    counts = _count_runs(monkeypatch)
    with torch.no_grad():
        planned = w(**enc, entropy=ent, router_logits=u).logits
        same_dtype = adapter_dtype == "base" or dtype == torch.float32
        assert counts["runs"] == (len(w.adapter_layers()) if same_dtype else 0)
        _general_only(monkeypatch)
        general = w(**enc, entropy=ent.clone(), router_logits=u).logits
    torch.testing.assert_close(planned, general, rtol=0, atol=0)


def test_a_layer_with_other_routing_parameters_routes_for_itself(tiny_tokenizer, monkeypatch):
    w = _wrapped(tiny_tokenizer)
    layers = list(w.adapter_layers().values())
    layers[3].top_k, layers[5].tau_high = 1, 0.5                     # their gates differ from the plan's
    enc = tiny_tokenizer(["some text here"], return_tensors="pt")
    ent = w.token_entropy(enc.input_ids, enc.attention_mask)
    u = torch.tensor([[0.0, 2.0, 1.5]])
    with torch.no_grad():
        planned = w(**enc, entropy=ent, router_logits=u).logits
        _general_only(monkeypatch)
        general = w(**enc, entropy=ent.clone(), router_logits=u).logits
    torch.testing.assert_close(planned, general, rtol=0, atol=0)


def test_generation_reads_each_layer_once_per_call_and_gives_the_general_paths_tokens(tiny_tokenizer,
                                                                                       monkeypatch):
    w = _wrapped(tiny_tokenizer)
    enc = tiny_tokenizer(["some text here"], return_tensors="pt")
    kw = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    forced = torch.tensor([[0.0, 3.0, -1e4]])                        # a forget-routed question
    monkeypatch.setattr(w, "question_router_logits", lambda *args, **kw: forced)
    counts = _count_runs(monkeypatch)
    fast = w.generate(enc.input_ids, attention_mask=enc.attention_mask, **kw)
    layers = len(w.adapter_layers())
    forwards = len(fast.scores)
    assert counts["runs"] == layers * forwards                       # the adapter ran in every layer and step
    assert forwards == 5 and counts["bound"] == layers               # kept entries: each layer binds once per call
    assert counts["folded"] == (layers - 1) * (forwards - 1)         # decoded tokens: later layers fold the experts
    assert w.state.inference_entries is None                         # nothing is kept after the call
    with monkeypatch.context() as m:
        _general_only(m)
        slow = w.generate(enc.input_ids, attention_mask=enc.attention_mask, **kw)
    assert torch.equal(fast.sequences, slow.sequences)
    for a, b in zip(fast.scores, slow.scores):                        # one sequence: the experts folded per token
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_parameter_change_between_generate_calls_is_seen(tiny_tokenizer, monkeypatch):
    w = _wrapped(tiny_tokenizer)
    enc = tiny_tokenizer(["some text here"], return_tensors="pt")
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    monkeypatch.setattr(w, "question_router_logits", lambda *args, **kw: torch.tensor([[0.0, 3.0, -1e4]]))
    before = w.generate(enc.input_ids, **kw)
    with torch.no_grad():
        for layer in w.adapter_layers().values():
            layer.lora_B[1].mul_(3.0)
    after = w.generate(enc.input_ids, **kw)
    with monkeypatch.context() as m:
        _general_only(m)
        reference = w.generate(enc.input_ids, **kw)
    assert not torch.allclose(before.scores[0], after.scores[0])
    for a, b in zip(after.scores, reference.scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_training_forwards_do_not_take_the_plan_path(tiny_tokenizer, monkeypatch):
    w = _wrapped(tiny_tokenizer)
    w.train()
    enc = tiny_tokenizer(["some text here"], return_tensors="pt")
    ent = w.token_entropy(enc.input_ids, enc.attention_mask)
    taken = []
    real = AlterLinear._forward_on_plan
    monkeypatch.setattr(AlterLinear, "_forward_on_plan",
                        lambda self, x, state: taken.append(r := real(self, x, state)) or r)
    out = w(**enc, entropy=ent, router_logits=torch.tensor([[0.0, 2.0, -1e4]]))
    out.logits.sum().backward()
    assert taken and all(r is None for r in taken)                   # grad enabled: the general path
    assert next(iter(w.adapter_layers().values())).lora_B[1].grad is not None
