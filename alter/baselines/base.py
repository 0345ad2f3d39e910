"""What every baseline is: a named, cited method with its defaults, trainable set and loss.

Two kinds share one entry point (:func:`alter.baselines.run_unlearning`):

- :class:`UnlearningMethod` — trained by the shared runner on ALTER's phase-II pairing (each step:
  ``batch_size`` forget examples + ``round(batch_size * retain_per_forget)`` retain examples).
  A subclass says which parameters train (:meth:`UnlearningMethod.prepare`) and the loss of one
  step (:meth:`UnlearningMethod.loss`) from the forget batch, the retain batch and, when it asks
  for one, a frozen reference model. Two optional hooks: :meth:`UnlearningMethod.before_training`
  (once, before the first step: may replace the encoded forget items, e.g. WHP's generic labels)
  and :meth:`UnlearningMethod.finalize` (once, after the last step: e.g. task-vector negation).
- :class:`SupervisedMethod` — plain fine-tuning through :func:`alter.train.supervised.finetune`
  (``finetune``: the model to unlearn from; ``retain``: the gold standard), no forget loss.

Hyperparameters are dataclass fields, so ``method.hyperparameters()`` records them in the report.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
from typing import Callable, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn


def forward_logits(model: nn.Module, batch: dict) -> torch.Tensor:
    """``[B, T, V]`` logits of ``model`` on a collated batch (no labels: no built-in loss is computed)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


class Reference:
    """The frozen model the method compares against (the model as it was before unlearning).

    Full-parameter methods: a deep copy made once, every parameter frozen, in eval mode.
    LoRA methods: the trained model itself inside PEFT's ``disable_adapter()`` context (the base
    weights never change, so no copy is needed). Always run without gradient.
    """

    def __init__(self, module: nn.Module, context: Optional[Callable[[], contextlib.AbstractContextManager]] = None):
        self.module = module
        self._context = context

    @classmethod
    def frozen_copy(cls, model: nn.Module) -> "Reference":
        ref = copy.deepcopy(model)
        for p in ref.parameters():
            p.requires_grad_(False)
        ref.eval()
        return cls(ref)

    @classmethod
    def adapters_disabled(cls, peft_model: nn.Module) -> "Reference":
        return cls(peft_model, context=peft_model.disable_adapter)

    @property
    def is_copy(self) -> bool:
        return self._context is None

    @contextlib.contextmanager
    def use(self) -> Iterator[nn.Module]:
        """The reference module, with gradients off (and adapters off for LoRA methods)."""
        ctx = self._context() if self._context is not None else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            yield self.module

    def logits(self, batch: dict) -> torch.Tensor:
        with self.use() as module:
            return forward_logits(module, batch)


def adamw(params: List[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The runner's optimiser: AdamW at a constant ``lr`` (fused where the device supports it)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@dataclasses.dataclass
class ForgetItems:
    """What the runner hands :meth:`UnlearningMethod.before_training`: the encoded forget examples and how
    the run batches and optimises them (so a method's own one-off training follows the run's settings)."""

    items: List                                 # one TrainItem per forget example, in the run's forget order
    collate: Callable[[Sequence], dict]         # a list of items -> a padded batch on the model's device
    batch_size: int
    seed: int
    weight_decay: float
    max_grad_norm: float


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_all_trainable(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


@dataclasses.dataclass
class Method(abc.ABC):
    """A baseline: its registry ``name``, the paper it comes from, and its default schedule."""

    name: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    default_lr: ClassVar[float] = 1e-5
    default_epochs: ClassVar[float] = 3.0
    default_batch_size: ClassVar[int] = 4

    def hyperparameters(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class UnlearningMethod(Method):
    """A method trained by the shared runner on paired forget / retain batches.

    Class attributes: ``needs_reference`` (the runner builds a frozen :class:`Reference`),
    ``uses_peft`` (``prepare`` wraps the model with PEFT; the reference then disables adapters).
    """

    needs_reference: ClassVar[bool] = False
    uses_peft: ClassVar[bool] = False

    @property
    def uses_retain(self) -> bool:
        """Whether the loss reads the retain batch (the runner skips drawing one otherwise)."""
        return True

    def prepare(self, model: nn.Module, tokenizer, *, seed: int = 0) -> nn.Module:
        """The model to train (called once per run, before the reference is made).

        Full-parameter default: every parameter trainable. ``seed`` is the run's seed, for
        methods that draw something fixed for the run (RMU's random direction).
        """
        set_all_trainable(model, True)
        return model

    def prepare_data(self, forget: Sequence, retain: Sequence, seed: int) -> Tuple[List, List]:
        """The examples actually trained on (random labels rewrites the forget answers)."""
        return list(forget), list(retain)

    def before_training(self, model: nn.Module, reference: Optional[Reference],
                        forget: ForgetItems) -> Optional[List]:
        """Called once by the runner before the first step (its time counts as training time).

        Returns the forget items the steps train on instead of ``forget.items`` (same length and order),
        or None to keep them, the default. WHP reinforces a copy of the model here and relabels the
        forget answers with its generic predictions.
        """
        return None

    @abc.abstractmethod
    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: Optional[dict],
             reference: Optional[Reference]) -> Dict[str, torch.Tensor]:
        """``{"loss": scalar to minimise, other scalar parts (detached) to log}`` for one step."""

    def finalize(self, model: nn.Module, reference: Optional[Reference]) -> None:
        """Called once after the last step, before the model is frozen and saved (task-vector negation
        rewrites the weights here); nothing by default."""


@dataclasses.dataclass
class SupervisedMethod(Method):
    """Plain supervised fine-tuning of every parameter (no forget loss), run by ``finetune``."""

    default_lr: ClassVar[float] = 2e-4
    default_epochs: ClassVar[float] = 5.0
    default_batch_size: ClassVar[int] = 8
    warmup_ratio: float = 0.1

    @abc.abstractmethod
    def training_examples(self, forget: Sequence, retain: Sequence) -> List:
        """The examples to fine-tune on."""
