"""Per-forward routing inputs shared by every adapted layer of one model.

A transformer calls its linear layers with the hidden states only; the per-token entropies
and the training domains reach each :class:`~alter.modeling.layer.AlterLinear` through one
``RoutingState`` object that the model wrapper fills before a forward and clears after it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, List, NamedTuple, Optional, Tuple

import torch


class RoutingPlan(NamedTuple):
    """The gates of one forward, computed by its first question-routed layer and reused by the others
    (:meth:`AlterLinear._shared_gates`, :meth:`AlterLinear._forward_on_plan`); recognised by the
    identity of the tensors it was made from, so a new forward (new tensors) makes a new one."""
    entropy: Optional[torch.Tensor]         # the routing state's entropy it was made from
    router_logits: torch.Tensor             # the routing state's router logits it was made from
    lead: Tuple[int, ...]                   # the token shape (x's leading dims)
    key: tuple                              # the routing parameters (AlterLinear._plan_key)
    gates: torch.Tensor                     # [N, E]
    used: Optional[Tuple[bool, ...]]        # the experts any token uses (inference only, else None)
    row: Optional[Tuple[float, ...]]        # a single token's gates as Python floats (inference, N = 1)


@dataclass
class RoutingState:
    theta: Optional[float] = None
    enabled: bool = True
    entropy: Optional[torch.Tensor] = None          # [B, T] per-token entropy (docs/method.md §2)
    domain: Optional[torch.Tensor] = None           # [B] or [B, T] expert index (teacher-forced training)
    token_mask: Optional[torch.Tensor] = None       # [B, T] bool: real (non-pad) tokens
    router_logits: Optional[torch.Tensor] = None    # [B, E] per-question router logits (question router),
                                                    # used by every layer instead of its own router
    b_grad_high_only: bool = False                  # phase I: experts too learn only from high-entropy tokens
    shared_high_only: bool = True                   # A learns only from high-entropy tokens (False: AsymLoRA)
    collect_route_loss: bool = False                # phase II: each layer adds its router CE (section 3)
    route_all_tokens: bool = False                  # router CE on every token instead of low-entropy ones
    route_targets: Optional[torch.Tensor] = None    # [B] router CE labels when the gates are forced elsewhere
    route_class_weights: Optional[torch.Tensor] = None  # [E] per-domain weights of the router CE (balancing)
    route_losses: List[Tuple[torch.Tensor, int]] = field(default_factory=list)
    # the forward's routing plan, made by the first question-routed layer and reused by the others
    plan: Optional[RoutingPlan] = None
    # set by generation to a fresh dict for one generate() call, during which the adapter's parameters
    # cannot change: each layer keeps there what it reads from them, once per call instead of once per
    # token (AlterLinear._inference_entry)
    inference_entries: Optional[dict] = None

    @contextlib.contextmanager
    def scope(self, **values) -> Iterator["RoutingState"]:
        """Set fields for one forward and restore them afterwards (also on error)."""
        saved = {k: getattr(self, k) for k in values}
        for k, v in values.items():
            setattr(self, k, v)
        try:
            yield self
        finally:
            for k, v in saved.items():
                setattr(self, k, v)

    def pop_route_loss(self) -> Optional[torch.Tensor]:
        """Mean router cross-entropy over every layer and low-entropy token since the last call."""
        if not self.route_losses:
            return None
        total = sum(loss for loss, _ in self.route_losses)
        count = sum(float(n) for _, n in self.route_losses)
        self.route_losses = []
        return total / max(count, 1)
