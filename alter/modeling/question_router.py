"""The question router: one routing decision per sequence, shared by every adapted layer.

Deviation from the paper's per-layer, per-token routers (documented in ``docs/method.md``,
"Routing"). Measured on real TOFU rows, per-layer linear probes trained for a few steps send a
third of the (token, layer) decisions of *retain* questions to a forget expert, and a forget
expert mixed into a retain answer destroys it. This router decides by the question instead:

- Features: the base model's hidden states at one decoder layer (``router_layer``; by default
  the block at a quarter of the depth, measured best on TOFU in docs/method.md), L2-normalised: from
  the base pass that computes the token entropies, or, for a unit read alone, from a pass over the
  unit's tokens cut at that block.
- Memory: one bank of token features per domain, from the training prompts (retain and each
  forget sub-domain).
- Evidence for forget domain k at token t: ``e_k(t) = max cos(h_t, bank_k) - max cos(h_t,
  bank_retain)``. Tokens every prompt shares (chat template, question words) match both banks
  alike and give ~0; a token that only the forget prompts have (the author's name, and the
  tokens after it, which carry it) gives a clear positive value. The question's score ``s_k`` is
  the mean of its ``m`` largest ``e_k(t)``, ``m = max(evidence_tokens, ceil(evidence_share * n))`` for a
  unit of ``n`` tokens (``evidence_tokens`` 3 by default; 1 with no share: the maximum). The share keeps a
  long unit (a passage) from passing on the handful of tokens any text of its kind shares with the bank
  (a name in the news); the trainer sets it to 0.1 for a forget set of passages and 0 for questions
  (docs/method.md §4, "Passages").
- Tokens: those of the routing unit (:mod:`alter.modeling.routing_unit`: the prompt's last user turn, read
  alone when ``isolated``); a turn that refers back takes the earlier turn's decision
  (:meth:`QuestionRouter.unit_logits`).
- Names: a unit that names a forget person as users type them (the surname alone, a typo one edit away;
  :mod:`alter.modeling.name_match`) scores at least ``threshold + spread`` for that person's domain, above
  every domain it does not name; so does a unit that holds a forget question in its own wording, whatever is
  around it (:mod:`alter.modeling.question_match`).
- Decision: the question goes to forget expert ``argmax_k s_k`` when ``s_k > threshold``, to the
  retain expert otherwise. ``threshold`` is calibrated on the training prompts themselves,
  leave-one-out (each prompt scored against banks without its own tokens), as the midpoint that
  best separates forget from retain prompts, and at least a quantile of the retain prompts' scores
  (``retain_quantile`` of :meth:`QuestionRouter.fit`); the leave-one-out accuracy is reported.
- Router logits for the entropy-dispatched gates (:func:`alter_kernels.route`):
  ``u = [0, z_1, ..., z_K]`` with ``z_k = (s_k - threshold) / spread`` for the chosen expert
  and a large negative value for every expert not chosen, so a retain question never mixes in
  a forget expert, and a forget question mixes only its own with the retain expert on
  high-entropy tokens.

Shapes: features ``[B, T, d]``, token mask ``[B, T]`` (bool), scores ``[B, K]``, logits ``[B, 1+K]``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from alter.modeling.blocks import decoder_layers
from alter.modeling.case_restore import CaseRestorer
from alter.modeling.name_match import FLAGS_KEY, NameMatcher
from alter.modeling.question_match import QuestionMatcher

CASED_IDS_KEY = "question_router.cased_ids"
EXCLUDED = -1.0e4      # router logit of an expert the question is not routed to


def resolve_layer(model: nn.Module, router_layer: int) -> int:
    """The block index of ``router_layer``; negative means a quarter of the depth (block 7 of 30)."""
    n = len(decoder_layers(model))
    index = n // 4 if router_layer < 0 else int(router_layer)
    if not 0 <= index < n:
        raise ValueError(f"router_layer must be in [0, {n}) for this model (or negative for the default), "
                         f"got {router_layer}")
    return index


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def _best_match(feats: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``max_j cos(feats[i], bank[j])`` for normalised rows: ``[N]`` (``-1`` for an empty bank)."""
    if bank.numel() == 0:
        return torch.full((feats.shape[0],), -1.0, device=feats.device)
    best = []
    for s in range(0, feats.shape[0], chunk):
        best.append((feats[s:s + chunk] @ bank.T).amax(dim=1))
    return torch.cat(best)


class QuestionRouter(nn.Module):
    """Token-feature banks per domain, a calibrated threshold, and the per-question decision."""

    def __init__(self, num_domains: int, dim: int, layer: int, threshold: float = 0.0, spread: float = 1.0,
                 evidence_tokens: int = 1, evidence_share: float = 0.0):
        super().__init__()
        if int(evidence_tokens) != evidence_tokens or evidence_tokens < 1:
            raise ValueError(f"evidence_tokens must be a positive integer, got {evidence_tokens}")
        self.evidence_tokens = int(evidence_tokens)
        if not 0.0 <= float(evidence_share) <= 1.0:
            raise ValueError(f"evidence_share must be in [0, 1], got {evidence_share}")
        self.evidence_share = float(evidence_share)
        if num_domains < 1:
            raise ValueError(f"num_domains must be >= 1, got {num_domains}")
        self.layer = int(layer)
        self.threshold = float(threshold)
        self.spread = float(spread)
        self.dim = int(dim)
        self._count = 0
        for _ in range(num_domains):
            self.add_domain()
        self.calibration: dict = {}
        self.loo_scores: Optional[torch.Tensor] = None
        # token ids opening a user turn of the chat template (alter.modeling.routing_unit.user_turn_marker): the
        # routing unit is the prompt's last user turn; None: the whole prompt (no chat template known)
        self.turn_marker: Optional[List[int]] = None
        # token ids of referring words (alter.modeling.routing_unit.referring_token_ids): a last turn with no subject
        # of its own and one of them takes the earlier turn's decision; None: the last turn alone decides
        self.referring_ids: Optional[List[int]] = None
        # the unit's features come from a pass over the unit alone (AlterModel.isolated_unit), in the banks
        # and at inference; False: from the pass over the whole sequence (adapters saved before)
        self.isolated = False
        # a unit typed wholly in lower case is read with the training prompts' casing put back
        # (alter.modeling.case_restore, docs/method.md §3); None: read as typed (adapters saved before)
        self.case_restorer: Optional[CaseRestorer] = None
        self._saved_case_map = None
        # the forget persons' names as token ids (alter.modeling.name_match, docs/method.md §3); None: features
        # alone decide (passages, adapters saved before)
        self.name_matcher: Optional[NameMatcher] = None
        self._saved_names = None
        # the forget questions' own wording as token ids (alter.modeling.question_match, docs/method.md §3); None:
        # features alone decide (passages, adapters saved before)
        self.question_matcher: Optional[QuestionMatcher] = None

    # ------------------------------------------------------------------ banks
    @property
    def banks(self) -> List[torch.Tensor]:
        return [getattr(self, f"bank_{k}") for k in range(self._count)]

    def _set_banks(self, banks: Sequence[torch.Tensor]) -> None:
        device = self.bank_0.device if self._count else None
        for k in range(self._count):
            delattr(self, f"bank_{k}")
        self._count = 0
        for b in banks:
            self.register_buffer(f"bank_{self._count}", b.to(device) if device is not None else b, persistent=False)
            self._count += 1

    @property
    def num_domains(self) -> int:
        return self._count

    @property
    def fitted(self) -> bool:
        return self.banks[0].numel() > 0 and all(b.numel() > 0 for b in self.banks[1:])

    def add_domain(self) -> int:
        device = self.bank_0.device if self._count else None
        self.register_buffer(f"bank_{self._count}", torch.zeros(0, self.dim, device=device), persistent=False)
        self._count += 1
        return self._count - 1

    def set_bank(self, index: int, rows: torch.Tensor, normalise: bool = True) -> None:
        rows = _normalise(rows) if normalise else rows.float()
        setattr(self, f"bank_{index}", rows.to(getattr(self, f"bank_{index}").device))

    def remove_domain(self, index: int) -> None:
        self._set_banks([b for k, b in enumerate(self.banks) if k != index])
        if self.case_restorer is not None:            # the words its request added go with it
            self.case_restorer = self.case_restorer.without(index)
        if self.name_matcher is not None:             # and the name (none left: no matcher, as before the request)
            self.name_matcher = self.name_matcher.without(index) or None
        if self.question_matcher is not None:         # and the questions
            self.question_matcher = self.question_matcher.without(index) or None

    def state_tensors(self) -> Dict[str, torch.Tensor]:
        out = {f"question_router.bank.{k}": b.contiguous() for k, b in enumerate(self.banks)}
        if self.case_restorer is not None:
            out[CASED_IDS_KEY] = self.case_restorer.cased_ids.to(torch.int32).contiguous()
        if self.name_matcher is not None:
            out[FLAGS_KEY] = self.name_matcher.flags.contiguous()
        return out

    def load_state_tensors(self, tensors: Dict[str, torch.Tensor]) -> None:
        for k in range(self.num_domains):
            key = f"question_router.bank.{k}"
            if key not in tensors:
                raise ValueError(f"adapter weights lack {key} (the question router's bank of domain {k})")
            self.set_bank(k, tensors[key], normalise=False)
        if self._saved_case_map is not None:
            if CASED_IDS_KEY not in tensors:
                raise ValueError(f"adapter weights lack {CASED_IDS_KEY} (the case restorer's cased token ids)")
            self.case_restorer = CaseRestorer.from_saved(self._saved_case_map, tensors[CASED_IDS_KEY])
        if self._saved_names is not None:
            if FLAGS_KEY not in tensors:
                raise ValueError(f"adapter weights lack {FLAGS_KEY} (the name matcher's token flags)")
            self.name_matcher = NameMatcher.from_saved(self._saved_names, tensors[FLAGS_KEY])

    def metadata(self) -> dict:
        return {"layer": self.layer, "threshold": self.threshold, "spread": self.spread,
                "calibration": self.calibration, "turn_marker": self.turn_marker,
                "evidence_tokens": self.evidence_tokens, "evidence_share": self.evidence_share,
                "referring_ids": self.referring_ids,
                "isolated": self.isolated,
                "case_map": None if self.case_restorer is None else self.case_restorer.metadata(),
                "names": None if self.name_matcher is None else self.name_matcher.metadata(),
                "questions": None if self.question_matcher is None else self.question_matcher.metadata()}

    def load_metadata(self, saved: dict) -> None:
        self.layer = int(saved["layer"])
        self.threshold = float(saved["threshold"])
        self.spread = float(saved["spread"])
        self.calibration = saved.get("calibration", {})
        self.evidence_tokens = int(saved.get("evidence_tokens", 1))   # adapters before it: the maximum
        self.evidence_share = float(saved.get("evidence_share", 0.0))  # adapters before it: a fixed count
        marker = saved.get("turn_marker")          # adapters saved before turn routing: the whole prompt
        self.turn_marker = [int(i) for i in marker] if marker else None
        self.isolated = bool(saved.get("isolated", False))
        refs = saved.get("referring_ids")
        self.referring_ids = [int(i) for i in refs] if refs is not None else None   # [] stays []: saved as it was
        self._saved_case_map = saved.get("case_map")     # adapters saved before it: read as typed
        self.case_restorer = None                        # rebuilt with its ids by load_state_tensors
        self._saved_names = saved.get("names")           # adapters saved before it: features alone decide
        self.name_matcher = None                         # rebuilt with its token flags by load_state_tensors
        questions = saved.get("questions")               # adapters saved before it: features and names decide
        self.question_matcher = QuestionMatcher.from_saved(questions) if questions else None

    # ------------------------------------------------------------------ scoring
    def _evidence(self, features: torch.Tensor, token_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``[K, B, T]``: ``e_k(t)`` of every token, ``-inf`` outside ``token_mask``."""
        B, T, d = features.shape
        feats = _normalise(features.reshape(B * T, d))
        dev = feats.device
        retain = _best_match(feats, self.banks[0].to(dev))
        valid = torch.ones(B * T, dtype=torch.bool, device=dev) if token_mask is None \
            else token_mask.reshape(-1).to(dev).bool()
        out = [(_best_match(feats, bank.to(dev)) - retain).masked_fill(~valid, float("-inf")).view(B, T)
               for bank in self.banks[1:]]
        return torch.stack(out) if out else torch.zeros(0, B, T, device=dev)

    def scores(self, features: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, K]``: per forget domain, the mean of the ``m`` largest per-token evidences ``e_k(t)`` over the
        masked tokens (:meth:`aggregate`)."""
        ev = self._evidence(features, token_mask)
        if ev.shape[0] == 0:
            return torch.zeros(features.shape[0], 0, device=ev.device)
        return torch.stack([self.aggregate(e) for e in ev], dim=1)

    def aggregate(self, evidence: torch.Tensor) -> torch.Tensor:
        """``[B]``: the mean of each row's ``m`` largest evidences ``[B, T]`` (``-inf`` outside the unit), with
        ``m = max(evidence_tokens, ceil(evidence_share * n))`` for a row of ``n`` unit tokens."""
        if self.evidence_share <= 0:
            return top_mean(evidence, self.evidence_tokens)
        n = torch.isfinite(evidence).sum(dim=1)
        m = torch.ceil(self.evidence_share * n.double()).long().clamp(min=self.evidence_tokens)
        return top_mean_rows(evidence, m)

    def logits_from_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """``[B, 1+K]`` router logits: 0 for retain, ``z_k`` for the chosen forget expert, EXCLUDED else."""
        B, K = scores.shape
        z = (scores - self.threshold) / self.spread
        u = torch.full((B, K + 1), EXCLUDED, device=scores.device)
        u[:, 0] = 0.0
        if K:
            best, arg = z.max(dim=1)
            chosen = best > 0
            u[chosen, 1 + arg[chosen]] = best[chosen]
        return u

    def logits(self, features: torch.Tensor, token_mask: Optional[torch.Tensor] = None,
               input_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, 1+K]`` router logits; with the unit's ``input_ids`` ``[B, T]``, a unit that names a forget person
        (:attr:`name_matcher`) or holds a forget question in its own wording (:attr:`question_matcher`) scores at
        least ``threshold + spread`` for that domain, and every domain it does not name or ask less."""
        scores = self.scores(features, token_mask)
        matchers = [m for m in (self.name_matcher, self.question_matcher) if m is not None]
        if matchers and input_ids is not None and scores.shape[1]:
            mask = torch.ones_like(input_ids, dtype=torch.bool) if token_mask is None else token_mask
            K = scores.shape[1]
            found = [set() for _ in range(input_ids.shape[0])]
            if self.name_matcher is not None:
                for f, ds in zip(found, self.name_matcher.named_rows(input_ids, mask)):
                    f.update(ds)
            if self.question_matcher is not None:
                for f, ds in zip(found, self.question_matcher.asked_rows(input_ids, mask)):
                    f.update(ds)
            hit = torch.tensor([[k + 1 in ds for k in range(K)] for ds in found],
                               dtype=torch.bool, device=scores.device).reshape(-1, K)
            floor = self.threshold + self.spread      # a named or asked domain outranks every other
            others = torch.where(hit.any(dim=1, keepdim=True), scores.clamp(max=floor - 1e-4), scores)
            scores = torch.where(hit, scores.clamp(min=floor), others)
        return self.logits_from_scores(scores)

    def unit_logits(self, part, count: int) -> torch.Tensor:
        """``[B, 1+K]`` router logits of each sequence from its routing units, last user turn first
        (:func:`alter.modeling.routing_unit.turn_masks`; docs/method.md §3). ``part(i)`` gives unit i as
        ``(features [B, L, d], mask [B, L], token ids [B, L])``, made only when needed.

        The last turn decides, unless it refers back: no forget evidence above the threshold, no retain
        evidence above it either (the mean of the ``evidence_tokens`` most retain-specific tokens: a
        retain author named), and a referring word (``referring_ids``: "this", "they", "her", ...). Such
        a turn ("What else did this author write?") takes the decision of the turn before it, which may
        itself refer back. Without ``referring_ids`` the last turn alone decides."""
        features, mask, ids = part(0)
        decided = self.logits(features, mask, ids)
        if not self.referring_ids or count < 2 or self.num_domains < 2:
            return decided
        refs = torch.as_tensor(self.referring_ids, device=ids.device)
        pending = self._refers_back(features, mask, ids, refs, decided)
        for i in range(1, count):
            if not bool(pending.any()):
                break
            features, mask, ids = part(i)
            earlier = self.logits(features, mask, ids)
            decided = torch.where(pending[:, None].to(decided.device), earlier, decided)
            pending = pending & self._refers_back(features, mask, ids, refs, earlier)
        return decided

    def _refers_back(self, features, unit, input_ids, refs, logits) -> torch.Tensor:
        """``[B]``: the unit names no subject of its own (not routed to a forget expert, no retain author
        named) and holds a referring word."""
        ev = self._evidence(features, unit)                                   # [K, B, T]
        retain_side = self.aggregate((-ev.amax(dim=0)).masked_fill(~unit.to(ev.device), float("-inf")))
        refers = (torch.isin(input_ids, refs) & unit).any(dim=1)
        unrouted = ~self.routed_to_forget(logits)
        return refers.to(ev.device) & unrouted.to(ev.device) & ~(retain_side > self.threshold) & unit.any(dim=1).to(ev.device)

    @staticmethod
    def routed_to_forget(logits: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool: the rows of router logits ``[B, 1+K]`` that send their question to a forget expert."""
        return (logits[:, 1:] > EXCLUDED / 2).any(dim=1)

    @staticmethod
    def forced_logits(domain: torch.Tensor, strength: torch.Tensor, num_domains: int) -> torch.Tensor:
        """Training: the logits of an ideal router, rows sent to ``domain`` with ``z = strength``."""
        B = domain.shape[0]
        u = torch.full((B, num_domains), EXCLUDED, device=domain.device)
        u[:, 0] = 0.0
        cols = torch.arange(num_domains, device=domain.device)
        hit = (cols[None, :] == domain[:, None]) & (domain[:, None] > 0)       # no nonzero(): no host sync
        return torch.where(hit, strength.to(u.dtype)[:, None], u)

    # ------------------------------------------------------------------ fitting
    def fit(self, features: Sequence[torch.Tensor], domains: Sequence[int], max_bank: int = 50000,
            seed: int = 0, retain_quantile: float = 0.0,
            extra: Sequence[Tuple[int, torch.Tensor]] = ()) -> dict:
        """Build the banks from per-prompt token features ``[T_i, d]`` and calibrate the threshold.

        Returns the calibration: leave-one-out scores of every prompt, the threshold, the
        leave-one-out accuracy on forget and on retain prompts. ``max_bank`` caps each bank
        (rows drawn at random, seeded). ``retain_quantile`` > 0 puts a floor under the threshold: that
        quantile of the retain prompts' leave-one-out scores, what unseen text of the retain side's kind
        scores. Where held-out forget prompts resemble the forget set (TOFU: the author's name) the midpoint
        is already above it; where they do not (passages of unrelated news) the midpoint falls among
        the retain scores and the floor decides (docs/method.md §4, "Passages").
        ``extra``: ``(i, features)`` pairs, more bank rows of prompt ``i``'s domain owned by prompt ``i`` (its
        names altered, :mod:`alter.data.name_variants`): they join the bank, are left out with prompt ``i`` from
        its leave-one-out score, and are not scored themselves (the threshold is calibrated on the prompts).
        """
        if len(features) != len(domains):
            raise ValueError(f"{len(features)} feature sets for {len(domains)} domain labels")
        K = self.num_domains
        gen = torch.Generator().manual_seed(seed)
        rows, owners = [[] for _ in range(K)], [[] for _ in range(K)]
        for i, (f, d) in enumerate(zip(features, domains)):
            if not 0 <= d < K:
                raise ValueError(f"domain index {d} out of range for {K} domains")
            rows[d].append(_normalise(f.reshape(-1, f.shape[-1])).cpu())
            owners[d].append(torch.full((f.reshape(-1, f.shape[-1]).shape[0],), i, dtype=torch.long))
        for i, f in extra:
            f = f.reshape(-1, f.shape[-1])
            rows[domains[i]].append(_normalise(f).cpu())
            owners[domains[i]].append(torch.full((f.shape[0],), i, dtype=torch.long))
        for k in range(K):
            if not rows[k]:
                raise ValueError(f"the question router has no training prompt for domain {k}")
            bank, owner = torch.cat(rows[k]), torch.cat(owners[k])
            if bank.shape[0] > max_bank:
                keep = torch.randperm(bank.shape[0], generator=gen)[:max_bank]
                bank, owner = bank[keep], owner[keep]
            rows[k], owners[k] = bank, owner
        for k in range(K):
            self.set_bank(k, rows[k], normalise=False)
        # leave-one-out scores: each prompt against the banks without its own rows
        loo = torch.empty(len(features), max(K - 1, 0))
        for i, f in enumerate(features):
            feats = _normalise(f.reshape(-1, f.shape[-1])).cpu()
            best = []
            for k in range(K):
                sims = feats @ rows[k].T
                sims[:, owners[k] == i] = float("-inf")
                best.append(sims.amax(dim=1).clamp(min=-1.0) if sims.shape[1] else torch.full((feats.shape[0],), -1.0))
            for k in range(1, K):
                loo[i, k - 1] = self.aggregate((best[k] - best[0])[None])[0]
        domains_t = torch.as_tensor(list(domains))
        own = torch.where(domains_t > 0, loo.gather(1, (domains_t.clamp(min=1) - 1).unsqueeze(1)).squeeze(1),
                          loo.max(dim=1).values if K > 1 else torch.zeros(len(features)))
        forget_s, retain_s = own[domains_t > 0], own[domains_t == 0]
        self.threshold, acc_f, acc_r = _best_threshold(forget_s, retain_s)
        midpoint = self.threshold
        if retain_quantile > 0 and retain_s.numel():
            floor = float(torch.quantile(retain_s.double(), float(retain_quantile)))
            if floor > self.threshold:
                self.threshold = floor
                acc_f = float((forget_s > floor).float().mean())
                acc_r = float((retain_s <= floor).float().mean())
        above = forget_s[forget_s > self.threshold]
        self.spread = float((above.median() - self.threshold).clamp(min=1e-3)) if above.numel() else 1.0
        self.calibration = {"threshold": self.threshold, "spread": self.spread, "midpoint": midpoint,
                            "loo_forget_recall": acc_f, "loo_retain_specificity": acc_r,
                            "forget_prompts": int(forget_s.numel()), "retain_prompts": int(retain_s.numel()),
                            "bank_rows": [int(b.shape[0]) for b in self.banks]}
        self.loo_scores = loo
        return self.calibration

    def fill_bank(self, index: int, features: Sequence[torch.Tensor], max_bank: int = 50000,
                  seed: int = 0, extra: Sequence[Tuple[int, torch.Tensor]] = ()) -> torch.Tensor:
        """Continual unlearning: fill the empty bank ``index`` from its prompts' token features ``[T_i, d]``
        (at most ``max_bank`` rows, drawn seeded as :meth:`fit` draws them); the threshold, the spread and
        every other bank stay as they are. Returns each prompt's leave-one-out score for ``index`` (its own
        rows out of the bank, against the retain bank), the score :meth:`fit` keeps in ``loo_scores``."""
        rows = [_normalise(f.reshape(-1, f.shape[-1])).cpu() for f in features]
        more = [(i, _normalise(f.reshape(-1, f.shape[-1])).cpu()) for i, f in extra]     # as in fit
        bank = torch.cat(rows + [r for _, r in more])
        owner = torch.cat([torch.full((r.shape[0],), i, dtype=torch.long) for i, r in enumerate(rows)]
                          + [torch.full((r.shape[0],), i, dtype=torch.long) for i, r in more])
        if bank.shape[0] > max_bank:
            keep = torch.randperm(bank.shape[0], generator=torch.Generator().manual_seed(seed))[:max_bank]
            bank, owner = bank[keep], owner[keep]
        self.set_bank(index, bank, normalise=False)
        retain = self.banks[0].cpu()
        scores = []
        for i, feats in enumerate(rows):
            sims = feats @ bank.T
            sims[:, owner == i] = float("-inf")
            own = sims.amax(dim=1).clamp(min=-1.0) if sims.shape[1] else torch.full((feats.shape[0],), -1.0)
            scores.append(self.aggregate((own - _best_match(feats, retain))[None])[0])
        return torch.stack(scores)

    def strength(self, scores: torch.Tensor, low: float = 0.5, high: float = 3.0) -> torch.Tensor:
        """``z = (score - threshold) / spread`` clamped to ``[low, high]``: a teacher-forced row's router strength."""
        return ((scores - self.threshold) / self.spread).clamp(low, high)

    def loo_strength(self, domains: Sequence[int], low: float = 0.5, high: float = 3.0) -> torch.Tensor:
        """Per training prompt, the ``z`` its own domain got leave-one-out, clamped to ``[low, high]``:
        the strength of the teacher-forced high-entropy mix in training, as a held-out wording would get."""
        d = torch.as_tensor(list(domains))
        z = torch.zeros(len(d))
        forget = d > 0
        if forget.any():
            s = self.loo_scores[forget].gather(1, (d[forget] - 1).unsqueeze(1)).squeeze(1)
            z[forget] = self.strength(s, low, high)
        return z


def top_mean(evidence: torch.Tensor, m: int) -> torch.Tensor:
    """``[B]``: the mean of each row's ``m`` largest evidences ``[B, T]`` (``-inf`` marks tokens outside
    the unit; a row with fewer than ``m`` tokens averages the ones it has). ``m = 1``: the maximum."""
    if m == 1:
        return evidence.amax(dim=1)
    top = evidence.topk(min(m, evidence.shape[1]), dim=1).values
    finite = torch.isfinite(top)
    total = torch.where(finite, top, torch.zeros_like(top)).sum(dim=1)
    count = finite.sum(dim=1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("-inf")))


def top_mean_rows(evidence: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``[B]``: :func:`top_mean` with a count per row, ``m`` ``[B]`` (each at least 1)."""
    values = evidence.sort(dim=1, descending=True).values
    finite = torch.isfinite(values)
    total = torch.where(finite, values, torch.zeros_like(values)).cumsum(dim=1)
    count = finite.cumsum(dim=1)
    at = (m.to(values.device).clamp(min=1, max=values.shape[1]) - 1)[:, None]
    total, count = total.gather(1, at).squeeze(1), count.gather(1, at).squeeze(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("-inf")))


def _best_threshold(forget: torch.Tensor, retain: torch.Tensor):
    """The midpoint between sorted scores that maximises balanced accuracy (ties: the larger margin)."""
    if forget.numel() == 0:
        return 0.0, float("nan"), float("nan")
    if retain.numel() == 0:
        t = float(forget.min()) - 1e-3
        return t, 1.0, float("nan")
    values = torch.cat([forget, retain]).sort().values
    cands = torch.cat([values[:1] - 1e-3, (values[1:] + values[:-1]) / 2, values[-1:] + 1e-3])
    rec = (forget.unsqueeze(0) > cands.unsqueeze(1)).float().mean(1)
    spec = (retain.unsqueeze(0) <= cands.unsqueeze(1)).float().mean(1)
    bal = rec + spec
    best = bal.max()
    ties = (bal >= best - 1e-9).nonzero().squeeze(1)
    # among equally good cuts, the middle of the widest run keeps the largest margin on both sides
    t = float(cands[ties[len(ties) // 2]])
    return t, float(rec[ties[len(ties) // 2]]), float(spec[ties[len(ties) // 2]])
