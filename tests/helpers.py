"""Builders for tiny in-process models and tokenizers used across the test-suite."""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer (printable ASCII + specials) with a ChatML chat template."""
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {tok: i for i, tok in enumerate(SPECIAL + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>", "</s>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_word_tokenizer(words) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` (split at whitespace and punctuation, as a BPE pre-tokenizer
    splits words) with the ChatML chat template: what case restoration needs, whole words as tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + ["user", "assistant", "system", "?", ".", ","] + list(words))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>", "</s>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_llama(vocab_size: int = 128, hidden: int = 32, layers: int = 2, heads: int = 4,
                    intermediate: int = 64, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A random-initialised 2-layer Llama, small enough for a forward in milliseconds."""
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                      max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=0, bos_token_id=2,
                      eos_token_id=5)
    model = LlamaForCausalLM(cfg).to(dtype)
    model.eval()
    return model


def save_tiny_model(directory) -> str:
    """A tiny random Llama and its tokenizer saved to ``directory`` (seed 0): a model path the CLIs load."""
    import torch

    torch.manual_seed(0)
    tok = make_tiny_tokenizer()
    make_tiny_llama(len(tok)).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


def trained_per_setting(tokenizer, forget, retain, name: str, values) -> dict:
    """``{value: model}``: a tiny Llama trained by ALTER for one phase II epoch (seed 0) with the config
    field ``name`` set to each of ``values``, everything else alike."""
    import alter
    from alter.train import AlterTrainer

    out = {}
    for value in values:
        torch.manual_seed(0)
        cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, **{name: value})
        out[value] = AlterTrainer(make_tiny_llama(len(tokenizer)), tokenizer, cfg, forget, retain,
                                  progress=False).train()
    return out


def trained_tiny_alter(tokenizer, forget, retain, expert_scale: float):
    """A tiny Llama trained by ALTER for one phase II epoch (seed 0), then every expert's ``B`` set to random
    values times ``expert_scale`` (seed 1), so that every expert changes the logits and a wrong routing shows
    in the numbers; in eval mode."""
    import alter
    from alter.train import AlterTrainer

    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase1_epochs=0, phase2_epochs=1, phase2_min_steps=0, lr_phase2=1e-2)
    model = AlterTrainer(make_tiny_llama(len(tokenizer)), tokenizer, cfg, forget, retain, progress=False).train()
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for layer in model.adapter_layers().values():
            for b in layer.lora_B:
                b.copy_(torch.randn(b.shape, generator=g) * expert_scale)
    model.eval()
    return model
