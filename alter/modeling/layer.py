"""``AlterLinear``: a drop-in adapter around an ``nn.Linear`` (docs/method.md §1, §3, §4).

    y = W0 x + b + s * sum_j w_j(x) B_j (A x),   s = alpha / r

with one shared ``A`` [r, d_in] (Kaiming-uniform, as LoRA's A), experts ``B_j`` [d_out, r]
(expert 0 is the retain expert B_R, experts 1..K forget sub-domains; zero-initialised so a
fresh layer equals its base layer exactly) and a router ``Wg`` (one [d_in] column per expert,
zero-initialised) giving gate logits u = Wg^T x.

Routing:
- ``domain`` given (training): every token uses its domain's expert with weight 1
  (teacher-forced), ``A`` learns only from high-entropy tokens (section 3), and, when the
  routing state asks for it, the router learns the domain from low-entropy tokens with
  detached features.
- otherwise (inference, section 4): ``entropy < theta`` -> the single arg-max expert;
  ``entropy >= theta`` -> retain + top-k forget experts mixed by softmax(u / tau_high).
  ``entropy=None`` treats every token as high entropy.
- ``router_logits`` ``[B, E]`` given (or set on the routing state by the model's question
  router, see :mod:`alter.modeling.question_router`): every token of sequence b takes ``u = router_logits[b]``
  instead of its own ``Wg^T x``; the entropy still picks top-1 (low) or the mix (high). Training
  uses the same path, so phase II trains what runs at inference.
"""

from __future__ import annotations

import math
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import alter_kernels
from alter.modeling.entropy import is_high
from alter.modeling.routing_state import RoutingPlan, RoutingState


class InferenceEntry(NamedTuple):
    """What a layer's inference paths read from its parameters (:meth:`AlterLinear._inference_entry`)."""
    key: tuple                              # the routing parameters it was made for (AlterLinear._plan_key)
    dtype: torch.dtype                      # the adapter's
    device: torch.device
    zero: Optional[tuple]                   # None when no expert is exactly zero, else (per-expert zero flags,
                                            # {used pattern: inert}) for AlterLinear.is_inert
    run: Optional[Callable]                 # alter_kernels.alter_linear_inference_fn; None: the general path


class AlterLinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, r: int = 8, alpha: float = 16.0, num_forget_experts: int = 1, *,
                 theta: Optional[float] = None, tau_high: float = 2.0, top_k: int = 3,
                 dropout: float = 0.0, adapter_dtype: Optional[torch.dtype] = None):
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"base_layer must be an nn.Linear, got {type(base_layer).__name__}")
        if int(r) != r or r <= 0:
            raise ValueError(f"r must be a positive integer, got {r}")
        if int(num_forget_experts) != num_forget_experts or num_forget_experts < 0:
            raise ValueError(f"num_forget_experts must be a non-negative integer, got {num_forget_experts}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if not tau_high > 0:
            raise ValueError(f"tau_high must be > 0, got {tau_high}")
        self.base_layer = base_layer
        for p in self.base_layer.parameters():
            p.requires_grad_(False)
        self.r = int(r)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.r
        self.tau_high = float(tau_high)
        self.top_k = int(top_k)
        self.theta = None if theta is None else float(theta)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.state: Optional[RoutingState] = None
        w = base_layer.weight
        dtype = adapter_dtype or w.dtype
        d_out, d_in = w.shape
        self.lora_A = nn.Parameter(torch.empty(self.r, d_in, dtype=dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.ParameterList()
        self.router = nn.ParameterList()
        for _ in range(1 + int(num_forget_experts)):
            self._append_expert()

    # ------------------------------------------------------------------ structure
    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.base_layer.bias

    @property
    def num_experts(self) -> int:
        return len(self.lora_B)

    def _append_expert(self) -> int:
        A = self.lora_A
        self.lora_B.append(nn.Parameter(torch.zeros(self.out_features, self.r, dtype=A.dtype, device=A.device)))
        self.router.append(nn.Parameter(torch.zeros(self.in_features, dtype=A.dtype, device=A.device)))
        return len(self.lora_B) - 1

    def add_forget_expert(self) -> int:
        """Add a zero-initialised forget expert and router column (continual unlearning); returns its index."""
        return self._append_expert()

    def remove_forget_expert(self, index: int) -> None:
        """Delete forget expert ``index`` (>= 1) and its router column: undoes that expert's forgetting."""
        if not 1 <= index < self.num_experts:
            raise ValueError(f"forget expert index must be in [1, {self.num_experts - 1}] (0 is the retain expert), "
                             f"got {index}")
        keep_b = [p for i, p in enumerate(self.lora_B) if i != index]
        keep_r = [p for i, p in enumerate(self.router) if i != index]
        self.lora_B = nn.ParameterList(keep_b)
        self.router = nn.ParameterList(keep_r)

    def merge(self) -> None:
        raise NotImplementedError(
            "AlterLinear cannot be merged into the base weight: its expert mix is chosen per token from the token's "
            "entropy and the router, so no single weight matrix reproduces it")

    def unmerge(self) -> None:
        raise NotImplementedError("AlterLinear is never merged (see merge()), so there is nothing to unmerge")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"experts={self.num_experts}, scaling={self.scaling:g}")

    # ------------------------------------------------------------------ forward
    def _expert_list(self) -> List[nn.Parameter]:
        """The experts as a plain list (iterating a ParameterList costs a string-index lookup per item,
        which per layer and per decoded token adds up); rebuilt when the list is replaced or grows."""
        cached = getattr(self, "_expert_list_cache", None)
        if cached is None or cached[0] is not self.lora_B or len(cached[1]) != len(self.lora_B):
            cached = (self.lora_B, list(self.lora_B))
            self._expert_list_cache = cached
        return cached[1]

    def _inference_cache(self):
        """``(B [E, d_out, r], B_cat [d_out, E*r], zero flags [E])``, kept until an expert changes
        (its version counter or storage moves): at inference the stack, the expand layout and which
        experts are exactly zero are read once, not per forward."""
        experts = self._expert_list()
        key = tuple((id(p), p._version, p.data_ptr()) for p in experts)
        cached = getattr(self, "_stack_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                B = torch.stack(experts)
                E, d_out, r = B.shape
                B_cat = B.permute(1, 0, 2).reshape(d_out, E * r).contiguous()
                zero = [not bool(p.any()) for p in experts]
            cached = (key, B, B_cat, zero)
            self._stack_cache = cached
        return cached[1:]

    def stacked_experts(self) -> torch.Tensor:
        """``[E, d_out, r]``; at inference the stack is kept until an expert changes (its version moves)."""
        if torch.is_grad_enabled():
            return torch.stack(self._expert_list())
        return self._inference_cache()[0]

    def router_weight(self) -> torch.Tensor:
        return torch.stack(list(self.router))                        # [E, d_in]

    def _token_values(self, value: Optional[torch.Tensor], lead: torch.Size, name: str) -> Optional[torch.Tensor]:
        """Broadcast a per-token (or per-sequence) tensor to the leading dims of x, flattened."""
        if value is None:
            return None
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        if value.dim() < len(lead) and value.shape == lead[:value.dim()]:
            value = value.reshape(value.shape + (1,) * (len(lead) - value.dim()))
        try:
            return value.expand(lead).reshape(-1)
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(value.shape)} does not match the tokens of x "
                             f"{tuple(lead)}") from None

    def _theta(self) -> float:
        theta = self.theta
        if theta is None and self.state is not None:
            theta = self.state.theta
        if theta is None:
            raise ValueError("AlterLinear.theta is not set: pass theta=... to the constructor (or let alter.wrap "
                             "compute it) before routing by entropy")
        return float(theta)

    def forward(self, x: torch.Tensor, entropy: Optional[torch.Tensor] = None,
                domain: Optional[torch.Tensor] = None, router_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        state = self.state
        if state is not None:
            if not state.enabled:
                return self.base_layer(x)
            if state.plan is not None and entropy is None and domain is None and router_logits is None:
                out = self._forward_on_plan(x, state)
                if out is not None:
                    return out
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have last dimension {self.in_features}, got shape {tuple(x.shape)}")
        if entropy is None and state is not None:
            entropy = state.entropy
        if domain is None and state is not None:
            domain = state.domain
        if router_logits is None and state is not None:
            router_logits = state.router_logits
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        shared = self._shared_gates(x2, lead, entropy, domain, router_logits)
        if shared is not None:                       # the forward's routing plan, computed by the first layer
            gates, a_mask, b_mask = shared, None, None
        else:
            ent = self._token_values(entropy, lead, "entropy")
            if ent is not None:
                ent = ent.to(device=x.device, dtype=torch.float32)
            if domain is not None:
                gates, a_mask, b_mask = self._train_gates(x2, lead, ent, domain)
            else:
                gates, a_mask, b_mask = self._infer_gates(x2, ent, lead, router_logits), None, None
                if state is not None and router_logits is state.router_logits and entropy is state.entropy:
                    # at inference the plan also records which experts any token uses (one host read per
                    # forward), so that a layer whose used experts are all zero skips its adapter, and, for
                    # a single token (a decoded token of one sequence), its gates as Python floats, so that
                    # the later layers run with their experts folded for them (alter_linear_inference_fn)
                    used = row = None
                    if not torch.is_grad_enabled():
                        if gates.shape[0] == 1:
                            row = tuple(gates[0].tolist())
                            used = tuple(g != 0 for g in row)
                        else:
                            used = tuple((gates != 0).any(0).tolist())
                    state.plan = RoutingPlan(entropy, router_logits, tuple(lead), self._plan_key(), gates, used, row)
        A = self.lora_A
        if not torch.is_grad_enabled():
            # inference: the layer's entry (expand layout cached until an expert changes, zero flags, run)
            entry = self._inference_entry(None if state is None else state.inference_entries)
            zero, run = entry.zero, entry.run
            on_plan = shared is not None or (state is not None and state.plan is not None and state.plan.gates is gates)
            if on_plan and zero is not None and state.plan.used is not None and self.is_inert(state.plan.used, zero):
                return self.base_layer(x)            # every expert this forward uses is exactly zero here
            if run is not None and x2.dtype == A.dtype:
                return run(x2, gates).reshape(*lead, self.out_features)
        w, b = self.base_layer.weight, self.base_layer.bias
        same_dtype = A.dtype == x2.dtype == w.dtype and (b is None or b.dtype == w.dtype)
        B = self.stacked_experts()
        adapter_in = x2 if self.dropout is None else self.dropout(x2)
        if self.dropout is None and same_dtype:
            out = alter_kernels.fused_alter_linear(x2, w, b, A, B, gates, self.scaling,
                                                   a_grad_mask=a_mask, b_grad_mask=b_mask)
        else:
            delta = alter_kernels.asym_lora(adapter_in.to(A.dtype), A, B, gates.to(A.dtype), self.scaling,
                                            a_grad_mask=a_mask, b_grad_mask=b_mask)
            out = self.base_layer(x2) + delta.to(x2.dtype)
        return out.reshape(*lead, self.out_features)

    def _forward_on_plan(self, x: torch.Tensor, state: RoutingState) -> Optional[torch.Tensor]:
        """The inference forward of a layer after the first in a question-routed forward (a decoded
        token runs ~210 of these in SmolLM2, so every attribute read here shows in the token's time):
        the gates are the plan's, so the layer checks that the plan is this forward's and fits its
        routing parameters, then runs base GEMM + shrink/gate + expand through its prepared entry
        (:meth:`_inference_entry`); for a single token, with the experts folded for its gates (the
        plan's ``row``: base GEMM + shrink + one expand). None when the plan does not apply (training, another forward,
        other routing parameters, a dtype or dropout that needs the general path), which then
        decides. Same result as the general path (tests/test_layer_plan.py)."""
        ent_ref, u_ref, plan_lead, key, gates, used, row = state.plan
        if (used is None or ent_ref is not state.entropy or u_ref is not state.router_logits
                or state.domain is not None or torch.is_grad_enabled()):
            return None
        kept = state.inference_entries                  # one generate() call: kept from its first token
        entry = None if kept is None else kept.get(self)
        entry_key, dtype, device, zero, run = entry if entry is not None else self._inference_entry(kept)
        if (entry_key != key or x.shape[:-1] != plan_lead or x.dtype != dtype or gates.device != device
                or run is None):
            return None
        if zero is not None and self.is_inert(used, zero):
            return self.base_layer(x)            # every expert this forward uses is exactly zero here
        out = run(x.reshape(-1, x.shape[-1]), gates if row is None else row)
        return out.view(*plan_lead, out.shape[-1])

    def _inference_entry(self, kept: Optional[dict]) -> InferenceEntry:
        """What the inference paths need, read from the parameters (:class:`InferenceEntry`). ``kept``
        (``RoutingState.inference_entries``, a fresh dict for one ``generate`` call, during which the
        parameters cannot change) keeps each layer's entry for every token of that call; without it the
        entry is made per forward. ``run`` is ``alter_kernels.alter_linear_inference_fn`` over the cached
        expand layout; None when the adapter's dtype or device differs from the base layer's or dropout
        is active (general path)."""
        if kept is not None:
            entry = kept.get(self)
            if entry is not None:
                return entry
        _, B_cat, zero = self._inference_cache()
        A, base = self.lora_A, self.base_layer
        w, b = base.weight, base.bias
        run = None
        if (A.dtype == w.dtype and (b is None or b.dtype == w.dtype) and A.device == w.device
                and (self.dropout is None or not self.training)):
            run = alter_kernels.alter_linear_inference_fn(w, b, A, B_cat, self.scaling)
        entry = InferenceEntry(self._plan_key(), A.dtype, A.device, (list(zero), {}) if any(zero) else None, run)
        if kept is not None:
            kept[self] = entry
        return entry

    def _plan_key(self) -> tuple:
        theta = self.theta if self.theta is not None else (self.state.theta if self.state is not None else None)
        return (self.num_experts, self.tau_high, self.top_k, theta)

    def _shared_gates(self, x2, lead, entropy, domain, router_logits) -> Optional[torch.Tensor]:
        """The gates another layer already computed in this forward, when they are the same here.

        With question routing (per-sequence ``router_logits`` from the routing state, no teacher
        forcing) the gates depend only on the tokens' entropies, the router logits and the routing
        hyperparameters, which every layer shares: the first layer computes them (its ``route``), the
        others reuse them. The plan lives on the routing state next to the tensors it was made from
        and is recognised by identity, so a new forward (new tensors) computes a new one."""
        state = self.state
        if state is None or domain is not None or router_logits is None or state.plan is None:
            return None
        ent_ref, u_ref, plan_lead, key, gates, _, _ = state.plan
        if (ent_ref is entropy and u_ref is router_logits and plan_lead == tuple(lead) and key == self._plan_key()
                and gates.device == x2.device):
            return gates
        return None

    def _zero_experts(self) -> List[bool]:
        """Which experts are exactly zero (an untrained retain expert with phase I off, say); cached
        until a parameter changes (its version counter moves), so read from the device once."""
        return self._inference_cache()[2]

    def is_inert(self, used: Sequence[bool], zero: Optional[tuple] = None) -> bool:
        """True when every expert flagged in ``used`` (``[E]`` bools) is exactly zero in this layer, so the
        adapter adds nothing to tokens routed to those experts only. ``zero``: an inference entry's
        ``(per-expert zero flags, {used pattern: answer})``, where the answer is remembered per ``used``
        pattern (a generation sees one or two: its questions' experts on low- and high-entropy tokens);
        without it the flags are read from the layer. Used per forward and by generation's cache reuse."""
        if zero is None:
            return len(used) == self.num_experts and all(z or not u for u, z in zip(used, self._zero_experts()))
        flags, answers = zero
        inert = answers.get(used)
        if inert is None:
            inert = answers[used] = len(used) == self.num_experts and all(z or not u for u, z in zip(used, flags))
        return inert

    def _sequence_logits(self, logits: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """Per-sequence router logits ``[B, E]`` broadcast to every token ``[N, E]`` of x (leading dims ``lead``)."""
        E = self.num_experts
        if logits.dim() != 2 or logits.shape[1] != E:
            raise ValueError(f"router_logits must be [B, {E}] (one row per sequence), got {tuple(logits.shape)}")
        rows = lead[0]
        if len(lead) == 1:                          # x is [N, d]: one row of logits per token
            if logits.shape[0] != rows:
                raise ValueError(f"router_logits has {logits.shape[0]} rows for {rows} tokens")
            return logits
        if logits.shape[0] != rows:
            if rows % logits.shape[0]:
                raise ValueError(f"router_logits has {logits.shape[0]} rows for a batch of {rows}")
            logits = logits.repeat_interleave(rows // logits.shape[0], dim=0)   # num_return_sequences
        shape = (rows,) + (1,) * (len(lead) - 1) + (E,)
        return logits.reshape(shape).expand(*lead, E).reshape(-1, E)

    def _infer_gates(self, x2: torch.Tensor, ent: Optional[torch.Tensor], lead: Optional[torch.Size] = None,
                     router_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        E = self.num_experts
        if E == 1:
            return torch.ones(x2.shape[0], 1, dtype=x2.dtype, device=x2.device)
        if router_logits is not None:
            u = self._sequence_logits(router_logits.to(device=x2.device, dtype=torch.float32),
                                      lead if lead is not None else x2.shape[:1])
        else:
            u = F.linear(x2.to(self.lora_A.dtype), self.router_weight())
        if ent is None:
            ent = torch.full((x2.shape[0],), float("inf"), device=x2.device)
            theta = 0.0
        else:
            theta = self._theta()
        return alter_kernels.route(ent, u, theta, tau_high=self.tau_high, top_k=self.top_k,
                                   retain_index=0, mode="infer")

    def _train_gates(self, x2, lead, ent, domain):
        E = self.num_experts
        N = x2.shape[0]
        if isinstance(domain, int):     # one expert for every token: checked here, no tensor to read
            if not 0 <= domain < E:
                raise ValueError(f"domain indices must be in [0, {E}), got {domain}")
            ids = torch.full((N,), domain, dtype=torch.long, device=x2.device)
            domain = None
        else:
            domain = torch.as_tensor(domain, device=x2.device)
        if domain is None:
            gates = F.one_hot(ids, E).to(x2.dtype)
        elif domain.is_floating_point():
            if domain.shape[-1] != E:
                raise ValueError(f"a gate distribution passed as domain must end in E={E} experts, got shape "
                                 f"{tuple(domain.shape)}")
            gates = self._token_values(domain, lead + (E,), "domain").view(N, E)
            sums = gates.sum(-1)
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
                worst = (sums - 1).abs().argmax().item()
                raise ValueError(f"training gate rows must sum to 1; row {worst} sums to {sums[worst].item():.4f}")
            ids = None
        else:
            ids = self._token_values(domain.long(), lead, "domain")
            if bool(((ids < 0) | (ids >= E)).any()):
                raise ValueError(f"domain indices must be in [0, {E}), got values "
                                 f"{sorted(set(ids.unique().tolist()))}")
            gates = F.one_hot(ids, E).to(x2.dtype)
        high = None
        if ent is not None:
            high = is_high(ent, self._theta())
        a_mask = high if (self.state is None or self.state.shared_high_only) else None
        b_mask = high if (self.state is not None and self.state.b_grad_high_only) else None
        state = self.state
        if state is not None and state.collect_route_loss and ids is not None and E > 1:
            targets = ids
            if state.route_targets is not None:
                targets = self._token_values(torch.as_tensor(state.route_targets, device=x2.device).long(), lead,
                                             "route_targets")
            self._add_route_loss(x2, targets, high, state)
        return gates, a_mask, b_mask

    def _add_route_loss(self, x2, ids, high, state: RoutingState) -> None:
        rows = torch.ones_like(ids, dtype=torch.bool) if (high is None or state.route_all_tokens) else ~high
        if state.token_mask is not None:
            rows = rows & state.token_mask.reshape(-1).to(rows.device)
        n = int(rows.sum())
        if n == 0:
            return
        u = F.linear(x2[rows].detach().to(self.lora_A.dtype), self.router_weight())
        weights = state.route_class_weights
        if weights is None:
            loss = F.cross_entropy(u.float(), ids[rows], reduction="sum")
        else:  # a weighted mean: sum_i w_(y_i) CE_i / sum_i w_(y_i)
            weights = weights.to(device=u.device, dtype=torch.float32)
            loss = F.cross_entropy(u.float(), ids[rows], weight=weights, reduction="sum")
            n = weights[ids[rows]].sum().detach()
        state.route_losses.append((loss, n))

    # ------------------------------------------------------------------ statistics
    def expert_parameters(self, index: int) -> List[nn.Parameter]:
        return [self.lora_B[index], self.router[index]]
