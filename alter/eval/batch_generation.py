"""Batched greedy generation: answers to questions, and continuations of token prefixes.

Prompts are built with ``alter.data.prompts.prompt_ids`` (the same prefix the model was trained
and scored on), left-padded with ``prompts.collate(..., left_pad=True)`` so that every row's
next token follows its last real token, and decoded greedily with
``model.generate(input_ids=..., attention_mask=..., max_new_tokens=..., do_sample=False,
pad_token_id=...)`` — the only generate arguments used, so any HF-like model works. The prompt
is stripped by position, each row is cut at its first EOS token, and the rest is decoded with
``skip_special_tokens=True`` and stripped of surrounding whitespace, as TOFU
(locuslab/tofu ``evaluate_util.py``, ``run_generation``) and open-unlearning
(``src/evals/metrics/utils.py``, ``eval_text_similarity``) do before computing ROUGE.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from alter.data.prompts import IGNORE_INDEX, EncodedExample, collate, pad_id, prompt_ids
from alter.eval._common import batches, eval_mode, model_device


def generate_token_ids(model, prompt_id_lists: Sequence[Sequence[int]], *, pad_token_id: int,
                       eos_token_id: Optional[int], max_new_tokens: int, batch_size: int = 8,
                       progress: bool = True, desc: str = "generating") -> List[List[int]]:
    """Greedy continuation ids of each prompt (prompt removed; cut before the first EOS)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    enc = []
    for p in prompt_id_lists:
        if len(p) == 0:
            raise ValueError("cannot generate from an empty prompt")
        enc.append(EncodedExample(list(p), [IGNORE_INDEX] * len(p), len(p)))
    out: List[Optional[List[int]]] = [None] * len(enc)
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i].input_ids))
    device = model_device(model)
    with eval_mode(model):
        for idx in tqdm(batches(order, batch_size) if enc else [], desc=desc, disable=not progress, leave=False):
            batch = collate([enc[i] for i in idx], pad_token_id, left_pad=True)
            ids = batch["input_ids"].to(device)
            seqs = model.generate(input_ids=ids, attention_mask=batch["attention_mask"].to(device),
                                  max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_token_id)
            seqs = seqs.sequences if hasattr(seqs, "sequences") else seqs
            seqs = seqs.to("cpu")
            T = ids.shape[1]
            if seqs.shape[1] < T or not torch.equal(seqs[:, :T], batch["input_ids"]):
                raise RuntimeError("model.generate did not return the prompt followed by the new tokens")
            for j, i in enumerate(idx):
                new = seqs[j, T:].tolist()
                if eos_token_id is not None and eos_token_id in new:
                    new = new[:new.index(eos_token_id)]
                out[i] = new
    return out


def _cut_at_stops(text: str, stop_strings: Optional[Sequence[str]]) -> str:
    for s in stop_strings or ():
        if s and s in text:
            text = text.split(s)[0]
    return text


def generate_answers(model, tokenizer, questions: Sequence[str], *, max_new_tokens: int = 200, batch_size: int = 8,
                     system_prompt: Optional[str] = None, stop_strings: Optional[Sequence[str]] = None,
                     progress: bool = True, desc: str = "generating answers") -> List[str]:
    """Greedy answer text to each question, without the prompt, stopped at EOS (and at any of
    ``stop_strings``, like open-unlearning's ``stopwords``). ``max_new_tokens`` defaults to 200,
    open-unlearning's ``configs/generation/default.yaml``."""
    ids = [prompt_ids(tokenizer, q, system_prompt) for q in questions]
    new = generate_token_ids(model, ids, pad_token_id=pad_id(tokenizer), eos_token_id=tokenizer.eos_token_id,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress, desc=desc)
    return [_cut_at_stops(tokenizer.decode(t, skip_special_tokens=True), stop_strings).strip() for t in new]
