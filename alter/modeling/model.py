"""``alter.wrap``: put ALTER adapters into any Hugging Face causal LM and keep it a normal model.

The wrapped model (:class:`AlterModel`) answers ``model(input_ids, attention_mask, labels)``
and ``model.generate(...)`` like the original. Entropy plumbing (docs/method.md §2):

- a plain forward first runs the *base* model (adapters off, no grad) over the batch and gives
  every adapted layer the entropy of each token, H_t = S_q(softmax(logits[t-1])), the first
  real token of each row counting as high entropy;
- ``generate`` does that for the prompt only; each new token's entropy comes from the logits
  that produced it (see :mod:`alter.modeling.routed_generation`).

Save and load (PEFT's names): ``save_pretrained(dir)`` writes ``adapter_config.json`` and
``adapter_model.safetensors`` atomically; ``AlterModel.from_pretrained(base, dir_or_hub_id)`` wraps a
base model and loads them; ``push_to_hub``; ``unload()`` / ``get_base_model()`` give the base model
back (the folder format and the Hub: :mod:`alter.modeling.persistence`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

import alter_kernels
from alter.config import AlterConfig
from alter.modeling import persistence
from alter.modeling.base_model import (AdapterUnloadedError, BaseModelAccess, _grad_flags,  # noqa: F401
                                      _set_grad_flags, _strip_adapters)
from alter.modeling.blocks import BlockReached, capture_block_output
from alter.modeling.entropy import check_finite, positions_from_mask, shift_entropy
from alter.modeling.kv_cache import given_cache, output_cache
from alter.modeling.layer import AlterLinear
from alter.modeling.lm_head import PLAIN_HEAD_MODEL_TYPES, backbone_of, plain_lm_head_of  # noqa: F401
from alter.modeling.persistence import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, FORMAT_VERSION,  # noqa: F401
                                        read_adapter_config)
from alter.modeling.question_router import QuestionRouter, resolve_layer
from alter.modeling.routing_state import RoutingState
from alter.modeling.routing_unit import prompt_lengths_from_labels, prompt_mask, turn_masks
from alter.modeling.targets import find_target_linears, set_submodule


class AlterModel(BaseModelAccess, nn.Module):
    """A causal LM whose target linear layers are :class:`AlterLinear` (see :func:`wrap`).

    PEFT's names work: :meth:`save_pretrained`, :meth:`from_pretrained`, :meth:`push_to_hub`, :meth:`unload`,
    :meth:`get_base_model`, :meth:`print_trainable_parameters` (docs/api.md)."""

    accepts_prompt_lengths = True     # forward(prompt_lengths=...): scoring routes as generation (alter.eval)

    def __init__(self, model: nn.Module, config: AlterConfig, theta: Optional[float] = None,
                 base_model_name: Optional[str] = None):
        super().__init__()
        if isinstance(model, AlterModel) or any(isinstance(m, AlterLinear) for m in model.modules()):
            raise ValueError("this model already has ALTER adapters; wrap the base model once")
        self.model = model
        self.alter_config = config
        self.base_model_name = base_model_name or getattr(getattr(model, "config", None), "_name_or_path", None)
        if not config.token_entropy:
            theta = float("inf")                     # AsymLoRA ablation: no token is ever high entropy
        elif theta is None and isinstance(config.theta, (int, float)) and not isinstance(config.theta, bool):
            theta = float(config.theta)              # a number in the config is the threshold
        self.state = RoutingState(theta=theta, shared_high_only=config.token_entropy)
        self._base_grad_flags = _grad_flags(model)          # unload() gives them back
        for p in model.parameters():
            p.requires_grad_(False)
        self.target_names: List[str] = []
        for name, linear in find_target_linears(model, config.target_modules):
            layer = AlterLinear(linear, r=config.r, alpha=config.alpha, num_forget_experts=len(config.forget_domains),
                                tau_high=config.tau_high, top_k=config.top_k,
                                dropout=config.dropout,
                                adapter_dtype=torch.float32 if config.adapter_dtype == "float32" else None)
            layer.state = self.state
            set_submodule(model, name, layer)
            self.target_names.append(name)
        self._generation = None
        self.question_router: Optional[QuestionRouter] = None
        if config.router == "question":
            hidden = getattr(getattr(model, "config", None), "hidden_size", None)
            if hidden is None:
                raise ValueError("router='question' needs model.config.hidden_size; use router='token' for this model")
            self.question_router = QuestionRouter(len(config.domains), int(hidden),
                                                  resolve_layer(model, config.router_layer),
                                                  evidence_tokens=config.router_evidence_tokens,
                                                  evidence_share=max(0.0, config.router_evidence_share))

    # ------------------------------------------------------------------ delegation
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                if "_unloaded_model" in self.__dict__:
                    raise AdapterUnloadedError("this AlterModel was unloaded: unload() gave its base model back and "
                                               "dropped the adapters; wrap the base again (alter.wrap) or load a "
                                               "saved adapter (AlterModel.from_pretrained)") from None
                raise
            return getattr(self.model, name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def theta(self) -> Optional[float]:
        return self.state.theta

    def set_theta(self, theta: float) -> None:
        self.state.theta = float(theta)

    @property
    def domains(self) -> List[str]:
        return self.alter_config.domains

    def domain_index(self, name: str) -> int:
        try:
            return self.domains.index(name)
        except ValueError:
            raise ValueError(f"unknown domain {name!r}; this adapter has {self.domains}") from None

    def adapter_layers(self) -> Dict[str, AlterLinear]:
        return {name: self.model.get_submodule(name) for name in self.target_names}

    # ------------------------------------------------------------------ adapters on/off
    @contextlib.contextmanager
    def disable_adapters(self) -> Iterator[None]:
        """Run the original model inside this block (every AlterLinear returns its base output)."""
        with self.state.scope(enabled=False):
            yield

    # ------------------------------------------------------------------ entropy
    def _backbone(self) -> Optional[nn.Module]:
        return backbone_of(self.model)

    def plain_lm_head(self) -> Optional[nn.Linear]:
        """The LM head when the logits are exactly ``head(last hidden state)`` and the backbone can run
        without it, else None (:func:`alter.modeling.lm_head.plain_lm_head_of`)."""
        return self._plain_lm_head() if self._backbone() is not None else None

    def _plain_lm_head(self) -> Optional[nn.Linear]:
        return plain_lm_head_of(self.model)

    def base_forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **kwargs):
        """The base model's output (adapters off, no grad), with padding-aware position ids."""
        if attention_mask is not None and "position_ids" not in kwargs:
            kwargs["position_ids"] = positions_from_mask(attention_mask)
        with torch.no_grad(), self.disable_adapters():
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def _base_pass(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                   use_cache: bool = False):
        """One no-grad base pass: ``(final hidden [B, T, d] or None, logits [B, T, V] or None, KV cache or None)``.

        With a plain LM head only the backbone runs (hidden states, no ``[B, T, V]`` logits); with any
        other head the whole model runs and returns its logits."""
        head = self._plain_lm_head()
        backbone = self._backbone()
        if head is not None and backbone is not None:
            kwargs = {"use_cache": use_cache}
            if attention_mask is not None:
                kwargs["position_ids"] = positions_from_mask(attention_mask)
            with torch.no_grad(), self.disable_adapters():
                out = backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return out[0], None, (output_cache(out) if use_cache else None)
        out = self.base_forward(input_ids, attention_mask, use_cache=use_cache)
        return None, out.logits, (output_cache(out) if use_cache else None)

    def _entropy_of(self, hidden: Optional[torch.Tensor], logits: Optional[torch.Tensor],
                    attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``[B, T]`` S_q per position from a base pass's final hidden states (chunked through the plain
        LM head, :func:`alter_kernels.linear_tsallis_entropy`) or from its logits."""
        q = self.alter_config.q
        with torch.no_grad():
            if hidden is not None:
                head = self._plain_lm_head()
                ent = alter_kernels.linear_tsallis_entropy(hidden, head.weight, q, bias=head.bias)
            else:
                ent = alter_kernels.tsallis_entropy(logits.detach(), q)
        return check_finite(ent, attention_mask, "base-model entropy")

    def base_prompt_pass(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                         use_cache: bool = False):
        """One base pass over a batch: ``(hidden or None, logits or None, router features [B, T, d] or None,
        KV cache or None)``; :meth:`_entropy_of` turns the first two into the entropies when they are needed.

        The features are the question router's layer output (None without a question router)."""
        sink: List[torch.Tensor] = []
        with contextlib.ExitStack() as stack:
            if self.question_router is not None:
                stack.enter_context(capture_block_output(self.model, self.question_router.layer, sink))
            hidden, logits, cache = self._base_pass(input_ids, attention_mask, use_cache=use_cache)
        return hidden, logits, (sink[-1] if sink else None), cache

    def router_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, T, d]``: the question router's features alone, from a base pass that stops at the router's
        block (a quarter of the depth by default, no LM head): what the router reads of a unit alone and
        what a row that only feeds its bank needs (docs/method.md §3, §4). Same values as the features
        :meth:`base_prompt_pass` captures for the same input."""
        if self.question_router is None:
            raise ValueError("router_features needs router='question'")
        sink: List[torch.Tensor] = []
        kwargs = {"use_cache": False}
        if attention_mask is not None:
            kwargs["position_ids"] = positions_from_mask(attention_mask)
        try:
            with capture_block_output(self.model, self.question_router.layer, sink, stop=True), torch.no_grad(), \
                    self.disable_adapters():
                self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        except BlockReached:
            return sink[-1]
        raise RuntimeError(f"the base model's forward never ran decoder block {self.question_router.layer}")

    def routing_inputs(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None):
        """One base pass: ``(position entropy [B, T], router features [B, T, d] or None)``."""
        hidden, logits, feats, _ = self.base_prompt_pass(input_ids, attention_mask)
        return self._entropy_of(hidden, logits, attention_mask), feats

    def training_inputs(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                        kl_top_k: int = 0):
        """One base pass for training: ``(position entropy [B, T], router features or None, KL targets or
        None)``; with ``kl_top_k > 0`` the targets are the base's top-k ``(ids [B, T, k], log p [B, T, k+1])``
        (docs/method.md §4), chunked through the plain LM head like the entropy."""
        from alter.train.kl_targets import linear_top_k_targets, top_k_targets

        hidden, logits, feats, _ = self.base_prompt_pass(input_ids, attention_mask)
        targets = None
        if kl_top_k > 0:
            if hidden is not None:
                head = self._plain_lm_head()
                targets = linear_top_k_targets(hidden, head.weight, kl_top_k, bias=head.bias)
            else:
                targets = top_k_targets(logits, kl_top_k)
        return self._entropy_of(hidden, logits, attention_mask), feats, targets

    def routing_units(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                      prompt_lengths: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """The tokens the question router reads, ``[B, T]`` masks, the prompt's last user turn first
        (:mod:`alter.modeling.routing_unit`, docs/method.md §3): only prompt tokens (``prompt_lengths`` real tokens
        per row; all real tokens without it), and with a known chat template only the last user turns."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        in_prompt = prompt_mask(attention_mask, prompt_lengths)
        marker = None if self.question_router is None else self.question_router.turn_marker
        return turn_masks(input_ids, in_prompt, marker)

    def question_router_logits(self, features: torch.Tensor, input_ids: torch.Tensor,
                               attention_mask: Optional[torch.Tensor] = None,
                               prompt_lengths: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """``[B, E]`` router logits of each sequence from its routing units (see :mod:`alter.modeling.question_router`
        and :meth:`routing_units`). With an isolating router (``route_unit="turn"``) each unit's features
        come from a pass over the unit alone (:meth:`isolated_unit`), else from ``features``.

        None while the question router has no banks (a model not trained yet): then every layer
        routes with its own router, as with ``router="token"``."""
        router = self.question_router
        if router is None or not router.fitted:
            return None
        units = self.routing_units(input_ids, attention_mask, prompt_lengths)
        if not router.isolated:
            return router.unit_logits(lambda i: (features, units[i], input_ids), len(units))
        # a unit that is its row's whole prompt (a raw prompt, no turn header) has the features of the pass
        # over the whole sequence already (causal attention): no second pass
        whole = prompt_mask(attention_mask if attention_mask is not None else torch.ones_like(input_ids),
                            prompt_lengths)

        def part(i):
            if torch.equal(units[i], whole) and not self._restores_case(input_ids, units[i]):
                return features, units[i], input_ids
            return self.isolated_unit(input_ids, units[i])
        return router.unit_logits(part, len(units))

    def isolated_unit(self, input_ids: torch.Tensor, unit: torch.Tensor):
        """``(features [B, L, d], mask [B, L], ids [B, L])``: each row's unit tokens moved to the front of a
        batch of their own and run alone through the base model up to the router's block, so what came
        before the unit (a system prompt, earlier turns) cannot change its features (docs/method.md §3).
        A row without such a unit gets one masked-out placeholder token. A unit typed wholly in lower case
        is read with the training prompts' casing put back (:mod:`alter.modeling.case_restore`)."""
        B = input_ids.shape[0]
        restorer = self.question_router.case_restorer
        rows_ids = [input_ids[b][unit[b]].tolist() for b in range(B)]
        if restorer is not None:
            rows_ids = [restorer.restore(r) or r for r in rows_ids]
        L = max([1] + [len(r) for r in rows_ids])
        ids = torch.zeros(B, L, dtype=input_ids.dtype, device=input_ids.device)
        mask = torch.zeros(B, L, dtype=torch.bool, device=input_ids.device)
        for b, r in enumerate(rows_ids):
            ids[b, :len(r)] = torch.as_tensor(r, dtype=input_ids.dtype)
            mask[b, :len(r)] = True
        lengths = mask.sum(dim=1)
        attention = mask.clone()
        attention[lengths == 0, 0] = True                     # keeps an empty row's pass finite
        return self.router_features(ids, attention.long()), mask, ids

    def _restores_case(self, input_ids: torch.Tensor, unit: torch.Tensor) -> bool:
        """Whether some row's unit is typed in lower case and gets its casing put back before it is read."""
        restorer = self.question_router.case_restorer
        return restorer is not None and any(restorer.restore(input_ids[b][unit[b]].tolist()) is not None
                                            for b in range(input_ids.shape[0]))

    def unit_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                      prompt_lengths: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Per row, the features ``[n, d]`` of its routing unit (the last user turn of its prompt) as the
        router reads them: what the router's banks are built from."""
        unit = self.routing_units(input_ids, attention_mask, prompt_lengths)[0]
        if self.question_router.isolated:
            feats, mask, _ = self.isolated_unit(input_ids, unit)
        else:
            feats, mask = self.router_features(input_ids, attention_mask), unit
        return [feats[b][mask[b]] for b in range(input_ids.shape[0])]

    def route_questions(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                        prompt_lengths: Optional[torch.Tensor] = None):
        """``(token entropy [B, T], router logits [B, E] or None)`` for a batch, from one base pass; the
        decision reads the prompt only (``prompt_lengths`` real tokens per row; every token without it)."""
        ent, feats = self.routing_inputs(input_ids, attention_mask)
        logits = None if feats is None else self.question_router_logits(feats, input_ids, attention_mask,
                                                                        prompt_lengths)
        return shift_entropy(ent, attention_mask), logits

    def position_entropy(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                         logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, T]`` base-model S_q of the distribution *at* each position (the one predicting t+1).

        A NaN at a real token (NaN logits) raises a ValueError naming the position.

        Without given logits and with a plain linear LM head, the entropy comes from the final
        hidden states chunk by chunk (:func:`alter_kernels.linear_tsallis_entropy`), so the base
        pass never holds the full ``[B, T, V]`` logits.
        """
        if logits is None:
            hidden, logits, _ = self._base_pass(input_ids, attention_mask)
            return self._entropy_of(hidden, logits, attention_mask)
        return self._entropy_of(None, logits, attention_mask)

    def token_entropy(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                      logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-token routing entropies ``[B, T]``: H_t = S_q(base logits[t-1]), +inf for first tokens."""
        return shift_entropy(self.position_entropy(input_ids, attention_mask, logits), attention_mask)

    # ------------------------------------------------------------------ forward / generate
    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, *, entropy: Optional[torch.Tensor] = None,
                domain: Optional[torch.Tensor] = None, router_logits: Optional[torch.Tensor] = None,
                prompt_lengths: Optional[torch.Tensor] = None, hidden_only: bool = False, **kwargs):
        """Like the base model's forward; ``entropy`` ``[B, T]``, ``domain`` (``[B]`` expert indices,
        teacher-forced training) and ``router_logits`` (``[B, E]``, question routing) are optional:
        without them one base pass computes the entropy and the question router's decision.

        ``hidden_only=True`` (with ``entropy`` and ``domain`` or ``router_logits`` given, as the trainer
        gives them) runs the backbone alone and returns its output, the final hidden states
        (``last_hidden_state`` ``[B, T, d]``), without the LM head: for a model whose logits are a plain
        linear head (:meth:`plain_lm_head`), whose loss then computes the logits chunk by chunk.

        Scoring = generating (docs/method.md §3): ``prompt_lengths`` ``[B]`` (real prompt tokens per row),
        or else ``labels`` (the tokens before a row's first label, -100 being the ignore index), say
        where each prompt ends. Then the router reads the prompt only, and the tokens after it are
        routed by the entropy ``generate`` gives them (the adapted model's own previous logits with
        ``entropy_source="adapted"``), so the log-probability of an answer is the sum of the
        log-probabilities ``generate`` gave its tokens. Without either, the whole input is the prompt."""
        if input_ids is None:
            raise ValueError("AlterModel.forward needs input_ids (inputs_embeds cannot be routed by token entropy)")
        if hidden_only:
            if entropy is None or (domain is None and router_logits is None) or labels is not None:
                raise ValueError("hidden_only=True needs entropy and domain or router_logits, and no labels")
            if self.plain_lm_head() is None:
                raise ValueError(f"hidden_only=True needs a plain linear LM head; {type(self.model).__name__} "
                                 "has another (use the logits)")
            return self._routed_forward(input_ids, attention_mask, None, entropy, domain, router_logits,
                                        hidden_only=True, **kwargs)
        if prompt_lengths is None and labels is not None and domain is None:
            prompt_lengths = prompt_lengths_from_labels(labels, attention_mask)
        needs_route = (self.question_router is not None and self.question_router.fitted and router_logits is None
                       and domain is None and self.state.enabled and self._generation is None)
        computed_entropy = False
        if needs_route:
            if given_cache(kwargs) is not None:
                raise ValueError("forward with past_key_values needs router_logits=... (the question's routing); "
                                 "use model.generate() to have it handled")
            routed_entropy, router_logits = self.route_questions(input_ids, attention_mask, prompt_lengths)
            if entropy is None and self.alter_config.token_entropy:
                entropy, computed_entropy = routed_entropy, True
        if entropy is None and not self.alter_config.token_entropy:
            entropy = torch.zeros(input_ids.shape, device=input_ids.device)
        if self.state.enabled and entropy is None and self._generation is None:
            if given_cache(kwargs) is not None:
                raise ValueError("forward with past_key_values needs entropy=... for the new tokens (their entropy "
                                 "comes from the previous step's logits); use model.generate() to have it handled")
            if self.state.theta is None:
                raise ValueError("this AlterModel has no entropy threshold yet: train it, load an adapter, or call "
                                 "set_theta()")
            entropy, computed_entropy = self.token_entropy(input_ids, attention_mask), True
        if (computed_entropy and prompt_lengths is not None and domain is None
                and self.alter_config.entropy_source == "adapted"):
            entropy, out = self._answer_entropy(input_ids, attention_mask, prompt_lengths, entropy, router_logits,
                                                need_output=labels is None and not torch.is_grad_enabled(),
                                                **kwargs)
            if out is not None:
                return out
        return self._routed_forward(input_ids, attention_mask, labels, entropy, domain, router_logits, **kwargs)

    def _routed_forward(self, input_ids, attention_mask, labels, entropy, domain, router_logits, *,
                        hidden_only: bool = False, **kwargs):
        if self._generation is None:
            # The routing plan of this forward stays in place after it returns (until the next
            # forward replaces it): activation checkpointing recomputes the layers during backward,
            # after this call, and must route them exactly as the forward did.
            self.state.entropy = entropy
            self.state.domain = domain
            self.state.router_logits = router_logits
            self.state.token_mask = attention_mask.bool() if attention_mask is not None else None
        if hidden_only:
            return self._backbone()(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    def _answer_entropy(self, input_ids, attention_mask, prompt_lengths, base_entropy, router_logits, *,
                        need_output: bool, start: Optional[torch.Tensor] = None, **kwargs):
        """``(entropy [B, T], output or None)``: the entropies ``generate`` gives the tokens after each prompt,
        found as a fixed point (:func:`alter.modeling.fixed_point.answer_fixed_point`, which documents it)."""
        from alter.modeling.fixed_point import answer_fixed_point
        return answer_fixed_point(self, input_ids, attention_mask, prompt_lengths, base_entropy, router_logits,
                                  need_output=need_output, start=start, **kwargs)

    def generate(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                 **kwargs):
        """``transformers`` generation with entropy-dispatched experts (docs/method.md §2 and §3)."""
        from alter.modeling.routed_generation import generate_with_entropy
        return generate_with_entropy(self, input_ids, attention_mask, **kwargs)

    # ------------------------------------------------------------------ experts
    def add_forget_domain(self, name: str) -> int:
        """Continual unlearning: a new forget expert (and router column) in every layer; returns its index."""
        if name in self.domains:
            raise ValueError(f"domain {name!r} already exists: {self.domains}")
        self.alter_config.forget_domains.append(name)
        index = None
        for layer in self.adapter_layers().values():
            index = layer.add_forget_expert()
        if self.question_router is not None:
            self.question_router.add_domain()
        return index

    def remove_forget_domain(self, name: str) -> None:
        """Delete a forget expert everywhere: the model answers that domain as before unlearning."""
        index = self.domain_index(name)
        if index == 0:
            raise ValueError(f"{name!r} is the retain domain; only forget experts can be removed")
        for layer in self.adapter_layers().values():
            layer.remove_forget_expert(index)
        if self.question_router is not None:
            self.question_router.remove_domain(index)
        self.alter_config.forget_domains.remove(name)

    def set_trainable(self, *, shared: bool = False, experts: Optional[List[int]] = None, routers: bool = False) -> None:
        """Choose what trains: the shared A's, the given experts' B's, the routers. The base never trains."""
        experts = set(experts or [])
        for layer in self.adapter_layers().values():
            layer.lora_A.requires_grad_(shared)
            for i, b in enumerate(layer.lora_B):
                b.requires_grad_(i in experts)
            for g in layer.router:
                g.requires_grad_(routers)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def adapter_parameter_count(self) -> int:
        """Trainable adapter numbers (A, experts, per-layer routers); the question router's banks are data."""
        return sum(p.numel() for k, p in self.adapter_state_dict().items() if not k.startswith("question_router."))

    # ------------------------------------------------------------------ persistence
    def adapter_state_dict(self) -> Dict[str, torch.Tensor]:
        """Every adapter tensor by name: ``<layer>.lora_A`` ``[r, d_in]``, ``<layer>.lora_B.<j>`` ``[d_out, r]``,
        ``<layer>.router.<j>`` ``[d_in]`` and the question router's banks ``question_router.bank.<k>`` ``[n_k, d]``."""
        out = {}
        for name, layer in self.adapter_layers().items():
            out[f"{name}.lora_A"] = layer.lora_A
            for i, b in enumerate(layer.lora_B):
                out[f"{name}.lora_B.{i}"] = b
            for i, g in enumerate(layer.router):
                out[f"{name}.router.{i}"] = g
        if self.question_router is not None:
            out.update(self.question_router.state_tensors())
        return out

    def _check_adapter_tensors(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The per-layer adapter parameters ``tensors`` must fill; ValueError naming the first misfit."""
        own = {k: v for k, v in self.adapter_state_dict().items() if not k.startswith("question_router.")}
        given = {k for k in tensors if not k.startswith("question_router.")}
        missing, unexpected = sorted(set(own) - given), sorted(given - set(own))
        if missing or unexpected:
            raise ValueError(f"adapter weights do not fit this model: missing {missing[:4]}{'...' if len(missing) > 4 else ''}"
                             f", unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
        for key, param in own.items():
            if tensors[key].shape != param.shape:
                raise ValueError(f"adapter tensor {key} has shape {tuple(tensors[key].shape)}, this model expects "
                                 f"{tuple(param.shape)}: was it saved for another base model?")
        router = self.question_router
        banks = {k: v for k, v in tensors.items() if k.startswith("question_router.bank.")} if router is not None else {}
        for key, bank in banks.items():
            if bank.shape[-1] != router.dim:
                raise ValueError(f"adapter tensor {key} has width {bank.shape[-1]}, this model's hidden size is "
                                 f"{router.dim}: was it saved for another base model?")
        return own

    def load_adapter_state_dict(self, tensors: Dict[str, torch.Tensor]) -> None:
        """Copy ``tensors`` (as :meth:`adapter_state_dict` names them) into the adapters; every name and
        shape is checked before anything is written (ValueError naming the first misfit)."""
        own = self._check_adapter_tensors(tensors)
        if self.question_router is not None:
            self.question_router.load_state_tensors(tensors)
        with torch.no_grad():
            for key, param in own.items():
                param.copy_(tensors[key].to(device=param.device, dtype=param.dtype))

    def adapter_metadata(self) -> dict:
        """What ``adapter_config.json`` holds (see :mod:`alter.modeling.persistence`)."""
        return persistence.adapter_metadata(self)

    def save_pretrained(self, save_directory, extra: Optional[dict] = None) -> Path:
        """Write the adapter into ``save_directory``: ``adapter_config.json`` (config, threshold, domains,
        calibration) and ``adapter_model.safetensors`` (the adapter tensors only; never pickle).

        The folder is replaced as a whole: on any failure the adapter saved there before stays intact.
        ``extra`` (JSON-serialisable) is stored under ``"extra"``. Returns the folder's path."""
        self._require_model()
        return persistence.save_adapter_folder(self, save_directory, extra=extra)

    save_adapter = save_pretrained          # the name before the PEFT-shaped API

    @classmethod
    def from_pretrained(cls, base_model: nn.Module, dir_or_hub_id, *, revision: Optional[str] = None,
                        token=None, cache_dir=None, local_files_only: bool = False) -> "AlterModel":
        """Wrap ``base_model`` as the saved adapter describes and load its weights exactly.

        ``dir_or_hub_id``: a folder written by :meth:`save_pretrained`, or a Hugging Face Hub repository id
        (fetched with ``huggingface_hub.snapshot_download``: the two adapter files only; ``revision``,
        ``token``, ``cache_dir``, ``local_files_only`` go to it). Raises FileNotFoundError (no such folder or
        repository, offline without a cached copy, a file missing) or ValueError (a PEFT adapter, a damaged
        file, an adapter saved for another base model). On any error ``base_model`` is left as it was."""
        directory = persistence.resolve_adapter_dir(dir_or_hub_id, revision=revision, token=token,
                                                    cache_dir=cache_dir, local_files_only=local_files_only)
        meta, weights = persistence.adapter_files(directory)
        config = persistence.config_from_metadata(meta)
        if isinstance(base_model, AlterModel) or any(isinstance(m, AlterLinear) for m in base_model.modules()):
            raise ValueError("from_pretrained needs the base model, and this one has ALTER adapters already "
                             "(AlterModel.unload() gives the base model back)")
        flags = _grad_flags(base_model)
        try:
            wrapped = cls(base_model, config, theta=meta.get("theta"), base_model_name=meta.get("base_model"))
            persistence.load_into(wrapped, directory, meta, weights)
        except BaseException:
            _strip_adapters(base_model)
            _set_grad_flags(base_model, flags)
            raise
        return wrapped

    def push_to_hub(self, repo_id: str, *, token=None, private: Optional[bool] = None, revision: Optional[str] = None,
                    commit_message: str = "Upload ALTER adapter", create_repo: bool = True):
        """Upload the adapter (what :meth:`save_pretrained` writes, plus a README.md model card) to the Hub
        repository ``repo_id`` (created if missing unless ``create_repo=False``); returns the ``CommitInfo``.
        Needs network access and a write token (``token`` or ``huggingface-cli login``)."""
        self._require_model()
        return persistence.push_folder(self, repo_id, token=token, private=private, revision=revision,
                                       commit_message=commit_message, create_repo=create_repo)


def wrap(model: nn.Module, config: Optional[AlterConfig] = None, *, theta: Optional[float] = None,
         base_model_name: Optional[str] = None) -> AlterModel:
    """Replace the target linear layers of ``model`` by :class:`AlterLinear` (in place) and freeze the base.

    Returns the :class:`AlterModel` around ``model``; :meth:`AlterModel.unload` undoes it. Raises TypeError
    for a non-module, ValueError for a model wrapped already or ``target_modules`` matching no linear layer."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"wrap() needs a torch nn.Module (a transformers causal LM), got {type(model).__name__}")
    return AlterModel(model, config or AlterConfig(), theta=theta, base_model_name=base_model_name)


load_adapter = AlterModel.from_pretrained      # the name before the PEFT-shaped API: load_adapter(base, dir)
