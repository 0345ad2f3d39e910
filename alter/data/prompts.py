"""Turning a question/answer pair into token ids, the same way for training, scoring and generation.

- With a chat template, the prompt is ``apply_chat_template([system?, user: question],
  add_generation_prompt=True)`` and the answer follows as the assistant's turn, closed by the
  tokenizer's EOS token. Without one, ``"Question: {q}\\nAnswer:"`` and ``" {answer}"``.
- The prompt and the answer are tokenised separately and concatenated, so the prompt ids used
  to generate are exactly the prefix the model was trained and scored on.
- Labels are -100 on the prompt: the loss (and every per-answer probability) covers the answer
  tokens only, EOS included.
- An empty question means raw text (a corpus passage): every token is a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

IGNORE_INDEX = -100


@dataclass
class EncodedExample:
    input_ids: List[int]
    labels: List[int]
    prompt_length: int


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(tokenizer, question: str, system_prompt: Optional[str] = None) -> str:
    """The text the model sees before its answer."""
    if has_chat_template(tokenizer):
        messages = []
        if system_prompt is not None:
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"Question: {question}\nAnswer:"


def prompt_ids(tokenizer, question: str, system_prompt: Optional[str] = None) -> List[int]:
    return tokenizer(build_prompt(tokenizer, question, system_prompt), add_special_tokens=False)["input_ids"]


def answer_ids(tokenizer, answer: str) -> List[int]:
    """Answer tokens, closed by EOS (the end of the assistant's turn)."""
    text = answer if has_chat_template(tokenizer) else " " + answer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids


def encode_qa(tokenizer, question: str, answer: str, *, system_prompt: Optional[str] = None,
              max_length: Optional[int] = None) -> EncodedExample:
    """Token ids and labels of one example; truncated from the answer's end to ``max_length``."""
    if question:
        p = prompt_ids(tokenizer, question, system_prompt)
        a = answer_ids(tokenizer, answer)
    else:
        p = []
        a = tokenizer(answer, add_special_tokens=True)["input_ids"]
    return _joined(p, a, max_length, question)


def encode_plain(tokenizer, prompt: str, answer: str, *, max_length: Optional[int] = None) -> EncodedExample:
    """``prompt`` as it is (no chat template) followed by ``answer`` and EOS; labels on the answer only.
    ``answer`` carries its own leading separator (a space after ``A:``, none after a newline)."""
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        a = a + [tokenizer.eos_token_id]
    return _joined(tokenizer(prompt, add_special_tokens=False)["input_ids"], a, max_length, prompt)


def _joined(p: List[int], a: List[int], max_length: Optional[int], what: str) -> EncodedExample:
    """Prompt ids then answer ids, truncated from the answer's end to ``max_length``."""
    ids = p + a
    labels = [IGNORE_INDEX] * len(p) + list(a)
    if max_length is not None and len(ids) > max_length:
        if len(p) >= max_length:
            raise ValueError(f"prompt of {len(p)} tokens does not fit max_length={max_length}: {what[:60]!r}")
        ids, labels = ids[:max_length], labels[:max_length]
    return EncodedExample(ids, labels, len(p))


def encode_continuation(tokenizer, prefix: str, continuation: str) -> EncodedExample:
    """Raw text (no chat template) split in two: ``prefix`` is the prompt (labels -100), ``continuation``
    (after one space) the labelled part, without EOS: a passage cut at a word boundary goes on."""
    if not prefix:
        raise ValueError("encode_continuation needs a non-empty prefix")
    p = tokenizer(prefix, add_special_tokens=True)["input_ids"]
    a = tokenizer(" " + continuation.lstrip(), add_special_tokens=False)["input_ids"]
    return EncodedExample(p + a, [IGNORE_INDEX] * len(p) + list(a), len(p))


def pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return 0


def collate(examples: Sequence[EncodedExample], pad_token_id: int, *, left_pad: bool = False) -> dict:
    """Pad a batch: ``input_ids``, ``attention_mask``, ``labels`` as ``[B, T]`` tensors.

    Right padding for training and scoring; left padding (``left_pad=True``) for generation, so
    that every row's next token comes after its last real token.
    """
    T = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), T), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        sl = slice(T - n, T) if left_pad else slice(0, n)
        ids[i, sl] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, sl] = torch.tensor(e.labels, dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
