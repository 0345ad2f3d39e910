"""Plain supervised fine-tuning on QA pairs (answer tokens only).

Used to make a model *know* a dataset before anything can be unlearned (the demo's first
step, the ``finetune`` model of the comparison) and to train the ``retain`` gold-standard
model on the retain set alone. Full-parameter AdamW with linear warm-up and linear decay to 0
(MEASURED_CPU.md: lr 2e-4 x 5 epochs with 10% warm-up memorised author QA to ROUGE-L 0.97).
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from alter.data.prompts import pad_id
from alter.train.batches import collate_items, encode_items, phase1_plan


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def finetune(model, tokenizer, examples: Sequence, *, epochs: float = 5.0, lr: float = 2e-4, batch_size: int = 8,
             warmup_ratio: float = 0.1, weight_decay: float = 0.0, max_length: int = 256,
             system_prompt: Optional[str] = None, seed: int = 0, max_grad_norm: float = 1.0,
             progress: bool = True, desc: str = "fine-tune") -> dict:
    """Train every parameter of ``model`` on ``examples``; returns steps, seconds and the last loss."""
    if not examples:
        raise ValueError("fine-tuning needs at least one example")
    torch.manual_seed(seed)
    items = encode_items(tokenizer, examples, [0] * len(examples), system_prompt=system_prompt, max_length=max_length)
    plan = phase1_plan(len(items), batch_size, epochs, seed)
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
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
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                    labels=batch["labels"].to(device))
        out.loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        last = float(out.loss.detach())
        bar.set_postfix(loss=f"{last:.3f}")
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return {"steps": total, "seconds": time.time() - t0, "final_loss": last, "epochs": epochs, "lr": lr}
