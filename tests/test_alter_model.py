"""alter.wrap on a tiny Llama: targets, entropy plumbing, generation with and without cache, save/load."""

import json

import pytest
import torch

import alter
import alter_kernels
from alter.modeling.entropy import shift_entropy
from alter.config import AlterConfig
from tests.helpers import make_tiny_llama, make_tiny_tokenizer


def _wrapped(tiny_tokenizer, forget_domains=("a", "b"), theta=1.0, source="adapted", seed=0):
    torch.manual_seed(seed)
    model = make_tiny_llama(len(tiny_tokenizer))
    cfg = alter.AlterConfig(forget_domains=list(forget_domains), entropy_source=source)
    w = alter.wrap(model, cfg, theta=theta)
    with torch.no_grad():
        for layer in w.adapter_layers().values():
            for p in list(layer.lora_B) + list(layer.router):
                p.normal_(0, 0.5)
    return w


def _ids(tok, *texts):
    return tok(list(texts), return_tensors="pt", padding=True, padding_side="left")


def test_all_linear_targets_every_block_projection_but_not_the_head(tiny_tokenizer):
    w = _wrapped(tiny_tokenizer)
    names = w.target_names
    assert len(names) == 2 * 7
    assert all(n.split(".")[-1] in {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
               for n in names)
    assert all(not p.requires_grad for n, p in w.named_parameters() if "lora_" not in n and "router" not in n)


def test_target_modules_by_suffix_and_regex(tiny_tokenizer):
    model = make_tiny_llama(len(tiny_tokenizer))
    w = alter.wrap(model, alter.AlterConfig(target_modules=["q_proj", "v_proj"]), theta=1.0)
    assert {n.split(".")[-1] for n in w.target_names} == {"q_proj", "v_proj"}
    model = make_tiny_llama(len(tiny_tokenizer))
    w = alter.wrap(model, alter.AlterConfig(target_modules=r".*layers\.1\.mlp\..*"), theta=1.0)
    assert len(w.target_names) == 3
    with pytest.raises(ValueError, match="matched no linear layer"):
        alter.wrap(make_tiny_llama(len(tiny_tokenizer)), alter.AlterConfig(target_modules=["nope_proj"]))
    with pytest.raises(ValueError, match="already has ALTER adapters"):
        alter.wrap(w.model, alter.AlterConfig())


def test_fresh_adapter_is_the_base_model_and_disable_adapters_restores_it(tiny_tokenizer):
    torch.manual_seed(0)
    model = make_tiny_llama(len(tiny_tokenizer))
    enc = _ids(tiny_tokenizer, "hello there", "hi")
    with torch.no_grad():
        expected = model(**enc).logits
        w = alter.wrap(model, alter.AlterConfig(), theta=1.0)
        assert torch.equal(w(**enc).logits, expected)
    w2 = _wrapped(tiny_tokenizer)
    with torch.no_grad():
        adapted = w2(**enc).logits
        with w2.disable_adapters():
            base = w2(**enc).logits
    assert not torch.allclose(adapted, base)


def test_forward_returns_the_usual_output_with_loss(tiny_tokenizer):
    w = _wrapped(tiny_tokenizer)
    enc = _ids(tiny_tokenizer, "abc def")
    out = w(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=enc.input_ids)
    assert out.logits.shape == (1, enc.input_ids.shape[1], len(tiny_tokenizer))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert w.config is w.model.config                       # attribute delegation to the HF model


def test_token_entropy_shifts_and_marks_first_tokens_high(tiny_tokenizer):
    w = _wrapped(tiny_tokenizer)
    enc = _ids(tiny_tokenizer, "hello world", "hey")
    ent = w.token_entropy(enc.input_ids, enc.attention_mask)
    per_pos = w.position_entropy(enc.input_ids, enc.attention_mask)
    first_real = enc.attention_mask.argmax(1)
    for row in range(2):
        assert torch.isinf(ent[row, first_real[row]])
        t = first_real[row] + 2
        torch.testing.assert_close(ent[row, t], per_pos[row, t - 1])
    # the chunked (hidden-state) path equals the full-logits path
    full = w.position_entropy(enc.input_ids, enc.attention_mask,
                              logits=w.base_forward(enc.input_ids, enc.attention_mask).logits)
    mask = enc.attention_mask.bool()
    torch.testing.assert_close(per_pos[mask], full[mask], rtol=1e-4, atol=1e-4)
    assert torch.isinf(shift_entropy(torch.zeros(1, 3))[0, 0])


@pytest.mark.parametrize("theta", [0.0, 4.0])          # every token high (mixed experts) / low (top-1)
@pytest.mark.parametrize("source", ["adapted", "base"])
def test_greedy_generation_is_identical_with_and_without_kv_cache(tiny_tokenizer, source, theta):
    w = _wrapped(tiny_tokenizer, source=source, theta=theta)
    enc = _ids(tiny_tokenizer, "tell me about x", "hi")
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    cached = w.generate(enc.input_ids, attention_mask=enc.attention_mask, use_cache=True, **kw)
    uncached = w.generate(enc.input_ids, attention_mask=enc.attention_mask, use_cache=False, **kw)
    assert torch.equal(cached, uncached)
    assert cached.shape[1] > enc.input_ids.shape[1]


def test_generation_routes_new_tokens_by_the_entropy_of_the_logits_that_produced_them(tiny_tokenizer):
    w = _wrapped(tiny_tokenizer, theta=4.0)
    enc = _ids(tiny_tokenizer, "tell me")
    seen = []
    layer = next(iter(w.adapter_layers().values()))
    handle = layer.register_forward_pre_hook(
        lambda m, a: seen.append(w.state.entropy.clone()) if w.state.enabled else None)
    out = w.generate(enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=4, do_sample=False,
                     pad_token_id=0, use_cache=True)
    handle.remove()
    P = enc.input_ids.shape[1]
    assert seen[0].shape == (1, P) and torch.isinf(seen[0][0, 0])
    assert all(s.shape == (1, 1) for s in seen[1:])
    # step k's entropy is S_q of the adapted logits at the previous position
    with torch.no_grad():
        logits = w(out[:, :-1], attention_mask=torch.ones_like(out[:, :-1])).logits
    for k, s in enumerate(seen[1:], start=1):
        expected = alter_kernels.tsallis_entropy(logits[0, P + k - 2], w.alter_config.q)
        torch.testing.assert_close(s[0, 0], expected, rtol=1e-4, atol=1e-4)


def test_generate_rejects_beam_search_and_needs_theta(tiny_tokenizer):
    w = _wrapped(tiny_tokenizer)
    enc = _ids(tiny_tokenizer, "x")
    with pytest.raises(ValueError, match="num_beams=1"):
        w.generate(enc.input_ids, num_beams=2, max_new_tokens=2)
    fresh = alter.wrap(make_tiny_llama(len(tiny_tokenizer)), alter.AlterConfig())
    with pytest.raises(ValueError, match="threshold"):
        fresh(enc.input_ids)


def test_save_and_load_adapter_restore_the_model_exactly(tiny_tokenizer, tmp_path):
    w = _wrapped(tiny_tokenizer, theta=0.75)
    enc = _ids(tiny_tokenizer, "some text here", "more")
    with torch.no_grad():
        expected = w(**enc).logits
    w.save_adapter(tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    for key in ("r", "alpha", "target_modules", "q", "theta", "tau_high", "domains", "base_model"):
        assert key in meta
    assert meta["theta"] == 0.75 and meta["domains"] == ["retain", "a", "b"]
    torch.manual_seed(0)
    restored = alter.load_adapter(make_tiny_llama(len(tiny_tokenizer)), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(restored(**enc).logits, expected)
    assert restored.theta == 0.75


def test_load_adapter_errors_are_clear(tiny_tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        alter.load_adapter(make_tiny_llama(len(tiny_tokenizer)), tmp_path)
    w = _wrapped(tiny_tokenizer)
    w.save_adapter(tmp_path / "a")
    bigger = make_tiny_llama(len(tiny_tokenizer), hidden=64, intermediate=96)
    with pytest.raises(ValueError, match="shape"):
        alter.load_adapter(bigger, tmp_path / "a")


def test_saving_over_an_adapter_is_atomic(tiny_tokenizer, tmp_path, monkeypatch):
    w = _wrapped(tiny_tokenizer)
    w.save_adapter(tmp_path / "a")
    before = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()
    import alter.io as aio

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(aio, "atomic_write_json", broken)
    with torch.no_grad():
        next(iter(w.adapter_layers().values())).lora_A.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        w.save_adapter(tmp_path / "a")
    assert (tmp_path / "a" / "adapter_model.safetensors").read_bytes() == before
    assert (tmp_path / "a" / "adapter_config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_add_and_remove_forget_domains(tiny_tokenizer):
    w = _wrapped(tiny_tokenizer, forget_domains=("a",))
    enc = _ids(tiny_tokenizer, "abc")
    with torch.no_grad():
        before = w(**enc).logits
    idx = w.add_forget_domain("c")
    assert idx == 2 and w.domains == ["retain", "a", "c"]
    w.remove_forget_domain("c")
    with torch.no_grad():
        assert torch.equal(w(**enc).logits, before)
    with pytest.raises(ValueError, match="retain domain"):
        w.remove_forget_domain("retain")
    with pytest.raises(ValueError, match="unknown domain"):
        w.remove_forget_domain("zzz")


def test_nan_logits_at_a_real_token_raise_an_error_naming_the_position():
    """NaN in the base model is an error naming (row, token), not a silent "low entropy" route."""
    torch.manual_seed(0)
    tok = make_tiny_tokenizer()
    model = alter.wrap(make_tiny_llama(len(tok)), AlterConfig(r=4), theta=0.5)
    ids = torch.randint(3, len(tok), (2, 6))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0                                  # padding may be NaN without complaint

    def poison(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[0, 5] = float("nan")                  # a padded position: ignored
        if poison.real:
            hidden[1, 3] = float("nan")              # a real token: named in the error
        return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden

    poison.real = False
    handle = model.model.model.norm.register_forward_hook(poison)
    try:
        model(ids, attention_mask=mask)              # only padding is NaN: runs
        poison.real = True
        with pytest.raises(ValueError, match=r"NaN at position \(1, 3\)"):
            model(ids, attention_mask=mask)
    finally:
        handle.remove()


def test_an_adapter_saved_with_the_removed_tau_low_still_loads(tiny_tokenizer, tmp_path):
    w = _wrapped(tiny_tokenizer, theta=0.75)
    w.save_adapter(tmp_path / "adapter")
    path = tmp_path / "adapter" / "adapter_config.json"
    meta = json.loads(path.read_text())
    meta["tau_low"] = meta["config"]["tau_low"] = 0.5        # what an older version wrote
    path.write_text(json.dumps(meta))
    restored = alter.load_adapter(make_tiny_llama(len(tiny_tokenizer)), tmp_path / "adapter")
    assert restored.theta == 0.75 and not hasattr(restored.alter_config, "tau_low")


def test_the_chunked_entropy_path_is_taken_only_for_known_plain_heads(tiny_tokenizer, monkeypatch):
    """Llama: entropy from hidden states and the head, chunk by chunk, equal to the full-logits path.
    An unknown or scaled head (Granite's logits_scaling) takes the logits the model returns."""
    w = _wrapped(tiny_tokenizer)
    enc = _ids(tiny_tokenizer, "some text here", "more")
    assert w._plain_lm_head() is w.model.lm_head
    chunked = w.position_entropy(enc.input_ids, enc.attention_mask)
    logits = w.base_forward(enc.input_ids, enc.attention_mask).logits
    torch.testing.assert_close(chunked, alter_kernels.tsallis_entropy(logits, w.alter_config.q), rtol=1e-5, atol=1e-5)
    for model_type, extra in (("granite", {"logits_scaling": 8.0}), ("my_new_arch", {})):
        monkeypatch.setattr(w.model.config, "model_type", model_type, raising=False)
        for k, v in extra.items():
            monkeypatch.setattr(w.model.config, k, v, raising=False)
        assert w._plain_lm_head() is None
        calls = []
        monkeypatch.setattr(alter_kernels, "linear_tsallis_entropy", lambda *a, **k: calls.append(1))
        w.position_entropy(enc.input_ids, enc.attention_mask)
        assert not calls


def test_a_bfloat16_base_keeps_float32_adapters_and_trains(tiny_tokenizer):
    """adapter_dtype="float32" (default): on a bf16 base the adapters, their gradients and the adapter
    delta are fp32; the layer's output is in the base dtype."""
    torch.manual_seed(0)
    base = make_tiny_llama(len(tiny_tokenizer)).to(torch.bfloat16)
    w = alter.wrap(base, alter.AlterConfig(forget_domains=["a"]), theta=1.0)
    layer = next(iter(w.adapter_layers().values()))
    assert layer.lora_A.dtype == torch.float32 and layer.lora_B[1].dtype == torch.float32
    assert layer.base_layer.weight.dtype == torch.bfloat16
    with torch.no_grad():
        for lay in w.adapter_layers().values():
            lay.lora_B[1].normal_(0, 0.1)
    for lay in w.adapter_layers().values():
        lay.lora_B[1].requires_grad_(True)
    enc = _ids(tiny_tokenizer, "some text here", "more")
    out = w(**enc, labels=enc.input_ids, domain=torch.tensor([1, 1]))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    assert layer.lora_B[1].grad is not None and layer.lora_B[1].grad.dtype == torch.float32
    same = alter.wrap(make_tiny_llama(len(tiny_tokenizer)).to(torch.bfloat16),
                      alter.AlterConfig(forget_domains=["a"], adapter_dtype="base"), theta=1.0)
    assert next(iter(same.adapter_layers().values())).lora_A.dtype == torch.bfloat16


def test_question_routed_forward_routes_once_and_shares_the_plan(tiny_tokenizer, monkeypatch):
    """With per-question router logits every layer's gates are the same: the first layer routes, the
    others reuse its plan; outputs equal routing in every layer."""
    from alter.modeling.layer import AlterLinear

    w = _wrapped(tiny_tokenizer)
    enc = _ids(tiny_tokenizer, "some text here", "more")
    ent = w.token_entropy(enc.input_ids, enc.attention_mask)
    u = torch.tensor([[0.0, 2.0, -1e4], [0.0, -1e4, -1e4]])
    calls = []
    real_route = alter_kernels.route
    monkeypatch.setattr(alter_kernels, "route", lambda *a, **k: calls.append(1) or real_route(*a, **k))
    with torch.no_grad():
        shared = w(**enc, entropy=ent, router_logits=u).logits
        assert len(calls) == 1
        w(**enc, entropy=ent.clone(), router_logits=u)      # a new forward (new tensors): a new plan
        assert len(calls) == 2
        monkeypatch.setattr(AlterLinear, "_shared_gates", lambda self, *a: None)
        monkeypatch.setattr(AlterLinear, "_forward_on_plan", lambda self, *a: None)
        per_layer = w(**enc, entropy=ent, router_logits=u).logits
    assert len(calls) == 2 + len(w.adapter_layers())
    torch.testing.assert_close(shared, per_layer)


def test_at_inference_a_layer_whose_used_experts_are_zero_skips_its_adapter(tiny_tokenizer, monkeypatch):
    """A retain-routed question on an untrained (zero) retain expert: the adapter adds exactly nothing,
    so the layer runs its base layer alone; the output is the same as computing the zero delta."""
    from alter.modeling.layer import AlterLinear

    w = _wrapped(tiny_tokenizer)
    with torch.no_grad():
        for layer in w.adapter_layers().values():
            layer.lora_B[0].zero_()                          # B_R untrained (phase I off)
    enc = _ids(tiny_tokenizer, "some text here", "more")
    ent = w.token_entropy(enc.input_ids, enc.attention_mask)
    retain_only = torch.tensor([[0.0, -1e4, -1e4], [0.0, -1e4, -1e4]])
    forget = torch.tensor([[0.0, 2.0, -1e4], [0.0, -1e4, -1e4]])
    adapter_calls = []
    real = alter_kernels.alter_linear_inference_fn                 # the adapter's no-grad entry

    def counted(*a, **k):
        run = real(*a, **k)
        return lambda *x: adapter_calls.append(1) or run(*x)

    monkeypatch.setattr(alter_kernels, "alter_linear_inference_fn", counted)
    with torch.no_grad():
        skipped = w(**enc, entropy=ent, router_logits=retain_only).logits
        assert adapter_calls == []
        with w.disable_adapters():
            base = w(**enc).logits
        torch.testing.assert_close(skipped, base)
        w(**enc, entropy=ent, router_logits=forget)           # a forget expert in use: the adapter runs
        assert len(adapter_calls) == len(w.adapter_layers())
        monkeypatch.setattr(AlterLinear, "is_inert", lambda self, used, zero=None: False)
        computed = w(**enc, entropy=ent.clone(), router_logits=retain_only).logits
    torch.testing.assert_close(skipped, computed)
