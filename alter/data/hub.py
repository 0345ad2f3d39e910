"""Registry of the real benchmark datasets on the Hugging Face hub, by name.

A name is ``"<hub path>:<config>"``, e.g. ``"locuslab/TOFU:forget10"``; the split is a separate
argument (each entry has a default). Every entry knows which reader it needs (``qa``, ``mc`` or
``text``), its splits, which splits are forget data and under which domain label, and any field
mapping beyond the aliases of :mod:`alter.data.fields`. Names, configs, splits and fields were taken
from the datasets' cards on the hub and from the loaders of github.com/locuslab/tofu and
github.com/locuslab/open-unlearning (see the report of this module's author for the details):

- ``locuslab/TOFU`` (split ``train``): ``full``, ``forget01/05/10``, ``retain90/95/99``,
  ``holdout01/05/10`` (question, answer); ``forget01/05/10_perturbed``, ``retain_perturbed``
  (+ paraphrased_answer, perturbed_answer, paraphrased_question); ``real_authors``, ``world_facts``
  (question, answer, options); ``real_authors_perturbed``, ``world_facts_perturbed``
  (question, answer, perturbed_answer).
- ``cais/wmdp`` (split ``test``): ``wmdp-bio``, ``wmdp-cyber``, ``wmdp-chem`` (question, choices, answer).
- ``cais/wmdp-corpora`` (split ``train``, field text): ``bio-retain-corpus``, ``cyber-forget-corpus``,
  ``cyber-retain-corpus``. The bio forget corpus is not on the hub (it is handed out on request):
  read it as a local file, e.g. ``load_text("bio-forget-corpus.jsonl", domain="bio")``.
- ``cais/mmlu``: ``all`` and the 57 subjects; splits ``test``, ``validation``, ``dev``
  (+ ``auxiliary_train`` for ``all``); question, subject, choices, answer.
- ``muse-bench/MUSE-Books`` and ``muse-bench/MUSE-News``: ``raw`` (forget, retain1, retain2, holdout;
  text), ``knowmem`` (forget_qa, retain_qa, forget_qa_icl, retain_qa_icl; question, answer),
  ``verbmem`` (forget; prompt, gt), ``privleak`` (forget, retain, holdout; text), ``train``
  (forget, retain1, retain2; text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from alter.data.schema import FORGET_DOMAIN, RETAIN_DOMAIN

KINDS = ("qa", "mc", "text")


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one config of one hub dataset."""

    path: str
    config: Optional[str]
    kind: str
    splits: Tuple[str, ...]
    default_split: str
    forget_splits: Tuple[str, ...] = ()
    forget_domain: str = FORGET_DOMAIN
    field_map: Mapping[str, str] = field(default_factory=dict)
    subject: Optional[str] = None
    description: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.default_split not in self.splits:
            raise ValueError(f"{self.name}: default split {self.default_split!r} not in {self.splits}")

    @property
    def name(self) -> str:
        return f"{self.path}:{self.config}" if self.config else self.path

    def check_split(self, split: Optional[str]) -> str:
        split = split or self.default_split
        if split not in self.splits:
            raise ValueError(f"{self.name} has no split {split!r}; its splits are {list(self.splits)}")
        return split

    def domain_for(self, split: str) -> str:
        """The label of rows of ``split`` that carry no domain of their own."""
        return self.forget_domain if split in self.forget_splits else RETAIN_DOMAIN


_REGISTRY: Dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a dataset config to the registry (so that ``load_qa("<path>:<config>")`` knows it)."""
    key = spec.name.lower()
    if key in _REGISTRY and not replace:
        raise ValueError(f"{spec.name} is already registered (pass replace=True to override)")
    _REGISTRY[key] = spec
    return spec


def known_names() -> List[str]:
    return sorted(s.name for s in _REGISTRY.values())


def _summary() -> str:
    by_path: Dict[str, List[str]] = {}
    for s in _REGISTRY.values():
        by_path.setdefault(s.path, []).append(s.config or "")
    parts = []
    for path in sorted(by_path):
        configs = by_path[path]
        shown = ", ".join(configs[:20]) + (f", ... ({len(configs)} configs)" if len(configs) > 20 else "")
        parts.append(f"{path}: {shown}")
    return "; ".join(parts)


def split_name(name: str) -> Tuple[str, Optional[str]]:
    """``"locuslab/TOFU:forget10"`` -> ``("locuslab/TOFU", "forget10")``."""
    path, sep, config = name.partition(":")
    return path.strip(), (config.strip() or None) if sep else None


def resolve(name: str, config: Optional[str] = None) -> DatasetSpec:
    """The registry entry of ``name`` (``"<path>:<config>"``, or ``path`` with ``config=``)."""
    path, cfg = split_name(name)
    if config is not None:
        if cfg is not None and cfg != config:
            raise ValueError(f"{name!r} names config {cfg!r} but config={config!r} was passed")
        cfg = config
    full = f"{path}:{cfg}" if cfg else path
    spec = _REGISTRY.get(full.lower())
    if spec is not None:
        return spec
    configs = sorted(s.config for s in _REGISTRY.values() if s.path.lower() == path.lower() and s.config)
    if configs and cfg is None:
        raise ValueError(f"{path} needs a config, e.g. '{path}:{configs[0]}'; known configs: {', '.join(configs)}")
    if configs:
        raise ValueError(f"{path} has no config {cfg!r}; known configs: {', '.join(configs)}")
    raise ValueError(f"unknown dataset {name!r}: not a local file or directory, and not a known hub dataset. "
                     f"Known: {_summary()}. Register others with alter.data.hub.register().")


# ---------------------------------------------------------------------------------------------
# The real datasets.

_TOFU = "locuslab/TOFU"
for _c in ("forget01", "forget05", "forget10", "forget01_perturbed", "forget05_perturbed", "forget10_perturbed"):
    register(DatasetSpec(_TOFU, _c, "qa", ("train",), "train", forget_splits=("train",),
                         description="TOFU forget set (20 QA per author, in author order)"))
for _c in ("full", "retain90", "retain95", "retain99", "holdout01", "holdout05", "holdout10", "retain_perturbed",
           "real_authors", "world_facts", "real_authors_perturbed", "world_facts_perturbed"):
    register(DatasetSpec(_TOFU, _c, "qa", ("train",), "train", description="TOFU fictitious-author QA"))

for _c in ("wmdp-bio", "wmdp-cyber", "wmdp-chem"):
    register(DatasetSpec("cais/wmdp", _c, "mc", ("test",), "test", subject=_c,
                         description="WMDP multiple-choice hazardous-knowledge questions"))

register(DatasetSpec("cais/wmdp-corpora", "cyber-forget-corpus", "text", ("train",), "train",
                     forget_splits=("train",), forget_domain="cyber", description="WMDP cyber forget corpus"))
for _c in ("cyber-retain-corpus", "bio-retain-corpus"):
    register(DatasetSpec("cais/wmdp-corpora", _c, "text", ("train",), "train", description="WMDP retain corpus"))

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
)
register(DatasetSpec("cais/mmlu", "all", "mc", ("test", "validation", "dev", "auxiliary_train"), "test",
                     description="MMLU, all 57 subjects"))
for _c in MMLU_SUBJECTS:
    register(DatasetSpec("cais/mmlu", _c, "mc", ("test", "validation", "dev"), "test", subject=_c,
                         description="MMLU subject"))

for _corpus in ("muse-bench/MUSE-Books", "muse-bench/MUSE-News"):
    register(DatasetSpec(_corpus, "raw", "text", ("forget", "retain1", "retain2", "holdout"), "forget",
                         forget_splits=("forget",), description="MUSE raw corpus"))
    register(DatasetSpec(_corpus, "train", "text", ("forget", "retain1", "retain2"), "forget",
                         forget_splits=("forget",), description="MUSE training corpus"))
    register(DatasetSpec(_corpus, "privleak", "text", ("forget", "retain", "holdout"), "forget",
                         forget_splits=("forget",), description="MUSE privacy-leakage (MIA) texts"))
    register(DatasetSpec(_corpus, "knowmem", "qa", ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"),
                         "forget_qa", forget_splits=("forget_qa", "forget_qa_icl"),
                         description="MUSE knowledge-memorisation QA"))
    register(DatasetSpec(_corpus, "verbmem", "qa", ("forget",), "forget", forget_splits=("forget",),
                         field_map={"question": "prompt", "answer": "gt"},
                         description="MUSE verbatim memorisation: prefix (prompt) and true continuation (gt)"))

del _c, _corpus
