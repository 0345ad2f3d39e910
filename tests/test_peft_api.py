"""The PEFT-shaped API on a tiny Llama: save_pretrained / from_pretrained round trips, unload and
get_base_model bit for bit, print_trainable_parameters, AlterConfig files, PEFT interop, bad input,
the Hub (offline error path, a mocked push) and a transformers.Trainer loop. No network."""

import json
import re
import shutil

import pytest
import torch

import alter
from alter import AdapterUnloadedError, AlterConfig, AlterModel
from tests.helpers import make_tiny_llama

FILES = ("adapter_config.json", "adapter_model.safetensors")


def _base(tok, seed=0, **kw):
    torch.manual_seed(seed)
    return make_tiny_llama(len(tok), **kw)


def _nonzero_adapters(model):
    """Move every adapter tensor off its initial value, so a lost adapter would show in the logits."""
    torch.manual_seed(1)
    with torch.no_grad():
        for key, p in model.adapter_state_dict().items():
            if not key.startswith("question_router."):
                p.add_(0.05 * torch.randn_like(p))
    return model


def _wrapped(tok, **cfg):
    return _nonzero_adapters(alter.wrap(_base(tok), AlterConfig(r=4, forget_domains=["a", "b"], **cfg), theta=0.75))


def _enc(tok):
    return tok(["some text here", "more"], return_tensors="pt", padding=True)


def _logits(model, enc):
    with torch.no_grad():
        return model(**enc).logits


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _folder_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# ---------------------------------------------------------------------- save / load round trips
def test_save_pretrained_then_from_pretrained_gives_the_same_logits_and_generations(tiny_tokenizer, tmp_path):
    model = _wrapped(tiny_tokenizer)
    enc = _enc(tiny_tokenizer)
    expected = _logits(model, enc)
    assert model.save_pretrained(tmp_path / "ad") == tmp_path / "ad"
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == sorted(FILES)       # safetensors + JSON only
    meta = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert meta["format"] == "alter-adapter" and meta["domains"] == ["retain", "a", "b"] and meta["theta"] == 0.75
    restored = AlterModel.from_pretrained(_base(tiny_tokenizer), tmp_path / "ad")   # the same base weights
    assert torch.equal(_logits(restored, enc), expected)
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(restored.generate(enc.input_ids[:1], **kw), model.generate(enc.input_ids[:1], **kw))
    assert restored.theta == 0.75 and restored.alter_config == model.alter_config


def test_the_old_names_are_aliases(tiny_tokenizer, tmp_path):
    model = _wrapped(tiny_tokenizer)
    model.save_adapter(tmp_path / "old")
    model.save_pretrained(tmp_path / "new")
    assert _folder_bytes(tmp_path / "old") == _folder_bytes(tmp_path / "new")
    restored = alter.load_adapter(_base(tiny_tokenizer), str(tmp_path / "old"))
    assert isinstance(restored, AlterModel)
    assert torch.equal(_logits(restored, _enc(tiny_tokenizer)), _logits(model, _enc(tiny_tokenizer)))


# ---------------------------------------------------------------------- the base model back
def test_unload_gives_back_the_original_model_bit_for_bit(tiny_tokenizer):
    base = _base(tiny_tokenizer)
    base.model.embed_tokens.weight.requires_grad_(False)          # a flag of the user's own, kept
    enc = _enc(tiny_tokenizer)
    before, reference = _snapshot(base), _logits(base, enc)
    linears = {n: m for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
    flags = {n: p.requires_grad for n, p in base.named_parameters()}
    model = _nonzero_adapters(alter.wrap(base, AlterConfig(r=4), theta=0.5))
    assert not torch.equal(_logits(model, enc), reference)
    back = model.unload()
    assert back is base
    assert {n: m for n, m in back.named_modules() if isinstance(m, torch.nn.Linear)} == linears   # same objects
    assert all(type(m) is torch.nn.Linear for m in linears.values())
    after = back.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert {n: p.requires_grad for n, p in back.named_parameters()} == flags
    assert torch.equal(_logits(back, enc), reference)


def test_an_unloaded_alter_model_says_so(tiny_tokenizer, tmp_path):
    model = alter.wrap(_base(tiny_tokenizer), AlterConfig(r=4), theta=0.5)
    base = model.unload()
    enc = _enc(tiny_tokenizer)
    for use in (lambda: model(**enc), lambda: model.generate(enc.input_ids, max_new_tokens=2),
                lambda: model.save_pretrained(tmp_path / "x"), model.unload, model.adapter_state_dict):
        with pytest.raises(AdapterUnloadedError, match="unloaded"):
            use()
    assert model.get_base_model() is base
    assert not (tmp_path / "x").exists()
    alter.wrap(base, AlterConfig(r=4))                              # the base can be wrapped again


def test_get_base_model_is_the_original_model_and_leaves_the_wrapper_working(tiny_tokenizer):
    base = _base(tiny_tokenizer)
    enc = _enc(tiny_tokenizer)
    before, reference = _snapshot(base), _logits(base, enc)
    q_proj = base.model.layers[0].self_attn.q_proj
    model = _nonzero_adapters(alter.wrap(base, AlterConfig(r=4), theta=0.5))
    adapted = _logits(model, enc)
    view = model.get_base_model()
    assert type(view) is type(base) and view.model.layers[0].self_attn.q_proj is q_proj
    assert not any(isinstance(m, alter.AlterLinear) for m in view.modules())
    state = view.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in before)
    assert torch.equal(_logits(view, enc), reference)
    assert torch.equal(_logits(model, enc), adapted)                # the wrapper is untouched
    assert isinstance(base.model.layers[0].self_attn.q_proj, alter.AlterLinear)


def test_get_base_model_saves_a_clean_base_checkpoint(tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    base = _base(tiny_tokenizer)
    enc = _enc(tiny_tokenizer)
    reference = _logits(base, enc)
    model = _nonzero_adapters(alter.wrap(base, AlterConfig(r=4), theta=0.5))
    model.get_base_model().save_pretrained(str(tmp_path / "base"))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"))
    assert not any("lora_" in k or "base_layer" in k for k in reloaded.state_dict())
    assert torch.equal(_logits(reloaded, enc), reference)


def test_print_trainable_parameters_prints_peft_s_line(tiny_tokenizer, capsys):
    model = alter.wrap(_base(tiny_tokenizer), AlterConfig(r=4), theta=0.5)
    adapter = sum(p.numel() for k, p in model.adapter_state_dict().items() if not k.startswith("question_router."))
    total = sum(p.numel() for p in model.parameters())
    assert model.get_nb_trainable_parameters() == (adapter, total)
    model.print_trainable_parameters()
    line = capsys.readouterr().out.strip()
    assert line == f"trainable params: {adapter:,d} || all params: {total:,d} || trainable%: {100 * adapter / total:.4f}"
    model.set_trainable(shared=False, experts=[1], routers=False)
    model.print_trainable_parameters()
    assert re.fullmatch(r"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}",
                        capsys.readouterr().out.strip())


# ---------------------------------------------------------------------- AlterConfig files
def test_alter_config_save_and_from_pretrained(tiny_tokenizer, tmp_path):
    cfg = AlterConfig(r=4, alpha=8.0, forget_domains=["x", "y"], target_modules=["q_proj", "v_proj"], theta=0.3)
    path = cfg.save_pretrained(tmp_path / "cfg")
    assert path.name == "alter_config.json"
    assert AlterConfig.from_pretrained(tmp_path / "cfg") == cfg
    model = _wrapped(tiny_tokenizer)
    model.save_pretrained(tmp_path / "ad")
    saved = _folder_bytes(tmp_path / "ad")
    assert AlterConfig.from_pretrained(tmp_path / "ad") == model.alter_config     # read from an adapter folder
    cfg.save_pretrained(tmp_path / "ad")                             # beside an adapter: never over it
    assert all((tmp_path / "ad" / k).read_bytes() == v for k, v in saved.items())
    with pytest.raises(FileNotFoundError, match="alter_config.json"):
        AlterConfig.from_pretrained(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "alter_config.json").write_text('{"format": "alter-config", "config": {"alphaa": 4}}')
    with pytest.raises(ValueError, match="did you mean 'alpha'"):
        AlterConfig.from_pretrained(tmp_path / "bad")


# ---------------------------------------------------------------------- PEFT interop
def _peft_folder(tok, directory):
    from peft import LoraConfig, get_peft_model

    get_peft_model(_base(tok), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(str(directory))
    return directory


def test_peft_refuses_an_alter_adapter_with_a_clear_message(tiny_tokenizer, tmp_path):
    from peft import PeftConfig, PeftModel

    _wrapped(tiny_tokenizer).save_pretrained(tmp_path / "ad")
    with pytest.raises(Exception, match="not a PEFT adapter: an ALTER adapter") as info:
        PeftModel.from_pretrained(_base(tiny_tokenizer), str(tmp_path / "ad"))
    assert "AlterModel.from_pretrained" in str(info.value)
    with pytest.raises(Exception, match="not a PEFT adapter"):
        PeftConfig.from_pretrained(str(tmp_path / "ad"))


def test_alter_refuses_a_peft_adapter_naming_what_it_found(tiny_tokenizer, tmp_path):
    folder = _peft_folder(tiny_tokenizer, tmp_path / "lora")
    base = _base(tiny_tokenizer)
    with pytest.raises(ValueError, match=r"PEFT adapter \(peft_type 'LORA'.*peft\.PeftModel\.from_pretrained"):
        AlterModel.from_pretrained(base, folder)
    with pytest.raises(ValueError, match="PEFT adapter"):
        AlterConfig.from_pretrained(folder)
    assert not any(isinstance(m, alter.AlterLinear) for m in base.modules())


# ---------------------------------------------------------------------- bad input
def test_missing_folders_and_files_are_named(tiny_tokenizer, tmp_path):
    base = _base(tiny_tokenizer)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        AlterModel.from_pretrained(base, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json is missing"):
        AlterModel.from_pretrained(base, tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="a file, not an adapter directory"):
        AlterModel.from_pretrained(base, tmp_path / "file")
    _wrapped(tiny_tokenizer).save_pretrained(tmp_path / "ad")
    (tmp_path / "ad" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors is missing"):
        AlterModel.from_pretrained(base, tmp_path / "ad")
    assert not any(isinstance(m, alter.AlterLinear) for m in base.modules())


def test_damaged_files_are_named_and_the_base_model_is_left_as_it_was(tiny_tokenizer, tmp_path):
    _wrapped(tiny_tokenizer).save_pretrained(tmp_path / "good")
    base = _base(tiny_tokenizer)
    flags = {n: p.requires_grad for n, p in base.named_parameters()}
    for name, damage in (("adapter_config.json", b"{not json"), ("adapter_model.safetensors", b"\x00" * 64)):
        shutil.copytree(tmp_path / "good", tmp_path / name)
        (tmp_path / name / name).write_bytes(damage)
        with pytest.raises(ValueError, match=re.escape(name)):
            AlterModel.from_pretrained(base, tmp_path / name)
    assert not any(isinstance(m, alter.AlterLinear) for m in base.modules())
    assert {n: p.requires_grad for n, p in base.named_parameters()} == flags


def test_a_wrong_base_model_is_refused_and_nothing_is_changed(tiny_tokenizer, tmp_path):
    _wrapped(tiny_tokenizer).save_pretrained(tmp_path / "ad")
    saved = _folder_bytes(tmp_path / "ad")
    bigger = _base(tiny_tokenizer, hidden=64, intermediate=96)
    before = _snapshot(bigger)
    flags = {n: p.requires_grad for n, p in bigger.named_parameters()}
    with pytest.raises(ValueError, match="shape .* another base model"):
        AlterModel.from_pretrained(bigger, tmp_path / "ad")
    assert not any(isinstance(m, alter.AlterLinear) for m in bigger.modules())          # unwrapped again
    assert {n: p.requires_grad for n, p in bigger.named_parameters()} == flags
    assert all(torch.equal(bigger.state_dict()[k], v) for k, v in before.items())
    assert _folder_bytes(tmp_path / "ad") == saved
    deeper = _base(tiny_tokenizer, layers=3)
    with pytest.raises(ValueError, match="targets layers"):
        AlterModel.from_pretrained(deeper, tmp_path / "ad")
    assert not any(isinstance(m, alter.AlterLinear) for m in deeper.modules())
    alter.wrap(bigger, AlterConfig(r=4))                                                 # wrappable again


def test_from_pretrained_refuses_a_model_that_has_adapters_already(tiny_tokenizer, tmp_path):
    model = _wrapped(tiny_tokenizer)
    model.save_pretrained(tmp_path / "ad")
    enc = _enc(tiny_tokenizer)
    expected = _logits(model, enc)
    for target in (model, model.model):
        with pytest.raises(ValueError, match="has ALTER adapters already"):
            AlterModel.from_pretrained(target, tmp_path / "ad")
    assert torch.equal(_logits(model, enc), expected)                # the existing wrapper still works


# ---------------------------------------------------------------------- the Hub (no network)
def test_a_hub_id_offline_is_a_clear_error_naming_it(tiny_tokenizer, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    base = _base(tiny_tokenizer)
    with pytest.raises(FileNotFoundError, match=r"'someone/no-such-alter-adapter'.*offline"):
        AlterModel.from_pretrained(base, "someone/no-such-alter-adapter", cache_dir=tmp_path / "hub")
    assert not any(isinstance(m, alter.AlterLinear) for m in base.modules())
    assert not any((tmp_path / "hub").rglob("*.safetensors"))


def test_push_to_hub_uploads_a_save_pretrained_folder(tiny_tokenizer, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kw):
            calls["create_repo"] = (repo_id, kw)

        def upload_folder(self, *, repo_id, folder_path, **kw):
            calls["upload_folder"] = (repo_id, kw)
            shutil.copytree(folder_path, tmp_path / "uploaded")
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = _wrapped(tiny_tokenizer)
    assert model.push_to_hub("me/my-adapter", token="tok", private=True) == "commit-info"
    assert calls["token"] == "tok" and calls["create_repo"][0] == "me/my-adapter"
    assert calls["create_repo"][1]["private"] is True and calls["upload_folder"][0] == "me/my-adapter"
    assert sorted(p.name for p in (tmp_path / "uploaded").iterdir()) == sorted(FILES + ("README.md",))
    assert "alter.AlterModel.from_pretrained" in (tmp_path / "uploaded" / "README.md").read_text()
    restored = AlterModel.from_pretrained(_base(tiny_tokenizer), tmp_path / "uploaded")
    assert torch.equal(_logits(restored, _enc(tiny_tokenizer)), _logits(model, _enc(tiny_tokenizer)))


# ---------------------------------------------------------------------- a Hugging Face Trainer loop
def _lm_rows(tok, texts, length=24):
    rows = []
    for text in texts:
        enc = tok(text, padding="max_length", max_length=length)
        ids, mask = torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"])
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return rows


def test_two_transformers_trainer_steps_change_only_adapter_parameters(tiny_tokenizer, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = alter.wrap(_base(tiny_tokenizer), AlterConfig(r=4), theta=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapter = {n for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=2, per_device_train_batch_size=2,
                             learning_rate=1e-2, save_strategy="no", report_to=[], use_cpu=True,
                             logging_strategy="no", disable_tqdm=True, remove_unused_columns=False)
    rows = _lm_rows(tiny_tokenizer, ["Ana paints blue owls.", "Bo sells red cars.", "Cy writes poems.", "Di bakes."])
    Trainer(model=model, args=args, train_dataset=rows).train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= adapter
    assert all(".lora_" in n or ".router." in n for n in adapter)
