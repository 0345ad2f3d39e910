"""Batched, teacher-forced log-likelihoods of answers given prompts — the model-facing core.

Every sequence is encoded with ``alter.data.prompts.encode_qa`` (the exact ids and labels that
training used: prompt, then answer tokens closed by EOS, labels -100 on the prompt), sorted by
length, right-padded with ``prompts.collate`` and scored with one forward per batch. Right
padding with an attention mask leaves every real position's logits unchanged (causal attention
never looks right), so results do not depend on the batch composition; the tests check this.

Works with any callable ``model(input_ids=..., attention_mask=...)`` returning ``.logits``
(a transformers model, a PEFT model, ALTER's wrapped model, or a test double). A model that routes
by its prompt (``AlterModel``: ``accepts_prompt_lengths``) is also told where each prompt ends, so
an answer is scored with the routing ``generate`` would give it (docs/method.md §3); a raw-text row
(no prompt) is scored as one prompt.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from alter.data.prompts import IGNORE_INDEX, EncodedExample, collate, encode_qa, pad_id, prompt_ids
from alter.eval._common import batches, eval_mode, forward_with_prompt, logits_of, model_device


def encode_pairs(tokenizer, prompts: Sequence[str], answers: Sequence[str], *, system_prompt: Optional[str] = None,
                 include_eos: bool = True, max_length: Optional[int] = None) -> List[EncodedExample]:
    """``encode_qa`` of each (prompt, answer); with ``include_eos=False`` a closing EOS token is
    dropped so that it is neither scored nor counted. An empty prompt means raw text (every token
    is a label, see ``encode_qa``)."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts vs {len(answers)} answers")
    eos = tokenizer.eos_token_id
    out = []
    for q, a in zip(prompts, answers):
        e = encode_qa(tokenizer, q, a, system_prompt=system_prompt, max_length=max_length)
        if not include_eos and eos is not None and len(e.input_ids) > e.prompt_length \
                and e.input_ids[-1] == eos and e.labels[-1] == eos:
            e = EncodedExample(e.input_ids[:-1], e.labels[:-1], e.prompt_length)
        out.append(e)
    return out


def score_encoded(model, encoded: Sequence[EncodedExample], *, pad_token_id: int, batch_size: int = 8,
                  return_tokens: bool = False, progress: bool = True, desc: str = "log-likelihoods",
                  forward: Optional[Callable] = None) -> Dict[str, list]:
    """Teacher-forced per-token log-probabilities of the labelled tokens of each encoded sequence.

    ``forward(b, input_ids, attention_mask, prompt_lengths)`` (optional) gives the logits of batch number
    ``b`` instead of the model's forward; the batches are the same on every call with the same ``encoded``
    and ``batch_size`` (the phase II stop check keeps per-batch state this way).

    Returns per item: ``sum_nll`` (sum of -log p over the labelled tokens), ``mean_nll`` (that
    sum over ``num_tokens``; ``None`` when there are no labelled tokens) and ``num_tokens``. With
    ``return_tokens=True`` also ``token_logprobs`` (list of floats), ``greedy_match`` (whether the
    argmax prediction at each labelled position equals the label) and ``target_ids``.
    """
    n = len(encoded)
    sum_nll: List[Optional[float]] = [None] * n
    num_tokens: List[Optional[int]] = [None] * n
    tok_lp: List[Optional[List[float]]] = [None] * n
    tok_match: List[Optional[List[bool]]] = [None] * n
    tok_ids: List[Optional[List[int]]] = [None] * n
    order = sorted(range(n), key=lambda i: -len(encoded[i].input_ids))
    device = model_device(model)
    groups = batches(order, batch_size) if n else []
    with eval_mode(model):
        for b, idx in enumerate(tqdm(groups, desc=desc, disable=not progress, leave=False)):
            batch = collate([encoded[i] for i in idx], pad_token_id)
            ids = batch["input_ids"].to(device)
            mask = batch["attention_mask"].to(device)
            lengths = [encoded[i].prompt_length or len(encoded[i].input_ids) for i in idx]
            logits = logits_of(forward_with_prompt(model, ids, mask, lengths) if forward is None
                               else forward(b, ids, mask, lengths))
            targets = batch["labels"][:, 1:].to(logits.device)
            valid = targets != IGNORE_INDEX
            sel = logits[:, :-1][valid].float()  # [N, V]: only the labelled positions
            tgt = targets[valid]
            lp = torch.log_softmax(sel, dim=-1).gather(1, tgt[:, None]).squeeze(1) if tgt.numel() \
                else sel.new_zeros(0)
            match = sel.argmax(dim=-1) == tgt if tgt.numel() else torch.zeros(0, dtype=torch.bool)
            counts = valid.sum(dim=1).tolist()
            for j, (row_lp, row_match, row_ids) in enumerate(zip(torch.split(lp.cpu(), counts),
                                                                  torch.split(match.cpu(), counts),
                                                                  torch.split(tgt.cpu(), counts))):
                i = idx[j]
                num_tokens[i] = int(counts[j])
                sum_nll[i] = float(-row_lp.double().sum())
                if return_tokens:
                    tok_lp[i] = [float(x) for x in row_lp.tolist()]
                    tok_match[i] = [bool(x) for x in row_match.tolist()]
                    tok_ids[i] = [int(x) for x in row_ids.tolist()]
    out: Dict[str, list] = {
        "sum_nll": sum_nll,
        "mean_nll": [s / c if c else None for s, c in zip(sum_nll, num_tokens)],
        "num_tokens": num_tokens,
    }
    if return_tokens:
        out.update(token_logprobs=tok_lp, greedy_match=tok_match, target_ids=tok_ids)
    return out


def answer_log_likelihoods(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 8,
                           system_prompt: Optional[str] = None, include_eos: bool = True,
                           max_length: Optional[int] = None, return_tokens: bool = False, progress: bool = True,
                           desc: str = "log-likelihoods") -> Dict[str, list]:
    """Per-item sum / mean NLL and token count of ``answers[i]`` after ``prompts[i]``.

    The answer tokens include the closing EOS unless ``include_eos=False`` — TOFU scores it too
    (locuslab/tofu ``data_module.py``, ``convert_raw_data_to_model_format`` puts the EOS in the
    labels). ``mean_nll`` is the length-normalised NLL ``L`` from which TOFU's probability
    ``exp(-L)`` and truth ratio are built (``alter.eval.metrics.tofu``).
    """
    encoded = encode_pairs(tokenizer, prompts, answers, system_prompt=system_prompt, include_eos=include_eos,
                           max_length=max_length)
    return score_encoded(model, encoded, pad_token_id=pad_id(tokenizer), batch_size=batch_size,
                         return_tokens=return_tokens, progress=progress, desc=desc)


def next_token_logprobs(model, tokenizer, prompts: Sequence[str], candidate_ids: Sequence[int], *,
                        batch_size: int = 8, system_prompt: Optional[str] = None, progress: bool = True,
                        desc: str = "next-token log-probs") -> List[List[float]]:
    """``log p(candidate | prompt)`` for each prompt (built with ``prompts.prompt_ids``) and each
    single-token candidate — one forward per batch of prompts. Equal to scoring each candidate
    as a one-token answer with ``answer_log_likelihoods(..., include_eos=False)``, 1/len(candidates)
    of the cost (used for lettered multiple choice)."""
    enc = []
    for q in prompts:
        p = prompt_ids(tokenizer, q, system_prompt)
        if not p:
            raise ValueError("next_token_logprobs needs non-empty prompts")
        enc.append(EncodedExample(p, [IGNORE_INDEX] * len(p), len(p)))
    cand = torch.tensor(list(candidate_ids), dtype=torch.long)
    out: List[Optional[List[float]]] = [None] * len(enc)
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i].input_ids))
    device = model_device(model)
    with eval_mode(model):
        for idx in tqdm(batches(order, batch_size) if enc else [], desc=desc, disable=not progress, leave=False):
            batch = collate([enc[i] for i in idx], pad_id(tokenizer))
            mask = batch["attention_mask"]
            logits = logits_of(model(input_ids=batch["input_ids"].to(device), attention_mask=mask.to(device)))
            last = (mask.sum(dim=1) - 1).to(logits.device)
            rows = logits[torch.arange(len(idx), device=logits.device), last].float()
            lp = torch.log_softmax(rows, dim=-1)[:, cand.to(logits.device)].cpu()
            for j, i in enumerate(idx):
                out[i] = [float(x) for x in lp[j].tolist()]
    return out
