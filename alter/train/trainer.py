"""The two-phase ALTER trainer (docs/method.md §4), through ``accelerate``.

1. Preparation: forget sub-domains (data labels or ``auto:K``), wrapping, tokenisation, one
   no-grad base pass that gives every token's entropy and phase II's top-k KL targets (kept per
   example: the base model never changes), theta ("auto" = Otsu over the answer tokens), optional
   centroid init of routers.
2. Phase I (off by default, ``phase1_epochs=0``): A and the retain expert learn the high-entropy
   answer tokens of D_R ∪ D_F (cross-entropy); every token is routed to the retain expert; on
   low-entropy tokens neither A nor B_R receives gradient.
3. Phase II, as built (docs/method.md §4): the question router is fitted first; forget examples run
   through the inference gates (their domain's router logits), a ``plain_prompt_share`` of them under a
   prompt without the chat template (docs/method.md §4, "Prompt formats"); the hinge pushes their low-entropy
   content tokens and the structural KL (against kept top-k base targets) holds every other
   position; only the forget experts train; phase II ends early once the forget answers the last
   steps trained on have a mean probability of at most ``stop_forget_probability`` (or, as options,
   on the hinge's count, ``stop_when_forgotten``, or on generated answers, ``stop_answer_overlap``),
   never before ``phase2_min_steps`` (alter/train/stopping/early_stop.py). With
   ``router="token"`` (the paper's routers) phase II is teacher-forced by domain and adds retain
   examples (their cross-entropy) and the routers' domain cross-entropy.

Checkpoints every ``checkpoint_every`` steps (and at the end of phase I) are written
atomically; ``train(resume=True)`` continues from the newest one with nothing lost: the batch
order is a function of the seed, and the optimizer state, RNG and step counters are restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from alter import io as alter_io
from alter.config import AlterConfig
from alter.data.prompts import IGNORE_INDEX, pad_id
from alter.modeling.entropy import is_high, resolve_theta, shift_entropy
from alter.modeling.model import AlterModel, wrap
from alter.modeling.question_router import QuestionRouter
from alter.train import checkpoint as ckpt
from alter.train.batches import (TrainItem, collate_items, encode_items, forget_domain_of, phase1_plan, phase2_plan,
                                 plain_twins, rank_share, swap_in_twins)
from alter.train.stopping import EarlyStop
from alter.train.router_bank import (configure_units, fit_question_router, name_variant_features, router_only_rows,
                                     unit_features)
from alter.train.kl_targets import ensure_targets
from alter.train.repetition_loss import on_policy_repetition_loss
from alter.train.subdomains import centroid_init_routers, cluster_forget_examples
from alter.train.losses import HeadInput, phase1_loss, phase2_losses
from alter.train.step_values import step_values
from alter.train.activation_checkpointing import activation_checkpointing
from alter.train.run_report import TrainReport, peak_memory_bytes

logger = logging.getLogger(__name__)


# config fields that change how a run computes, not what it computes: a resume may change them
RESULT_NEUTRAL = frozenset({"gradient_checkpointing", "fused_lm_head"})


class AlterTrainer:
    """Train ALTER adapters on a forget set and a retain set.

    Args:
        model: a transformers causal LM (wrapped here) or an :class:`AlterModel` (continual use).
        tokenizer: its tokenizer.
        config: the hyperparameters (None: those of an already wrapped ``model``).
        forget / retain: sequences of examples with ``question``, ``answer``, ``domain``.
        output_dir: where checkpoints, the log and the final adapter go (None: keep in memory).
        checkpoint_every: global steps between checkpoints (0: only at phase boundaries).
        accelerator: an ``accelerate.Accelerator``; one is made when None.
    """

    def __init__(self, model, tokenizer, config: Optional[AlterConfig], forget: Sequence, retain: Sequence, *,
                 output_dir=None, checkpoint_every: int = 0, log_every: int = 10, progress: bool = True,
                 accelerator=None, on_log: Optional[Callable[[dict], None]] = None,
                 stop_reference: Optional[Sequence[str]] = None):
        """``stop_reference``: texts of the forget set's kind that the model never saw (passages only), from
        which the forget-level stop estimates its level (:mod:`alter.train.stopping.level`)."""
        if not forget:
            raise ValueError("empty forget set: give at least one example to unlearn")
        if config is None:
            if not isinstance(model, AlterModel):
                raise ValueError("config is required unless model is an already wrapped AlterModel")
            config = model.alter_config
        self.config = config.replace() if isinstance(config, AlterConfig) else config   # never mutate the caller's
        if self.config.lambda_complement and not self._kl_top_k():
            raise ValueError("lambda_complement needs the kept top-k targets (struct_kl_top_k > 0, lambda_struct > 0 "
                             "and token_entropy)")
        self.tokenizer = tokenizer
        self.forget = list(forget)
        self.retain = list(retain)
        overlap = {(e.question, e.answer) for e in self.forget} & {(e.question, e.answer) for e in self.retain}
        if overlap:
            import warnings
            warnings.warn(f"{len(overlap)} example(s) are in both the forget and the retain set (e.g. "
                          f"{next(iter(overlap))[0][:60]!r}); they are unlearned and retained at once", stacklevel=2)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.checkpoint_every, self.log_every = int(checkpoint_every), max(1, int(log_every))
        self.progress, self.on_log = progress, on_log
        self.stop_reference = list(stop_reference) if stop_reference else None
        if accelerator is None:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs
            accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                                      # a batch may route to only some forget experts: the others get no gradient
                                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.accelerator = accelerator
        self._raw_model = model
        self.model: Optional[AlterModel] = None
        self.items: List[TrainItem] = []
        self.report: Optional[TrainReport] = None
        self._only_expert: Optional[int] = None          # the one expert phase II trains (train_new_domain)

    # ------------------------------------------------------------------ preparation
    def _pad(self) -> int:
        return pad_id(self.tokenizer)

    def _batch_size_eval(self) -> int:
        return max(8, self.config.batch_size * 2)

    def prepare(self) -> AlterModel:
        """Wrap, tokenise, compute entropies and theta (once; later calls return the same model)."""
        if self.model is not None:
            return self.model
        cfg = self.config
        torch.manual_seed(cfg.seed)
        auto_k = int(cfg.subdomains.split(":")[1]) if cfg.subdomains.startswith("auto:") else None
        if isinstance(self._raw_model, AlterModel):
            model = self._raw_model
        else:
            if auto_k is None:
                names = list(dict.fromkeys(forget_domain_of(ex, cfg.retain_domain) for ex in self.forget))
            else:
                names = [f"forget_{k}" for k in range(auto_k)]
            given = list(cfg.forget_domains)
            if given != ["forget"] and auto_k is None:         # the user named the domains: keep their order
                if set(given) != set(names):
                    raise ValueError(f"config forget_domains {given} do not match the forget data's domains "
                                     f"{names}; fix one of them (or leave forget_domains at its default)")
                names = given
            cfg.forget_domains = names                          # cfg is this trainer's copy
            model = wrap(self._raw_model, cfg)
        model.to(self.accelerator.device)
        self.model = model
        domains = model.domains
        if auto_k is not None and not isinstance(self._raw_model, AlterModel):
            probe = encode_items(self.tokenizer, self.forget, [1] * len(self.forget), system_prompt=cfg.system_prompt,
                                 max_length=cfg.max_length)
            clusters = cluster_forget_examples(model, probe, auto_k, self._pad(), cfg.seed)
            forget_ids = [1 + c for c in clusters]
        else:
            forget_ids = [model.domain_index(forget_domain_of(ex, cfg.retain_domain)) for ex in self.forget]
        self.items = encode_items(self.tokenizer, self.forget + self.retain, forget_ids + [0] * len(self.retain),
                                  system_prompt=cfg.system_prompt, max_length=cfg.max_length,
                                  skip_copied=cfg.hinge_tokens == "new_content")
        if cfg.plain_prompt_share > 0:       # forget rows under a plain prompt too (docs/method.md §4)
            self.items += plain_twins(self.tokenizer, self.forget, self.items, max_length=cfg.max_length,
                                      skip_copied=cfg.hinge_tokens == "new_content", seed=cfg.seed)
        self._check_token_ids(model)
        if not cfg.token_entropy:                # AsymLoRA ablation: every token counts as low entropy
            for it in self.items:
                it.position_entropy = torch.zeros(len(it.encoded.input_ids))
        answer_entropies = self._base_entropy_pass()
        if model.theta is None:
            model.set_theta(resolve_theta(cfg.theta, answer_entropies))
        theta = model.theta
        high = float(is_high(answer_entropies, theta).float().mean()) if answer_entropies.numel() else 0.0
        self.report = TrainReport(theta=theta, domains=list(domains), entropy_summary={
            "answer_tokens": int(answer_entropies.numel()), "frac_high": high,
            "median": float(answer_entropies.median()) if answer_entropies.numel() else float("nan"),
            "theta_rule": str(cfg.theta), "q": cfg.q})
        if getattr(self, "router_calibration", None):
            self.report.entropy_summary["question_router"] = self.router_calibration
        self.answer_entropies = answer_entropies
        if cfg.init == "centroid" and not isinstance(self._raw_model, AlterModel):
            centroid_init_routers(model, self.items, theta, self._pad(), self._batch_size_eval())
        return model

    def _check_token_ids(self, model: AlterModel) -> None:
        """Every token id inside the model's vocabulary, checked once here on the host: the step's losses
        index the logits by label without reading them back (no host sync)."""
        out = model.model.get_output_embeddings()
        vocab = getattr(out, "out_features", None) or model.model.config.vocab_size
        for it in self.items:
            top = max(it.encoded.input_ids)
            if top >= vocab:
                raise ValueError(f"the tokenizer gave token id {top}, but the model's vocabulary has {vocab} "
                                 "entries: the tokenizer does not belong to this model")

    def _base_entropy_pass(self) -> torch.Tensor:
        """Entropy (and KL targets) at every position of every item that trains (no grad, adapters off);
        returns the answer tokens'. A question router is fitted from cut passes over the routing units
        (:func:`alter.train.router_bank.unit_features`, :meth:`_fit_question_router`)."""
        model = self.model
        router = model.question_router
        fit_router = router is not None and not router.fitted
        if fit_router:     # a fresh router: its unit is the chat's last user turn; a new request: its casing, names
            configure_units(router, self.tokenizer, self.config, self.forget, self.retain, self.items)
        need_entropy = self.config.token_entropy
        order = sorted(range(len(self.items)), key=lambda i: len(self.items[i].encoded.input_ids))
        bs = self._batch_size_eval()
        router_only = router_only_rows(self.config, model, self.items)
        todo = [i for i in order if i not in router_only and need_entropy and self.items[i].position_entropy is None]
        for s in tqdm(range(0, len(todo), bs), desc="base pass", disable=not self._show_progress(), leave=False):
            idx = todo[s:s + bs]
            batch = collate_items([self.items[i] for i in idx], self._pad())
            ids = batch["input_ids"].to(model.device)
            mask = batch["attention_mask"].to(model.device)
            # phase II's KL targets come from the same pass (no second base pass per example)
            k = self.config.struct_kl_top_k if self._kl_top_k() else 0
            ent, _, targets = model.training_inputs(ids, mask, kl_top_k=k)
            ent = ent.float().cpu()
            if need_entropy:
                for j, i in enumerate(idx):
                    n = len(self.items[i].encoded.input_ids)
                    self.items[i].position_entropy = ent[j, :n].clone()
                    if targets is not None:
                        self.items[i].kl_targets = (targets[0][j, :n].to(torch.int32).cpu(), targets[1][j, :n].cpu())
        if fit_router:      # the banks hold the routing unit's features as generation reads them
            rows = [i for i in order if self.items[i].twin_of < 0]       # a twin repeats its item's question
            self._fit_question_router(unit_features(model, self.items, rows, bs, self._pad(), self._show_progress()),
                                      name_variant_features(model, self.tokenizer, self.config, self.items,
                                                            self.forget + self.retain, rows, bs, self._pad()))
            for it in self.items:           # a twin is routed as strongly as its question (docs/method.md §4)
                it.route_strength = self.items[it.twin_of].route_strength if it.twin_of >= 0 else it.route_strength
        if not need_entropy:
            return torch.empty(0)
        answer = []
        for it in self.items:
            if it.position_entropy is None or it.twin_of >= 0:      # a router-only retain row; a twin
                continue
            labels = torch.tensor(it.encoded.labels)
            sel = labels[1:] != IGNORE_INDEX
            answer.append(it.position_entropy[:-1][sel])
        return torch.cat(answer) if answer else torch.empty(0)

    def _fit_question_router(self, features: Dict[int, torch.Tensor], variants: Sequence = ()) -> None:
        """The question router's banks and threshold (:func:`alter.train.router_bank.fit_question_router`)."""
        cal = fit_question_router(self.model, self.items, features, variants, self.config)
        if cal is not None:
            self.router_calibration = cal

    # ------------------------------------------------------------------ running
    def _show_progress(self) -> bool:
        return self.progress and self.accelerator.is_main_process

    def _optimizer(self, phase: str) -> torch.optim.Optimizer:
        cfg = self.config
        model = self.model
        shared, experts, routers = [], [], []
        for layer in model.adapter_layers().values():
            if layer.lora_A.requires_grad:
                shared.append(layer.lora_A)
            experts += [b for b in layer.lora_B if b.requires_grad]
            routers += [g for g in layer.router if g.requires_grad]
        lr = cfg.lr_phase1 if phase == "phase1" else cfg.lr_phase2
        groups = [{"params": shared + experts, "lr": lr}]
        if routers:
            groups.append({"params": routers, "lr": cfg.lr_router, "weight_decay": 0.0})
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError(f"{phase}: nothing to train (every adapter parameter is frozen)")
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)

    def _phase_plans(self, forget_domains: Optional[List[int]] = None) -> Dict[str, List[List[int]]]:
        cfg = self.config
        n = len(self.items)
        retain_idx = [i for i in range(n) if self.items[i].domain_id == 0]
        forget_idx = [i for i in range(n) if self.items[i].domain_id != 0 and self.items[i].twin_of < 0
                      and (forget_domains is None or self.items[i].domain_id in forget_domains)]
        plans = {}
        if cfg.phase1_epochs > 0 and forget_domains is None and cfg.token_entropy:
            rows = [i for i in range(n) if self.items[i].twin_of < 0]          # twins train in phase II only
            plans["phase1"] = [[rows[j] for j in s] for s in phase1_plan(len(rows), cfg.batch_size, cfg.phase1_epochs,
                                                                          cfg.seed)]
        # with the question router only forget experts train in phase II, and a retain question reaches them
        # only when routed wrongly: retain examples run only as that anchor (anchor_per_forget)
        per_forget = cfg.anchor_per_forget if self.model.question_router is not None else cfg.retain_per_forget
        # at least phase2_min_steps optimiser steps: a small forget set would otherwise get a handful
        epochs = cfg.phase2_epochs
        per_epoch = max(1, math.ceil(len(forget_idx) / cfg.batch_size))
        if cfg.phase2_min_steps and per_epoch * epochs < cfg.phase2_min_steps:
            epochs = float(math.ceil(cfg.phase2_min_steps / per_epoch))
        twin = {it.twin_of: i for i, it in enumerate(self.items) if it.twin_of >= 0}
        plans["phase2"] = swap_in_twins(phase2_plan(forget_idx, retain_idx, cfg.batch_size, epochs, per_forget,
                                                    cfg.seed), twin, cfg.plain_prompt_share, cfg.seed)
        return plans

    def _state_scope(self, phase: str, batch: dict):
        """The routing-state flags of one training step, held through its backward: activation
        checkpointing recomputes the layers during backward and must see the flags of the forward."""
        cfg, model = self.config, self.model
        if phase == "phase1":
            warm = self._router_warmup()
            return model.state.scope(b_grad_high_only=True, collect_route_loss=warm, route_losses=[],
                                     route_all_tokens=cfg.route_tokens == "all",
                                     route_targets=batch["domain"].to(model.device) if warm else None,
                                     route_class_weights=self._domain_balance() if warm else None)
        if model.question_router is None:
            return model.state.scope(collect_route_loss=cfg.lambda_route > 0, route_losses=[],
                                     route_all_tokens=cfg.route_tokens == "all")
        return contextlib.nullcontext()

    def _step(self, phase: str, batch: dict, train_model) -> Dict[str, torch.Tensor]:
        """Forward and losses of one step; call it inside :meth:`_state_scope`."""
        cfg = self.config
        model = self.model
        device = model.device
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        labels = batch["labels"].to(device)
        pos_ent = batch["position_entropy"].to(device)
        token_ent = shift_entropy(pos_ent, mask) if cfg.token_entropy else pos_ent
        theta = model.theta
        if phase == "phase1":
            # every row on the retain expert: an int, so no layer reads a domain tensor back (no host sync)
            logits = self._outputs(train_model(input_ids=ids, attention_mask=mask, entropy=token_ent, domain=0,
                                               **self._forward_kwargs(fused=True)), fused=True)
            route = model.state.pop_route_loss()
            out = phase1_loss(logits, labels, pos_ent, theta)
            if route is not None:
                out["route"] = route.detach()
                out["loss"] = out["loss"] + cfg.lambda_route * route
            return out
        domain = batch["domain"].to(device)
        kl_targets = (batch["kl_ids"], batch["kl_log_p"]) if "kl_ids" in batch else None
        need_base = kl_targets is None and cfg.lambda_struct > 0
        base_logits = model.base_forward(ids, mask).logits if need_base else None
        fused = not need_base and not cfg.lambda_complement      # these two read the whole logits
        if model.question_router is not None:
            # the gates inference gives a question of this domain (its held-out router strength on the
            # high-entropy mix), not a teacher-forced one-hot: phase II trains what runs at inference
            strength = batch["route_strength"].to(device)
            # anchor rows (retain questions in a phase II batch) go to a forget expert on purpose (the
            # one that trains when a new domain trains alone); a where over every row: no host sync
            spread = self._anchor_experts(len(domain), device)
            route_to = torch.where(domain == 0, spread, domain)
            strength = torch.where(domain == 0, torch.ones_like(strength), strength)
            u = QuestionRouter.forced_logits(route_to, strength, len(model.domains))
            out = train_model(input_ids=ids, attention_mask=mask, entropy=token_ent, router_logits=u,
                              **self._forward_kwargs(fused))
            route = None
        else:
            out = train_model(input_ids=ids, attention_mask=mask, entropy=token_ent, domain=domain,
                              **self._forward_kwargs(fused))
            route = model.state.pop_route_loss()
        logits = self._outputs(out, fused)
        content = batch["content"].to(device) if cfg.hinge_tokens != "all" else None
        return phase2_losses(logits, base_logits, labels, pos_ent, theta, domain != 0, margin=cfg.margin,
                             lambda_forget=cfg.lambda_forget, lambda_retain=cfg.lambda_retain,
                             lambda_struct=cfg.lambda_struct, route_loss=route, lambda_route=cfg.lambda_route,
                             attention_mask=mask, struct_tokens=cfg.struct_tokens, content=content,
                             kl_targets=kl_targets, lambda_complement=cfg.lambda_complement)

    def _repetition_backward(self, idx: List[int], weight: float, train_model) -> Dict[str, torch.Tensor]:
        """``lambda_repetition`` times the on-policy unlikelihood term of the step's forget rows
        (:func:`alter.train.repetition_loss.on_policy_repetition_loss`), back-propagated; returns the logged
        values (``repetition``: the term; ``repetition_rows``: rows with candidates)."""
        rows = [self.items[i].encoded for i in idx if self.items[i].domain_id != 0]
        term, n = on_policy_repetition_loss(self.model, train_model, self.tokenizer, rows, self._pad())
        loss = self.config.lambda_repetition * term
        if n:
            self.accelerator.backward(loss * weight)
        return {"repetition": loss.detach(), "repetition_rows": torch.tensor(float(n), device=self.model.device)}

    def _fused_head(self, fused: bool) -> Optional[torch.nn.Linear]:
        """The LM head the loss applies itself, chunk by chunk (``AlterConfig.fused_lm_head``), or None."""
        return self.model.plain_lm_head() if fused and self.config.fused_lm_head else None

    def _forward_kwargs(self, fused: bool) -> dict:
        return {"use_cache": False, "hidden_only": self._fused_head(fused) is not None}

    def _outputs(self, out, fused: bool):
        """What the losses read: the logits, or the final hidden states with the head (:class:`HeadInput`)."""
        head = self._fused_head(fused)
        return out.logits if head is None else HeadInput(out[0], head.weight, head.bias)

    def _anchor_experts(self, n: int, device) -> torch.Tensor:
        """``[n]`` the forget expert each anchor row of a phase II batch goes through: spread over the forget
        experts, or the new one alone (``train_new_domain``: the others are frozen, a row sent there teaches
        nothing)."""
        if self._only_expert is not None:
            return torch.full((n,), self._only_expert, dtype=torch.long, device=device)
        K = max(1, len(self.model.domains) - 1)
        return 1 + torch.arange(n, device=device) % K

    def _kl_top_k(self) -> bool:
        """Whether phase II takes the structural KL against kept top-k base targets (no base pass per step)."""
        cfg = self.config
        return cfg.struct_kl_top_k > 0 and cfg.lambda_struct > 0 and cfg.token_entropy

    def _domain_balance(self) -> torch.Tensor:
        """Per-domain weights ``n / (E * n_d)`` over the training items: phase I sees every example once,
        mostly retain ones, and an unweighted router CE would mostly learn that prior. Computed once."""
        E = len(self.model.domains)
        cached = getattr(self, "_balance", None)
        if cached is None or cached.numel() != E:
            counts = torch.bincount(torch.tensor([it.domain_id for it in self.items]), minlength=E).float()
            cached = torch.where(counts > 0, counts.sum() / (E * counts.clamp(min=1)), torch.zeros_like(counts))
            self._balance = cached
        return cached

    def _router_warmup(self) -> bool:
        return bool(self.config.router_warmup and self.config.lambda_route > 0 and len(self.model.domains) > 1)

    def _set_trainable(self, phase: str, only_expert: Optional[int]) -> None:
        model = self.model
        if phase == "phase1":
            model.set_trainable(shared=True, experts=[0], routers=self._router_warmup())
        elif only_expert is not None:
            model.set_trainable(shared=False, experts=[only_expert], routers=model.question_router is None)
        elif model.question_router is not None:
            # question routing: phase II trains the forget experts alone; A and B_R keep their phase I
            # values, so deleting a forget expert gives back exactly the phase I model
            model.set_trainable(shared=False, experts=list(range(1, len(model.domains))), routers=False)
        else:
            model.set_trainable(shared=True, experts=list(range(len(model.domains))), routers=True)

    def _run_phase(self, phase: str, plan: List[List[int]], start_step: int, global_step: int,
                   only_expert: Optional[int] = None, resume_from: Optional[Path] = None) -> int:
        acc = self.accelerator
        self._set_trainable(phase, only_expert)
        self._only_expert = only_expert
        optimizer = self._optimizer(phase)
        if resume_from is not None:
            ckpt.restore_optimizer(resume_from, optimizer)
        train_model, optimizer = acc.prepare(self.model, optimizer)
        train_model.train()
        t0 = time.time()
        if self.model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.model.device)
        bar = tqdm(total=len(plan), initial=start_step, desc=f"ALTER {phase}", disable=not self._show_progress())
        running: Dict[str, float] = {}
        stop = None
        if phase == "phase2":
            origin = [[i if self.items[i].twin_of < 0 else self.items[i].twin_of for i in s] for s in plan]
            stop = EarlyStop.build(self.config, self.tokenizer, self.forget, origin,
                                   lambda i: self.items[i].domain_id != 0,
                                   ckpt.read_progress(resume_from).get("stop_window") if resume_from else None,
                                   reference=self.stop_reference)
            if stop is not None and start_step == 0:
                stop.start(self.model)
        if phase == "phase2" and self._kl_top_k():         # the KL's base targets: one base pass per example
            ensure_targets(self.model, [self.items[i] for i in sorted({i for s in plan for i in s})], self._pad(),
                           self.config.struct_kl_top_k, self._batch_size_eval(), self._show_progress())
        for step in range(start_step, len(plan)):
            idx, weight = rank_share(plan[step], acc.process_index, acc.num_processes)
            batch = collate_items([self.items[i] for i in idx], self._pad())
            with self._state_scope(phase, batch):
                out = self._step(phase, batch, train_model)
                acc.backward(out["loss"] * weight)
            if phase == "phase2" and self.config.lambda_repetition > 0 and (step + 1) % self.config.repetition_every == 0:
                out.update(self._repetition_backward(idx, weight, train_model))
            values = step_values(out, acc)            # the step's one host sync
            if not math.isfinite(values["loss"]):
                optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"ALTER {phase} step {step + 1}: the loss is {values['loss']} (not finite); "
                    "stopped before the optimizer step, so the last checkpoint and the model hold the last "
                    "good values")
            if self.config.max_grad_norm > 0:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                acc.clip_grad_norm_(params, self.config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            # the stop rules run every step (their windows need every step's values) but end phase II no
            # earlier than phase2_min_steps: the demo's 15 steps stopped at step 8 with half-formed answers
            stopped = stop is not None and stop.update(step + 1, values, self.model)
            running.update({k: v for k, v in values.items() if k in out and out[k].is_floating_point()})
            if stop is not None:
                running.update(stop.log_values())
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items() if k in ("loss", "forget", "retain", "ce_high")},
                            refresh=False)   # a redraw per step would be a log line per step off a terminal
            if (step + 1) % self.log_every == 0 or step + 1 == len(plan) or stopped:
                self._log({"phase": phase, "step": step + 1, "global_step": global_step, **running,
                           **({"stopped_early": True} if stopped else {})})
            if stopped:
                self.report.phases.setdefault(phase, {"steps": 0, "seconds": 0.0})["stopped_early_at"] = step + 1
            done = stopped or step + 1 == len(plan)
            if self.output_dir is not None and ((self.checkpoint_every and global_step % self.checkpoint_every == 0)
                                                or done):
                self._checkpoint(optimizer, {"phase": phase, "step": step + 1, "global_step": global_step,
                                             "phase_done": done,
                                             "stop_window": stop.state() if stop is not None else None})
            if stopped:
                break
        bar.close()
        train_model.eval()
        self.model.eval()
        stats = self.report.phases.setdefault(phase, {"steps": 0, "seconds": 0.0})
        stats["steps"] += (stats.get("stopped_early_at") or len(plan)) - start_step
        stats["seconds"] += time.time() - t0
        stats["peak_memory_bytes"] = peak_memory_bytes(self.model.device)
        stats["trainable_parameters"] = self.model.trainable_parameter_count()
        self.model.set_trainable()
        return global_step

    def _log(self, record: dict) -> None:
        self.report.log.append(record)
        if self.on_log is not None:
            self.on_log(record)
        if self.output_dir is not None and self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            alter_io.append_jsonl(self.output_dir / "train_log.jsonl", record)

    def _checkpoint(self, optimizer, progress: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        progress = {**progress, "theta": self.model.theta, "domains": self.model.domains,
                    "report_phases": self.report.phases, "config": self.config.to_dict()}
        ckpt.save_checkpoint(self.output_dir / "checkpoints", self.model, optimizer, progress)

    # ------------------------------------------------------------------ entry points
    def train(self, resume: bool = False) -> AlterModel:
        """Run preparation, phase I and phase II; returns the trained :class:`AlterModel`."""
        model = self.prepare()
        plans = self._phase_plans()
        start = {phase: 0 for phase in plans}
        global_step = 0
        restore = {}
        found = ckpt.latest_checkpoint(self.output_dir / "checkpoints") if (resume and self.output_dir) else None
        if found is not None:
            global_step = self._resume_from(found, plans, start, restore)
        with activation_checkpointing(self.model.model, self.config.gradient_checkpointing):
            for phase in ("phase1", "phase2"):
                if phase in plans and start[phase] < len(plans[phase]):
                    global_step = self._run_phase(phase, plans[phase], start[phase], global_step,
                                                  resume_from=restore.get(phase))
        if self.output_dir is not None and self.accelerator.is_main_process:
            model.save_adapter(self.output_dir / "adapter", extra={"train_report": self.report.to_dict()})
        return model

    def _resume_from(self, found: Path, plans: dict, start: dict, restore: dict) -> int:
        """Load a checkpoint into the prepared model; set where each phase starts. Returns the global step."""
        model = self.model
        progress = ckpt.read_progress(found)
        if progress["domains"] != model.domains:
            raise ValueError(f"checkpoint {found} has domains {progress['domains']}, this run has {model.domains}; "
                             "resume with the same data and config")
        saved, now = progress.get("config") or {}, json.loads(json.dumps(self.config.to_dict()))
        changed = [k for k in now if k in saved and saved[k] != now[k] and k not in RESULT_NEUTRAL]
        if changed:
            k = changed[0]
            raise ValueError(f"cannot resume from {found}: {k} changed ({saved[k]!r} -> {now[k]!r}); a resumed run "
                             "must be the run it continues (same config), or start a new --output")
        model.load_adapter_state_dict(alter_io.load_tensors(found / "adapter" / "adapter_model.safetensors",
                                                            device=model.device))
        model.set_theta(progress["theta"])
        self.report.theta = progress["theta"]
        self.report.phases = progress.get("report_phases", {})
        phase, step, done = progress["phase"], progress["step"], progress.get("phase_done", False)
        if phase == "phase2" and "phase1" in start:
            start["phase1"] = len(plans["phase1"])
        start[phase] = len(plans[phase]) if done else step
        if not done:
            restore[phase] = found
        if self._show_progress():
            logger.info(f"resuming from {found} ({phase}, step {step}, global step {progress['global_step']})")
        return int(progress["global_step"])

    def train_new_domain(self, name: str) -> AlterModel:
        """Continual unlearning: add expert ``name`` and train only it and the routers (phase II).

        ``self._raw_model`` must be a trained :class:`AlterModel`; ``forget`` holds the new
        request's examples. Every other parameter stays bit-identical.
        """
        if not isinstance(self._raw_model, AlterModel):
            raise TypeError("train_new_domain needs an already trained AlterModel")
        model = self._raw_model
        index = model.add_forget_domain(name)
        self.forget = [dataclasses.replace(ex, domain=name) for ex in self.forget]
        self.model = None
        self.prepare()
        plans = self._phase_plans(forget_domains=[index])
        self._run_phase("phase2", plans["phase2"], 0, 0, only_expert=index)
        if self.output_dir is not None and self.accelerator.is_main_process:
            model.save_adapter(self.output_dir / "adapter", extra={"train_report": self.report.to_dict()})
        return model
