"""Representation Misdirection for Unlearning (RMU): scramble the forget set's hidden states at one layer.

With h_L(x) the output of transformer block L (the residual stream after it), u a fixed random
unit vector (entries uniform in [0, 1), normalised; drawn once per run from the run's seed) and c
the steering coefficient:

    L_forget = mean_i (1/|x_i|) sum_t (1/d) || h_L(x_{i,t}) - c u ||^2            (forget batch)
    L_retain = mean_i (1/|x_i|) sum_t (1/d) || h_L(x_{i,t}) - h_L^ref(x_{i,t}) ||^2   (retain batch)
    L = gamma * L_forget + alpha * L_retain

Only the MLP weights of blocks L-2, L-1, L train. Li et al. 2024, "The WMDP Benchmark: Measuring and
Reducing Malicious Use with Unlearning" (ICML), section 5 and its code (centerforaisafety/wmdp,
rmu/unlearn.py: ``layer_id=7``, ``layer_ids=5,6,7``, ``param_ids=6`` = ``mlp.down_proj.weight`` of
each of those blocks, ``alpha=100``, ``lr=5e-5``, ``torch.nn.functional.mse_loss``, i.e. the mean
over tokens and hidden units as written above). The tokens t are the answer tokens (labels != -100),
as open-unlearning's ``RMU.compute_activation_loss`` does for QA data; raw-text examples count every
token.

Defaults and why (for a ~135M model such as SmolLM2-135M, 30 blocks, d = 576):

- ``layer`` None -> ``round(7/32 * num_layers)`` (the paper's block 7 of 32; block 7 of SmolLM2's 30).
- ``params = ("mlp.down_proj",)``: the original's ``param_ids=6``; ``("mlp.",)`` trains the whole MLP.
- ``steering_coeff`` None -> adaptive: ``c = steering_scale * mean ||h_L(x)||`` over the first forget
  batch's answer tokens (before any update, so this is the frozen model's norm), with
  ``steering_scale = 5`` — Adaptive RMU (Dang et al. 2025, "On Effects of Steering Latent
  Representation for Large Language Model Unlearning", AAAI; ``--scale 5.0``). The WMDP constant
  (c = 6.5 for Zephyr-7B, 20 in the code's defaults) is tied to that model's activation scale;
  SmolLM2-135M's block-7 outputs have norms of about 105-120 (measured on QA text, this machine),
  so a fixed c of 6.5-20 would pull them *towards* zero rather than misdirect them. A float fixes c.
- ``alpha = 100`` (the WMDP code's default), ``gamma = 1``, learning rate 5e-5 (WMDP and
  open-unlearning's WMDP experiment). These are not tuned for SmolLM2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Tuple

import torch

from alter.baselines.base import UnlearningMethod, set_all_trainable
from alter.modeling.blocks import block_output, decoder_layers
from alter.baselines.losses import masked_activation_mse
from alter.data.prompts import IGNORE_INDEX


def default_layer(num_layers: int) -> int:
    """The paper's depth ratio (block 7 of 32), at least block 0."""
    return min(num_layers - 1, max(0, int(round(7 * num_layers / 32))))


def random_direction(dim: int, seed: int) -> torch.Tensor:
    """Unit vector with independent entries uniform in [0, 1) before normalisation (as WMDP's RMU)."""
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(dim, generator=gen, dtype=torch.float32)
    return u / u.norm()


@dataclass
class RMU(UnlearningMethod):
    name: ClassVar[str] = "rmu"
    citation: ClassVar[str] = ("Li et al. 2024, The WMDP Benchmark (RMU); adaptive steering coefficient: Dang et "
                               "al. 2025, On Effects of Steering Latent Representation for LLM Unlearning")
    default_lr: ClassVar[float] = 5e-5
    needs_reference: ClassVar[bool] = True
    layer: Optional[int] = None
    update_layers: Optional[Tuple[int, ...]] = None
    params: Tuple[str, ...] = ("mlp.down_proj",)
    steering_coeff: Optional[float] = None
    steering_scale: float = 5.0
    alpha: float = 100.0
    gamma: float = 1.0

    def __post_init__(self):
        self._resolved_layer: Optional[int] = None
        self._resolved_update: List[int] = []
        self._coeff: Optional[float] = None
        self._direction: Optional[torch.Tensor] = None
        if self.steering_coeff is not None and self.steering_coeff <= 0:
            raise ValueError(f"steering_coeff must be > 0 (or None for adaptive), got {self.steering_coeff}")
        if self.steering_scale <= 0:
            raise ValueError(f"steering_scale must be > 0, got {self.steering_scale}")

    # ------------------------------------------------------------------ set-up
    def prepare(self, model, tokenizer, *, seed: int = 0):
        blocks = decoder_layers(model)
        n = len(blocks)
        layer = default_layer(n) if self.layer is None else int(self.layer)
        if not 0 <= layer < n:
            raise ValueError(f"RMU layer {layer} is out of range: the model has {n} blocks (0..{n - 1})")
        if self.update_layers is not None:
            update = [int(i) for i in self.update_layers]
        else:
            update = list(range(max(0, layer - 2), layer + 1))
        bad = [i for i in update if not 0 <= i <= layer]
        if bad or not update:
            raise ValueError(f"RMU update_layers {update} must be non-empty and lie in 0..{layer} (blocks after "
                             "the steered layer cannot change its output)")
        set_all_trainable(model, False)
        chosen = 0
        for i in update:
            for pname, p in blocks[i].named_parameters():
                if any(pname.startswith(prefix) for prefix in self.params):
                    p.requires_grad_(True)
                    chosen += 1
        if not chosen:
            raise ValueError(f"RMU: no parameter of blocks {update} starts with {list(self.params)}")
        self._resolved_layer, self._resolved_update = layer, update
        self._coeff = self.steering_coeff
        self._direction = random_direction(model.config.hidden_size, seed)
        return model

    def hyperparameters(self) -> dict:
        out = super().hyperparameters()
        out.update(layer_used=self._resolved_layer, update_layers_used=self._resolved_update,
                   steering_coeff_used=self._coeff)
        return out

    # ------------------------------------------------------------------ loss
    def control_vector(self, forget_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``c * u`` as ``[1, 1, d]``; on the first call of an adaptive run, fixes c from the batch."""
        if self._coeff is None:
            norms = forget_hidden.detach().float().norm(dim=-1)[mask.to(forget_hidden.device)]
            self._coeff = float(self.steering_scale * norms.mean())
        return (self._coeff * self._direction).to(forget_hidden.device).view(1, 1, -1)

    def loss(self, model, forget_batch, retain_batch, reference):
        if self._direction is None:
            raise RuntimeError("RMU.prepare(model, ...) must run before RMU.loss")
        layer = self._resolved_layer
        f_mask = forget_batch["labels"] != IGNORE_INDEX
        h_f = block_output(model, layer, forget_batch)
        forget = masked_activation_mse(h_f, self.control_vector(h_f, f_mask), f_mask)
        r_mask = retain_batch["labels"] != IGNORE_INDEX
        h_r = block_output(model, layer, retain_batch)
        with reference.use() as ref:
            h_ref = block_output(ref, layer, retain_batch)
        retain = masked_activation_mse(h_r, h_ref, r_mask)
        return {"loss": self.gamma * forget + self.alpha * retain, "forget_mse": forget.detach(),
                "retain_mse": retain.detach()}
