"""Single LoRA (LoRA): a rank-8 PEFT LoRA on every linear layer of the blocks, trained with GradDiff.

    W = W0 + (lora_alpha / r) * B A,      r = 8, lora_alpha = 16, dropout 0, W0 frozen
    L = -gamma * NLL_forget + alpha * NLL_retain          (gamma = alpha = 1)

Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR); the loss is
:mod:`alter.baselines.graddiff` (Liu et al. 2022). It is the ALTER paper's "LoRA" column: the same
rank and targets as ALTER's adapter (docs/method.md §1) but one A and one B for everything, so
forgetting and retaining share every adapter parameter. ``target_modules="all-linear"`` is PEFT's
selection of every linear layer except the output head. Only ``lora_`` parameters train; the base
weights stay bit-identical, and a reference model (none is needed here) would be the same model
inside PEFT's ``disable_adapter()``. Learning rate 1e-4 by default (adapters train at a larger
rate than full weights; ALTER's own phase II uses 1e-3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Union

from alter.baselines.graddiff import GradDiff


@dataclass
class LoRAGradDiff(GradDiff):
    name: ClassVar[str] = "lora"
    citation: ClassVar[str] = ("Hu et al. 2022, LoRA: Low-Rank Adaptation of Large Language Models; loss: Liu et al. "
                               "2022 (GradDiff)")
    default_lr: ClassVar[float] = 1e-4
    uses_peft: ClassVar[bool] = True
    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: Union[str, List[str]] = "all-linear"

    def prepare(self, model, tokenizer, *, seed: int = 0):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=self.r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                            target_modules=self.target_modules, bias="none", task_type="CAUSAL_LM")
        return get_peft_model(model, config)
