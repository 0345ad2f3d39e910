"""Plain supervised fine-tuning on QA pairs (answer tokens only).

Used to make a model *know* a dataset before anything can be unlearned (the demo's first
step, the ``finetune`` model of the comparison) and to train the ``retain`` gold-standard
model on the retain set alone. AdamW with linear warm-up and linear decay to 0
(measured: lr 2e-4 x 5 epochs with 10% warm-up memorised author QA to ROUGE-L 0.97).

Two options make a step cheaper on a CPU without changing what is learnt from:
- ``trainable="upper"`` trains the upper half of the transformer blocks (and the final norm):
  the backward pass stops half-way (measured here: 3.1 s instead of 4.3 s per 8 x 45 tokens);
- the LM head runs only over the positions from the first answer token on
  (``logits_to_keep``), since the loss covers answer tokens only (2.4 s with both).
"""

from __future__ import annotations

import inspect
import math
import re
import time
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from alter.data.prompts import IGNORE_INDEX, pad_id
from alter.train.batches import collate_items, encode_items, phase1_plan


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


TRAINABLE = ("all", "blocks", "upper")


def trainable_parameters(model, which: str):
    """``all`` parameters, the transformer ``blocks`` (no embeddings / LM head), or the ``upper`` half of them."""
    if which not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {which!r}")
    named = list(model.named_parameters())
    if which == "all":
        return [p for _, p in named]
    blocks = [n for n, _ in named if re.search(r"\.layers\.(\d+)\.", n)]
    if not blocks:
        raise ValueError("trainable='blocks'/'upper' needs a model whose blocks are named '*.layers.<i>.*'")
    depth = 1 + max(int(re.search(r"\.layers\.(\d+)\.", n).group(1)) for n in blocks)
    first = depth // 2 if which == "upper" else 0
    chosen = []
    for n, p in named:
        m = re.search(r"\.layers\.(\d+)\.", n)
        if (m and int(m.group(1)) >= first) or (m is None and re.search(r"(^|\.)norm\.weight$", n)):
            chosen.append(p)
    return chosen


def _answer_span(labels: torch.Tensor) -> Optional[int]:
    """How many final positions the loss needs: from one before the first answer token to the end."""
    answer = (labels != IGNORE_INDEX).any(0).nonzero()
    if answer.numel() == 0:
        return None
    return labels.shape[1] - int(answer[0]) + 1


def finetune(model, tokenizer, examples: Sequence, *, epochs: float = 5.0, lr: float = 2e-4, batch_size: int = 8,
             warmup_ratio: float = 0.1, weight_decay: float = 0.0, max_length: int = 256,
             system_prompt: Optional[str] = None, seed: int = 0, max_grad_norm: float = 1.0,
             trainable: str = "all", answer_logits_only: bool = True,
             progress: bool = True, desc: str = "fine-tune") -> dict:
    """Train ``model`` (``trainable`` parameters) on ``examples``; returns steps, seconds, the last loss."""
    if not examples:
        raise ValueError("fine-tuning needs at least one example")
    torch.manual_seed(seed)
    items = encode_items(tokenizer, examples, [0] * len(examples), system_prompt=system_prompt, max_length=max_length)
    plan = phase1_plan(len(items), batch_size, epochs, seed)
    for p in model.parameters():
        p.requires_grad_(False)
    params = trainable_parameters(model, trainable)
    for p in params:
        p.requires_grad_(True)
    keep_ok = answer_logits_only and "logits_to_keep" in inspect.signature(model.forward).parameters
    opt = _adamw(params, lr, weight_decay)
    warm = max(1, int(math.ceil(warmup_ratio * len(plan))))
    total = len(plan)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    device = next(model.parameters()).device
    model.train()
    t0 = time.time()
    last = float("nan")
    bar = tqdm(plan, desc=desc, disable=not progress)
    for idx in bar:
        batch = collate_items([items[i] for i in idx], pad_id(tokenizer))
        labels = batch["labels"].to(device)
        keep = _answer_span(labels) if keep_ok else None
        kwargs = {"logits_to_keep": keep} if keep else {}
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                    **kwargs)
        lab = labels[:, -out.logits.shape[1]:]
        loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]).float(),
                                                 lab[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        last = float(loss.detach())
        bar.set_postfix(loss=f"{last:.3f}", refresh=False)
    model.eval()
    for p in params:
        p.requires_grad_(False)
    import resource

    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    if device.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated(device))
    return {"steps": total, "seconds": time.time() - t0, "final_loss": last, "epochs": epochs, "lr": lr,
            "trainable": trainable, "trainable_parameters": sum(p.numel() for p in params),
            "peak_memory_bytes": peak}


def finetune_cache_key(model_name: str, examples: Sequence, settings: dict) -> str:
    """A digest of everything that determines a fine-tuned model: base, data, settings, torch version."""
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(model_name.encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(torch.__version__.encode())
    for e in examples:
        h.update(f"{e.question}\x00{e.answer}\x01".encode())
    return h.hexdigest()[:16]


def cached_finetune(model_name: str, examples: Sequence, *, tag: str = "finetuned", use_cache: bool = True,
                    progress: bool = True, desc: str = "fine-tune", **settings):
    """``(model, tokenizer, report)``: ``model_name`` fine-tuned on ``examples`` with ``settings``.

    The result is saved (safetensors, atomically) under ``<ALTER_CACHE>/finetuned/<tag>-<key>``
    and loaded from there when the same base, data and settings come again.
    """
    from alter import io as alter_io
    from alter.modeling import model_loading

    import json

    key = finetune_cache_key(model_name, examples, settings)
    cache = model_loading.cache_dir() / "finetuned" / f"{tag}-{key}"
    if use_cache and (cache / "config.json").is_file():
        model, tokenizer = model_loading.load(str(cache))
        saved = cache / "finetune_report.json"
        report = json.loads(saved.read_text()) if saved.is_file() else dict(settings)
        report.update(cached=True, path=str(cache))
        return model, tokenizer, report
    model, tokenizer = model_loading.load(model_name)
    report = finetune(model, tokenizer, examples, progress=progress, desc=desc, **settings)
    if use_cache:
        with alter_io.atomic_directory(cache) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            alter_io.atomic_write_json(tmp / "finetune_report.json", report)
        report["path"] = str(cache)
    report["cached"] = False
    return model, tokenizer, report
