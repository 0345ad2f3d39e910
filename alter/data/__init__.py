"""Data: one QA schema for every benchmark, readers for files and hub datasets, synthetic authors.

- :mod:`alter.data.schema`: ``QAExample``, ``MCExample``, ``RETAIN_DOMAIN``, validation.
- :mod:`alter.data.readers`: ``load_qa``, ``load_mc``, ``load_text``, ``load_examples`` (local files
  and registered hub names through the same ``datasets.load_dataset`` path).
- :mod:`alter.data.hub`: the registry of real dataset names (TOFU, WMDP, MMLU, MUSE).
- :mod:`alter.data.domains`: forget sub-domain labels and checks.
- :mod:`alter.data.synthetic`, :mod:`alter.data.general_knowledge`: built-in offline benchmark.
- :mod:`alter.data.prompts`: how a QA pair becomes token ids.
"""

from alter.data.domains import (assign_domain, assign_domains_by_group, check_forget_set, check_retain_set,
                                collapse_forget_domains, forget_domains, group_by_domain, label_domains)
from alter.data.general_knowledge import real_authors, world_facts
from alter.data.jsonio import write_mc_json, write_qa_json
from alter.data.readers import load_examples, load_mc, load_qa, load_text
from alter.data.schema import FORGET_DOMAIN, RETAIN_DOMAIN, MCExample, QAExample, validate_mc, validate_qa
from alter.data.sources import DatasetUnavailableError
from alter.data.synthetic import SyntheticAuthors, SyntheticSplit, write_synthetic_benchmark

__all__ = [
    "QAExample", "MCExample", "RETAIN_DOMAIN", "FORGET_DOMAIN", "validate_qa", "validate_mc",
    "load_qa", "load_mc", "load_text", "load_examples", "DatasetUnavailableError",
    "assign_domain", "assign_domains_by_group", "label_domains", "collapse_forget_domains", "forget_domains",
    "group_by_domain", "check_forget_set", "check_retain_set",
    "SyntheticAuthors", "SyntheticSplit", "write_synthetic_benchmark", "real_authors", "world_facts",
    "write_qa_json", "write_mc_json",
]
