"""Every hyperparameter of the method (docs/method.md §1-§4, §7) with its default and meaning.

The ``help`` of each field is what ``alter-train --help`` prints; every **[choice]** of the spec
is a field here, not a constant in the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


THETA_PATTERN = re.compile(r"^(auto|quantile:(0(\.\d+)?|1(\.0+)?)|[-+]?\d*\.?\d+([eE][-+]?\d+)?)$")


@dataclass
class AlterConfig:
    # --- the layer (section 1) ---
    r: int = _f(8, "LoRA rank of the shared A and of every expert B_j")
    alpha: float = _f(16.0, "LoRA alpha; the adapter output is scaled by alpha / r")
    target_modules: Union[str, List[str]] = _f(
        "all-linear", "which linear layers to adapt: 'all-linear' (every linear layer of every block), a list of "
        "name suffixes (e.g. q_proj,v_proj) or a regex matched against the full module name")
    dropout: float = _f(0.0, "dropout on the adapter's input")
    adapter_dtype: str = _f("float32", "dtype of the adapter weights (A, experts, routers): 'float32' on any base "
                            "(a bf16/fp16 base keeps fp32 adapters, as PEFT's autocast_adapter_dtype) or 'base' "
                            "(the base layer's dtype)", choices=("float32", "base"))
    forget_domains: List[str] = _f(["forget"], "names of the forget sub-domains D_F1..D_FK: one expert B_Fk each")
    retain_domain: str = _f("retain", "name of the retain domain (its expert B_R is expert 0)")
    init: str = _f("zero", "expert/router initialisation: 'zero' or 'centroid' (router columns and experts from "
                   "domain centroids of low-entropy hidden inputs, section 5)", choices=("zero", "centroid"))
    # --- token entropy (section 2) ---
    q: float = _f(1.5, "Tsallis entropy parameter q (> 0; q = 1 is Shannon)")
    theta: Union[float, str] = _f(
        "auto", "entropy threshold between knowledge (low) and structural (high) tokens: 'auto' (Otsu over the "
        "answer tokens of the examples that train: the forget answers with the defaults), 'quantile:P', or a number")
    entropy_source: str = _f("adapted", "at generation, entropy of each new token from the 'adapted' model's logits "
                             "or from the 'base' model run alongside", choices=("adapted", "base"))
    token_entropy: bool = _f(True, "route and select tokens by entropy; False is the AsymLoRA ablation of the paper: "
                             "every token low entropy (top-1 routing, hinge on every forget token), A learns from "
                             "every token, no phase I, no structural KL")
    # --- routing (sections 1, 4) ---
    router: str = _f("question", "how a token's experts are chosen: 'question' (one decision per question, shared by "
                     "every layer, from base-model token features matched against per-domain banks; docs/method.md "
                     "'Routing') or 'token' (the paper's per-layer linear routers, per token)",
                     choices=("question", "token"))
    router_layer: int = _f(-1,
                           "decoder block whose output hidden states the question router compares (negative: the "
                           "block at a quarter of the depth)")
    router_bank_size: int = _f(50000, "most token features kept per domain bank of the question router")
    router_evidence_tokens: int = _f(3, "question router: a question's score for a forget domain is the mean of its m "
                                     "strongest token evidences (1: the strongest token alone; docs/method.md §3)")
    router_evidence_share: float = _f(-1.0, "question router: a unit of n tokens scores by its "
                                      "max(router_evidence_tokens, ceil(share * n)) strongest token evidences, so a "
                                      "passage cannot pass on the few tokens any text of its kind shares with the "
                                      "bank; negative: 0.1 when the forget set is passages (no questions), 0 when it "
                                      "is questions (docs/method.md §4, Passages)")
    router_name_variants: bool = _f(False, "question router: the forget banks also hold each forget prompt with its "
                                    "names altered (the surname alone, a letter dropped, a letter doubled), so a "
                                    "partial or misspelt name still matches (docs/method.md §3, 'Names as users "
                                    "type them')")
    router_retain_quantile: float = _f(0.95, "question router: the threshold is at least this quantile of the "
                                       "retain prompts' leave-one-out scores (0: the midpoint alone; docs/method.md "
                                       "§4, Passages)")
    route_follow_ups: bool = _f(True, "with route_unit='turn': a last turn that names no one and refers back ('What "
                                "else did this author write?') takes the decision of the turn before it (docs/method.md §3)")
    route_names: bool = _f(True, "question router: a question that names a forget person as users type them (the "
                           "surname alone, a typo one edit away) goes to that person's expert; the names come from "
                           "what each forget domain's questions share (docs/method.md §3, Names as users type them)")
    route_forget_questions: bool = _f(True, "question router: a unit that holds a forget question in its own wording "
                                      "(from its second, third or fourth word on; in a chat turn, a raw prompt or an instruction) goes "
                                      "to that question's expert, whatever else it holds (docs/method.md §3, Forget "
                                      "questions in their own wording)")
    route_restore_case: bool = _f(True, "question router: a routing unit typed wholly in lower case is read with the "
                                  "casing of the training prompts' words put back ('jaime vasquez' -> 'Jaime Vasquez'; "
                                  "docs/method.md §3, Lower case)")
    route_unit: str = _f("turn", "what the question router reads: 'turn' (the prompt's last user turn, found from the "
                         "tokenizer's chat template; the whole prompt without one) or 'prompt' (every prompt token); "
                         "never the answer (docs/method.md §3)", choices=("turn", "prompt"))
    tau_high: float = _f(2.0, "router temperature for high-entropy tokens (> 1 spreads weight over experts)")
    top_k: int = _f(3, "forget experts mixed (with the retain expert) on high-entropy tokens at inference")
    # --- losses (section 3) ---
    lambda_forget: float = _f(1.0, "weight of the hinge forget loss")
    lambda_retain: float = _f(1.0, "weight of the retain cross-entropy")
    lambda_struct: float = _f(1.0,
                              "weight of the structural KL(p_base || p_model) on struct_tokens (the paper: 0.01; "
                              "docs/method.md section 4)")
    struct_kl_top_k: int = _f(32,
                              "the structural KL against the base model's top-k tokens plus one bucket for the "
                              "rest, computed once per example (no base pass per phase II step); 0: the exact KL "
                              "against a base pass at every step")
    lambda_complement: float = _f(0.0, "weight of a KL at the hinge positions between the starting model's "
                                  "distribution without the forgotten token and the model's (where the pushed-down "
                                  "mass goes; an option, off by default; docs/method.md section 4)")
    lambda_repetition: float = _f(0.0, "weight of an unlikelihood term on the forget expert's own greedy answers: the "
                                  "tokens that repeat an earlier 4-gram of the answer or bring in a writing system "
                                  "the question and answer lack are pushed down (on-policy; an option, off by "
                                  "default; docs/method.md section 4)")
    repetition_every: int = _f(1, "phase II steps between two generations of the repetition unlikelihood term")
    lambda_route: float = _f(1.0, "weight of the router's domain cross-entropy on low-entropy tokens")
    margin: float = _f(3.0,
                       "hinge margin: push the true token this far below the runner-up, then stop (the spec: 1; "
                       "docs/method.md section 4)")
    hinge_tokens: str = _f("new_content",
                           "forget tokens the hinge pushes down: 'new_content' (content words the prompt does not "
                           "already hold), 'content' (words that carry the fact: not punctuation, end of turn or "
                           "function words such as 'the', 'was') or 'all' (docs/method.md section 4)",
                           choices=("content", "new_content", "all"))
    struct_tokens: str = _f("non_hinge", "positions of the structural KL: 'non_hinge', every position the hinge does "
                            "not push (prompt, high-entropy, function words, punctuation, end of turn); or the "
                            "high-entropy ones only, at 'all' positions (prompt and answer) or 'answer' positions",
                            choices=("all", "answer", "non_hinge"))
    route_tokens: str = _f("all",
                           "tokens the router learns the domain from: 'all' or 'low' entropy only (the spec's "
                           "choice)", choices=("low", "all"))
    router_warmup: bool = _f(False,
                             "also train the routers during phase I (their domain cross-entropy on detached "
                             "features, classes weighted by inverse frequency), so that phase II starts with "
                             "trained routers")
    # --- schedule ---
    phase1_epochs: float = _f(0.0,
                              "epochs of phase I (A + B_R on high-entropy tokens of retain and forget); 0 (the "
                              "default, a deviation: docs/method.md section 4) skips it")
    phase2_epochs: float = _f(6.0,
                              "epochs of phase II (asymmetric unlearning), counted over the forget set: a cap, "
                              "the stop rule (stop_level_scale) ends phase II earlier")
    plain_prompt_share: float = _f(0.0,
                                   "phase II: share of forget rows trained under a prompt without the chat template "
                                   "(the question alone, or 'Q: ... A:'); 0 (the default: on TOFU's tune split 0.25 "
                                   "pushed raw-prompt answers below the never-taught level) turns it off "
                                   "(docs/method.md section 4, 'Prompt formats')")
    phase2_min_steps: int = _f(15,
                               "phase II runs at least this many steps (more epochs over a small forget set); 0 "
                               "disables")
    stop_when_forgotten: float = _f(-1.0,
                                    "hinge-count stop: end phase II once, over the last stop_window_steps steps, "
                                    "at most this fraction of the hinge's forget tokens were still above the "
                                    "margin, but not before phase2_min_steps; negative (the default): off")
    stop_window_steps: int = _f(0, "steps the hinge-count stop looks back over; 0: one epoch of forget batches")
    stop_answer_overlap: float = _f(-1.0,
                                    "answer-overlap stop: end phase II once the greedy answers to "
                                    "stop_check_questions forget questions have a mean ROUGE-L recall of at most "
                                    "this against the forget answers (checked every stop_check_every steps from "
                                    "phase2_min_steps on); negative (the default): off")
    stop_forget_probability: float = _f(-1.0,
                                        "absolute-probability stop: end phase II once the mean teacher-forced "
                                        "probability exp(-mean NLL) of the forget answers of the last "
                                        "stop_probability_steps steps (read from the training forward) is at most "
                                        "this, but not before phase2_min_steps; negative (the default): off")
    stop_level_scale: float = _f(0.75,
                                 "the default stop: end phase II once stop_check_questions forget answers, scored "
                                 "as generation would, are on average at most this times as likely as mismatched "
                                 "answers (each question with another forget domain's answer) under the starting "
                                 "model; checked every stop_check_every steps from phase2_min_steps on; negative: "
                                 "off (docs/method.md section 4)")
    stop_stall_scale: float = _f(1.25,
                                 "the level stop's fallback: a check whose reading is at most this times the "
                                 "mismatched answers' probability (and above the level) and no lower than the "
                                 "previous check's ends phase II (the forget answers stopped falling short of the "
                                 "level); applies when above stop_level_scale; negative: off (docs/method.md "
                                 "section 4)")
    stop_passage_level_scale: float = _f(1.0,
                                         "the level stop's scale on a forget set of passages with reference texts "
                                         "(MUSE-style: unseen text under the starting model, a level with no "
                                         "taught answer in it to scale away)")
    stop_probability_steps: int = _f(4, "steps the forget-probability stop averages over")
    stop_check_every: int = _f(5, "steps between two checks of the level and answer-overlap stops")
    stop_check_every_passages: int = _f(1, "steps between two checks of the level stop on a forget set of passages "
                                           "with reference texts (a check is one forward per batch)")
    stop_check_questions: int = _f(32, "forget questions the level and answer-overlap checks read (a fixed sample)")
    batch_size: int = _f(4, "examples per optimisation step")
    lr_phase1: float = _f(2e-4, "learning rate of phase I")
    lr_phase2: float = _f(2e-3, "learning rate of phase II (the experts it trains)")
    lr_router: float = _f(1e-2, "learning rate of the routers (linear probes on detached features)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables)")
    gradient_checkpointing: bool = _f(True, "recompute each block's activations during backward (less memory, "
                                      "more time: TOFU 2.61 -> 1.77 GiB peak for a tenth more time, docs/method.md "
                                      "section 4 Cost); the routing plan of each forward survives the recompute; "
                                      "a model without checkpointing support trains without it (a warning)")
    fused_lm_head: bool = _f(True, "for a model whose logits are a plain linear head: the training losses apply "
                             "the head themselves, chunk by chunk, so the [B, T, V] logits and their gradient are "
                             "never held whole (less memory, one more head matmul per step; same values)")
    retain_per_forget: float = _f(1.0, "phase II retain examples per forget example in each step (the forget/retain "
                                  "pairing of open-unlearning's trainers; 0: forget examples only)")
    anchor_per_forget: float = _f(0.0, "question router: retain examples per forget example in each phase II step, "
                                  "routed through a forget expert (as a wrongly routed question would be) with the "
                                  "structural KL on all their positions, so the forget experts learn to leave other "
                                  "questions alone; 0 runs forget batches only")
    subdomains: str = _f("label", "forget sub-domains: 'label' (the data's domain column) or 'auto:K' (k-means "
                         "on the base model's mean hidden state of each example)")
    # --- data / run ---
    max_length: int = _f(256, "maximum tokens per example (prompt + answer)")
    system_prompt: Optional[str] = _f(None, "system message for chat templates (None: the template's default)")
    seed: int = _f(0, "random seed")

    def __post_init__(self):
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if isinstance(self.forget_domains, str):
            self.forget_domains = [d.strip() for d in self.forget_domains.split(",") if d.strip()]
        self.validate()

    # ------------------------------------------------------------------
    def validate(self) -> None:
        def bad(name, why):
            raise ValueError(f"AlterConfig.{name}: {why} (got {getattr(self, name)!r})")

        if int(self.r) != self.r or self.r <= 0:
            bad("r", "must be a positive integer")
        if not self.alpha > 0:
            bad("alpha", "must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "must be in [0, 1)")
        if not self.forget_domains:
            bad("forget_domains", "needs at least one forget domain")
        if len(set(self.forget_domains)) != len(self.forget_domains) or self.retain_domain in self.forget_domains:
            bad("forget_domains", "names must be unique and differ from retain_domain")
        if not self.q > 0:
            bad("q", "must be > 0")
        if isinstance(self.theta, str):
            if not THETA_PATTERN.match(self.theta.strip()):
                bad("theta", "must be 'auto', 'quantile:P' with P in [0, 1], or a number")
        elif not isinstance(self.theta, (int, float)):
            bad("theta", "must be 'auto', 'quantile:P' or a number")
        for name in ("tau_high", "batch_size", "lr_phase1", "lr_phase2", "lr_router", "max_length"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("phase2_min_steps", "stop_window_steps"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                bad(name, "must be a non-negative integer")
        for name in ("stop_check_every", "stop_check_every_passages", "stop_check_questions",
                     "stop_probability_steps", "repetition_every"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) <= 0:
                bad(name, "must be a positive integer")
        for name in ("top_k", "struct_kl_top_k"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                bad(name, "must be a non-negative integer")
        for name in ("phase1_epochs", "phase2_epochs", "retain_per_forget", "anchor_per_forget", "weight_decay", "max_grad_norm",
                     "lambda_forget", "lambda_retain", "lambda_struct", "lambda_route", "lambda_complement",
                     "lambda_repetition"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if not 0.0 <= self.plain_prompt_share <= 1.0:
            bad("plain_prompt_share", "must be in [0, 1]")
        if not self.stop_forget_probability < 1:
            bad("stop_forget_probability", "must be < 1 (a probability; negative disables the probability check)")
        if not math.isfinite(self.stop_level_scale):
            bad("stop_level_scale", "must be a finite number (negative disables the level stop)")
        for name in ("stop_stall_scale", "stop_passage_level_scale"):
            if not math.isfinite(getattr(self, name)):
                bad(name, "must be a finite number")
        if not self.stop_answer_overlap < 1:
            bad("stop_answer_overlap", "must be < 1 (a ROUGE-L recall; negative disables the answer check)")
        if not self.stop_when_forgotten < 1:
            bad("stop_when_forgotten", "must be < 1 (a fraction of forget tokens; negative disables early stop)")
        if self.struct_tokens not in ("all", "answer", "non_hinge"):
            bad("struct_tokens", "must be 'all', 'answer' or 'non_hinge'")
        if self.router not in ("question", "token"):
            bad("router", "must be 'question' or 'token'")
        if int(self.router_evidence_tokens) != self.router_evidence_tokens or self.router_evidence_tokens < 1:
            bad("router_evidence_tokens", "must be a positive integer")
        if not self.router_evidence_share <= 1.0:
            bad("router_evidence_share", "must be at most 1 (negative: chosen from the forget set)")
        if not 0.0 <= self.router_retain_quantile <= 1.0:
            bad("router_retain_quantile", "must be in [0, 1]")
        if self.route_unit not in ("turn", "prompt"):
            bad("route_unit", "must be 'turn' or 'prompt'")
        if self.hinge_tokens not in ("content", "new_content", "all"):
            bad("hinge_tokens", "must be 'content', 'new_content' or 'all'")
        if int(self.router_bank_size) != self.router_bank_size or self.router_bank_size <= 0:
            bad("router_bank_size", "must be a positive integer")
        if self.route_tokens not in ("low", "all"):
            bad("route_tokens", "must be 'low' or 'all'")
        if self.init not in ("zero", "centroid"):
            bad("init", "must be 'zero' or 'centroid'")
        if self.entropy_source not in ("adapted", "base"):
            bad("entropy_source", "must be 'adapted' or 'base'")
        if not (self.subdomains == "label" or re.match(r"^auto:\d+$", self.subdomains)):
            bad("subdomains", "must be 'label' or 'auto:K'")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    @property
    def domains(self) -> List[str]:
        """Expert order: the retain domain first, then the forget domains."""
        return [self.retain_domain] + list(self.forget_domains)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "AlterConfig":
        """Build from a mapping; an unknown key is an error naming the closest known key."""
        known = cls.field_names()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown config key '{key}'{hint}")
        return cls(**values)

    def replace(self, **changes) -> "AlterConfig":
        return self.from_dict({**self.to_dict(), **changes})

    def save_pretrained(self, save_directory) -> Path:
        """Write ``alter_config.json`` (these hyperparameters, atomically) into ``save_directory``; returns its path.

        Its own file name, so saving a config into an adapter folder never overwrites the adapter's
        ``adapter_config.json``."""
        from alter import io as alter_io
        from alter.modeling.persistence import CONFIG_FILE

        path = Path(save_directory) / CONFIG_FILE
        alter_io.atomic_write_json(path, {"format": "alter-config", "config": self.to_dict()})
        return path

    @classmethod
    def from_pretrained(cls, directory) -> "AlterConfig":
        """The config in ``directory``: its ``alter_config.json`` (:meth:`save_pretrained`), else the config of
        the ALTER adapter saved there (``AlterModel.save_pretrained``). FileNotFoundError when there is
        neither; ValueError for a PEFT adapter, a damaged file or an unknown key."""
        from alter.modeling import persistence

        path = Path(directory) / persistence.CONFIG_FILE
        if not path.is_file():
            try:
                return persistence.config_from_metadata(persistence.read_adapter_config(directory))
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"no {persistence.CONFIG_FILE} in {directory}, and {exc}") from None
        saved = persistence.read_json(path)
        if saved.get("format") != "alter-config":
            raise ValueError(f"{path} is not an ALTER config (no \"format\": \"alter-config\")")
        return persistence.config_from_metadata(saved)


def field_help() -> Dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(AlterConfig)}


def field_choices() -> Dict[str, Optional[tuple]]:
    return {f.name: f.metadata.get("choices") for f in dataclasses.fields(AlterConfig)}


def read_yaml(path) -> Dict[str, Any]:
    """The mapping of config keys in a YAML file; a clear error for a missing or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def build_config(base: Optional[Dict[str, Any]] = None, yaml_path=None,
                 overrides: Optional[Dict[str, Any]] = None) -> AlterConfig:
    """AlterConfig from ``base`` (a preset) < the YAML file ``yaml_path`` < ``overrides`` (e.g. flags)."""
    values: Dict[str, Any] = dict(base or {})
    if yaml_path:
        values.update(read_yaml(yaml_path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return AlterConfig.from_dict(values)

