"""The one runner every baseline shares, so that comparisons with ALTER are fair (docs/method.md §8).

Same as ALTER's phase II (alter/train/trainer.py):

- tokenisation: :func:`alter.train.batches.encode_items` (chat template, loss on answer tokens);
- batches: :func:`alter.train.batches.phase2_plan` with the same seed and tag — epochs count over
  the forget set; each step takes ``batch_size`` forget examples and
  ``round(batch_size * retain_per_forget)`` randomly drawn retain examples, here split into a
  forget batch and a retain batch (methods whose loss ignores the retain set draw none);
- optimiser: AdamW at a constant learning rate, weight decay 0, gradient-norm clipping at 1.0.

A method that needs a reference gets a frozen deep copy made once (full-parameter methods) or the
model itself inside PEFT's ``disable_adapter()`` (LoRA methods). The model is trained in place.
A method's one-off work before the first step (``UnlearningMethod.before_training``: WHP reinforces a
copy of the model and relabels the forget answers) runs inside the run, counted in ``train_seconds``
and in the peak memory; its last change after the last step is ``UnlearningMethod.finalize``.
``finetune`` / ``retain`` go through :func:`alter.train.supervised.finetune` instead (their own
schedule) but report the same fields.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from alter import io as alter_io
from alter.baselines.base import ForgetItems, Method, Reference, SupervisedMethod, UnlearningMethod, adamw, \
    count_trainable, set_all_trainable
from alter.baselines.registry import resolve_method
from alter.baselines.report import UnlearningReport, UnlearningResult, peak_memory, reset_peak_memory
from alter.baselines.saving import save_model, save_report
from alter.data.prompts import pad_id
from alter.train.batches import collate_items, encode_items, phase2_plan


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _check_schedule(epochs: float, batch_size: int, lr: float, retain_per_forget: float) -> None:
    if not (isinstance(epochs, (int, float)) and epochs > 0 and math.isfinite(epochs)):
        raise ValueError(f"epochs must be a positive number, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be positive, got {lr!r}")
    if retain_per_forget < 0:
        raise ValueError(f"retain_per_forget must be >= 0, got {retain_per_forget!r}")


class UnlearningRun:
    """One run of an :class:`UnlearningMethod`: set up on construction, then :meth:`step` / :meth:`run`.

    Construction prepares the model (trainable set or PEFT wrap), the reference, the tokenised
    items, the batch plan and the optimiser. ``run()`` trains every remaining step, saves when
    ``output_dir`` is set and returns an :class:`UnlearningResult`.
    """

    def __init__(self, method: UnlearningMethod, model, tokenizer, forget: Sequence, retain: Sequence, *,
                 epochs: float, batch_size: int, lr: float, retain_per_forget: float = 1.0, seed: int = 0,
                 system_prompt: Optional[str] = None, max_length: int = 256, weight_decay: float = 0.0,
                 max_grad_norm: float = 1.0, output_dir=None, progress: bool = True, log_every: int = 1):
        self.t_start = time.time()
        if not forget:
            raise ValueError("empty forget set: give at least one example to unlearn")
        _check_schedule(epochs, batch_size, lr, retain_per_forget)
        uses_retain = method.uses_retain
        if uses_retain and not retain:
            raise ValueError(f"method {method.name!r} trains on the retain set, which is empty")
        if uses_retain and retain_per_forget == 0:
            raise ValueError(f"method {method.name!r} trains on the retain set: retain_per_forget must be > 0")
        self.method = method
        self.tokenizer = tokenizer
        self.settings = dict(epochs=float(epochs), batch_size=batch_size, lr=float(lr),
                             retain_per_forget=float(retain_per_forget) if uses_retain else 0.0, seed=seed,
                             weight_decay=weight_decay, max_grad_norm=max_grad_norm, max_length=max_length,
                             system_prompt=system_prompt)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.progress = progress
        self.log_every = max(1, int(log_every))
        self.log: List[dict] = []

        torch.manual_seed(seed)
        self.forget, self.retain = method.prepare_data(forget, retain, seed)
        self.device = _model_device(model)
        reset_peak_memory(self.device)
        self.model = method.prepare(model, tokenizer, seed=seed)
        self.reference = self._make_reference() if method.needs_reference else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"method {method.name!r} left no trainable parameter")
        self.trainable_parameters = count_trainable(self.model)

        nf = len(self.forget)
        retain_used = self.retain if uses_retain else []
        self.items = encode_items(tokenizer, self.forget + list(retain_used), [1] * nf + [0] * len(retain_used),
                                  system_prompt=system_prompt, max_length=max_length)
        self.n_forget = nf
        self.plan = phase2_plan(list(range(nf)), list(range(nf, len(self.items))), batch_size, epochs,
                                self.settings["retain_per_forget"], seed)
        if uses_retain and any(all(i < nf for i in chunk) for chunk in self.plan):
            raise ValueError(f"retain_per_forget={retain_per_forget} leaves some steps of {method.name!r} without a "
                             "retain example (round(batch * retain_per_forget) = 0); raise it")
        self.optimizer = adamw(self.params, lr, weight_decay)
        self.pad = pad_id(tokenizer)
        self.steps_done = 0
        self.started = False
        self.train_seconds = 0.0
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "train_log.jsonl").write_text("")

    def _make_reference(self) -> Reference:
        if self.method.uses_peft:
            return Reference.adapters_disabled(self.model)
        return Reference.frozen_copy(self.model)

    # ------------------------------------------------------------------ batches
    def _collate(self, items: Sequence) -> dict:
        batch = collate_items(list(items), self.pad)
        batch.pop("domain", None)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _batch(self, indices: List[int]) -> Optional[dict]:
        if not indices:
            return None
        return self._collate([self.items[i] for i in indices])

    def batches(self, step: int):
        """``(forget_batch, retain_batch or None)`` of plan step ``step``."""
        chunk = self.plan[step]
        return (self._batch([i for i in chunk if i < self.n_forget]),
                self._batch([i for i in chunk if i >= self.n_forget]))

    # ------------------------------------------------------------------ training
    def start(self) -> None:
        """The method's one-off work before the first step (:meth:`UnlearningMethod.before_training`, e.g.
        WHP's reinforcement and generic labels), counted in ``train_seconds``. Runs once; :meth:`step`
        calls it, so :meth:`batches` gives the items the steps train on only after it."""
        if self.started:
            return
        t0 = time.time()
        s = self.settings
        forget = ForgetItems(items=list(self.items[:self.n_forget]), collate=self._collate,
                             batch_size=s["batch_size"], seed=s["seed"], weight_decay=s["weight_decay"],
                             max_grad_norm=s["max_grad_norm"])
        new = self.method.before_training(self.model, self.reference, forget)
        if new is not None:
            new = list(new)
            if len(new) != self.n_forget:
                raise ValueError(f"{self.method.name}: before_training returned {len(new)} forget items for "
                                 f"{self.n_forget} forget examples")
            self.items = new + self.items[self.n_forget:]
        self.started = True
        self.train_seconds += time.time() - t0

    def step(self) -> Dict[str, float]:
        """Run the next step of the plan; returns its logged scalars."""
        if self.steps_done >= len(self.plan):
            raise ValueError("every step of the plan has run")
        self.start()
        t0 = time.time()
        self.model.train()
        forget_batch, retain_batch = self.batches(self.steps_done)
        out = self.method.loss(self.model, forget_batch, retain_batch, self.reference)
        loss = out["loss"]
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"{self.method.name}: non-finite loss at step {self.steps_done + 1}")
        loss.backward()
        if self.settings["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.settings["max_grad_norm"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        self.train_seconds += time.time() - t0
        record = {"step": self.steps_done,
                  "epoch": self.settings["epochs"] * self.steps_done / len(self.plan),
                  "loss": float(loss.detach())}
        for k, v in out.items():
            if k != "loss" and torch.is_tensor(v) and v.dim() == 0:
                record[k] = float(v)
        if self.steps_done % self.log_every == 0 or self.steps_done == len(self.plan):
            self._log(record)
        return record

    def _log(self, record: dict) -> None:
        self.log.append(record)
        if self.output_dir is not None:
            alter_io.append_jsonl(self.output_dir / "train_log.jsonl", record)

    def run(self) -> UnlearningResult:
        bar = tqdm(total=len(self.plan), initial=self.steps_done, desc=self.method.name, disable=not self.progress)
        while self.steps_done < len(self.plan):
            record = self.step()
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
        bar.close()
        return self.finish()

    def finish(self) -> UnlearningResult:
        """Finalize (the method's last change), freeze and save the model; build the report (the reference
        is released)."""
        self.method.finalize(self.model, self.reference)
        self.model.eval()
        set_all_trainable(self.model, False)
        self.reference = None
        peak, source = peak_memory(self.device)
        report = UnlearningReport(
            method=self.method.name, citation=self.method.citation,
            hyperparameters={**self.method.hyperparameters(), **self.settings,
                             "retain_batch_size": int(round(self.settings["batch_size"]
                                                            * self.settings["retain_per_forget"]))},
            steps=self.steps_done, seconds=0.0, train_seconds=self.train_seconds, peak_memory_bytes=peak,
            peak_memory_source=source, trainable_parameters=self.trainable_parameters,
            total_parameters=sum(p.numel() for p in self.model.parameters()), forget_examples=len(self.forget),
            retain_examples=len(self.retain), device=str(self.device), log=self.log)
        if self.output_dir is not None:
            report.saved_to = str(save_model(self.model, self.tokenizer, self.output_dir,
                                             adapter=self.method.uses_peft, quiet=not self.progress))
        report.seconds = time.time() - self.t_start
        if self.output_dir is not None:
            save_report(report, self.output_dir)
        return UnlearningResult(self.model, report)


def _run_supervised(method: SupervisedMethod, model, tokenizer, forget, retain, *, epochs, batch_size, lr, seed,
                    system_prompt, max_length, weight_decay, max_grad_norm, output_dir, progress) -> UnlearningResult:
    from alter.train.supervised import finetune

    t0 = time.time()
    if not forget:
        raise ValueError("empty forget set: give at least one example to unlearn")
    _check_schedule(epochs, batch_size, lr, 0.0)
    examples = method.training_examples(forget, retain)
    device = _model_device(model)
    reset_peak_memory(device)
    trainable = sum(p.numel() for p in model.parameters())
    stats = finetune(model, tokenizer, examples, epochs=epochs, lr=lr, batch_size=batch_size,
                     warmup_ratio=method.warmup_ratio, weight_decay=weight_decay, max_length=max_length,
                     system_prompt=system_prompt, seed=seed, max_grad_norm=max_grad_norm, progress=progress,
                     desc=method.name)
    peak, source = peak_memory(device)
    log = [{"step": stats["steps"], "epoch": float(epochs), "loss": stats["final_loss"]}]
    report = UnlearningReport(
        method=method.name, citation=method.citation,
        hyperparameters={**method.hyperparameters(), "epochs": float(epochs), "batch_size": batch_size,
                         "lr": float(lr), "seed": seed, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm,
                         "max_length": max_length, "system_prompt": system_prompt},
        steps=stats["steps"], seconds=0.0, train_seconds=stats["seconds"], peak_memory_bytes=peak,
        peak_memory_source=source, trainable_parameters=trainable, total_parameters=trainable,
        forget_examples=len(forget) if method.name == "finetune" else 0, retain_examples=len(retain),
        device=str(device), log=log)
    if output_dir is not None:
        alter_io.atomic_write_json(Path(output_dir) / "train_log.jsonl", log, lines=True, sort_keys=False)
        report.saved_to = str(save_model(model, tokenizer, output_dir, adapter=False, quiet=not progress))
    report.seconds = time.time() - t0
    if output_dir is not None:
        save_report(report, output_dir)
    return UnlearningResult(model, report)


def run_unlearning(method: Union[str, Method], model, tokenizer, forget: Sequence, retain: Sequence, *,
                   epochs: Optional[float] = None, batch_size: Optional[int] = None, lr: Optional[float] = None,
                   retain_per_forget: float = 1.0, seed: int = 0, system_prompt: Optional[str] = None,
                   max_length: int = 256, output_dir=None, progress: bool = True, weight_decay: float = 0.0,
                   max_grad_norm: float = 1.0, log_every: int = 1,
                   method_kwargs: Optional[dict] = None) -> UnlearningResult:
    """Run a baseline by name (``METHODS``) on ``model`` (trained in place) and report it.

    Args:
        method: a name of :data:`alter.baselines.METHODS` or a method instance.
        model, tokenizer: a Hugging Face causal LM and its tokenizer.
        forget, retain: examples with ``question`` and ``answer`` (``QAExample``).
        epochs / batch_size / lr: None takes the method's defaults (unlearning baselines: 3 epochs
            over the forget set, batch 4, the method's learning rate; ``finetune``/``retain``:
            5 epochs, batch 8, lr 2e-4).
        retain_per_forget: retain examples per forget example in each step (ALTER's phase II pairing).
        output_dir: when set, ``train_log.jsonl``, ``report.json`` and ``model/`` (full parameters)
            or ``adapter/`` (PEFT) are written there.
        method_kwargs: the method's hyperparameters (e.g. ``{"beta": 0.1}`` for NPO).

    Returns:
        :class:`UnlearningResult` with the trained ``model`` and its :class:`UnlearningReport`.
    """
    m = resolve_method(method, method_kwargs)
    epochs = m.default_epochs if epochs is None else epochs
    batch_size = m.default_batch_size if batch_size is None else batch_size
    lr = m.default_lr if lr is None else lr
    if isinstance(m, SupervisedMethod):
        return _run_supervised(m, model, tokenizer, forget, retain, epochs=epochs, batch_size=batch_size, lr=lr,
                               seed=seed, system_prompt=system_prompt, max_length=max_length,
                               weight_decay=weight_decay, max_grad_norm=max_grad_norm, output_dir=output_dir,
                               progress=progress)
    run = UnlearningRun(m, model, tokenizer, forget, retain, epochs=epochs, batch_size=batch_size, lr=lr,
                        retain_per_forget=retain_per_forget, seed=seed, system_prompt=system_prompt,
                        max_length=max_length, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        output_dir=output_dir, progress=progress, log_every=log_every)
    return run.run()
