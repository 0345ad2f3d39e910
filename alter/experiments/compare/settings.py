"""What the side-by-side comparison runs: data sizes, methods, and per-method hyperparameters.

Every method starts from the same fine-tuned model (the demo's, from the cache), sees the same
forget and retain examples in the same order (phase II's forget/retain pairing), and is scored
by the same evaluators. Learning rates follow each method's reference setting (open-unlearning's
configs for the baselines; docs/method.md's defaults for ALTER), scaled for the few steps a CPU run
affords; they are listed here, not hidden in code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from alter.baselines.registry import ALL_METHODS  # noqa: F401  (re-exported: the comparison's method list)
from alter.config import AlterConfig


@dataclass
class CompareSettings:
    model: str = "smollm2-135m"
    dataset: str = "synthetic"           # "synthetic" authors, "tofu" (real TOFU rows from data_dir) or
                                         # "muse_news" (MUSE-News BBC articles from data_dir)
    data_dir: Optional[str] = None       # the TOFU directory (authors.jsonl, world_facts.jsonl, real_authors.jsonl)
    tofu_split: str = "report"           # the forget split: TOFU authors "tune" (180-184) or "report" (185-189);
                                         # MUSE-News the article fold "tune" or "report"
    eval_forget: int = 0                 # TOFU: forget questions scored (0: all of the forget authors')
    eval_never_taught: int = 50          # TOFU: never-taught questions scored (authors 190-194)
    eval_reworded: int = 30              # TOFU: forget and retain questions scored again in a new wording
    n_authors: int = 20
    questions_per_author: int = 10       # 20 forget items: a KS test on 10 is too coarse
    forget_percent: float = 10.0
    finetune_epochs: float = 8.0
    finetune_lr: float = 5e-4
    finetune_batch_size: int = 8
    finetune_trainable: str = "upper"
    system_prompt: Optional[str] = "Answer the question."
    seed: int = 0
    unlearn_epochs: float = 3.0          # the paper's setting (batch 4, 3 epochs)
    batch_size: int = 4
    eval_retain_per_author: int = 2
    eval_general: int = 19               # real-authors and world-facts items each (the never-replayed half)
    replay_general: bool = True          # replay the other half while teaching the authors
    max_new_tokens: int = 24
    eval_batch_size: int = 16
    eval_lean: bool = False              # score forget, retain and never-taught generations only (the tuning sweep)
    muse_verbmem: int = 60               # MUSE-News: verbmem items cut to forget windows (0: all 100)
    eval_retain_windows: int = 20        # MUSE-News: retain windows continued (VerbMem on the retain side)
    knowmem_new_tokens: int = 16         # MUSE-News: answer length of a knowledge question
    muse_requests: int = 0               # MUSE-News: unlearn the fold as N sequential requests (0: at once)
    eval_robustness: int = 0             # TOFU: forget and retain questions answered under each prompt variant
                                         # (alter.eval.robustness; 0: no robustness table)
    methods: List[str] = field(default_factory=lambda: list(ALL_METHODS))
    method_lr: Dict[str, float] = field(default_factory=lambda: {
        "ga": 2e-5, "graddiff": 2e-5, "kl": 2e-5, "npo": 2e-5, "npo_gd": 2e-5, "npo_kl": 2e-5, "rl": 2e-5,
        "rmu": 5e-5, "lora": 1e-4})
    # overrides of the AlterConfig defaults for alter and asymlora (none: the defaults win or lose as
    # they are; the question router made the earlier lr_phase2=5e-4 work-around unnecessary)
    alter: Dict[str, object] = field(default_factory=dict)
    use_cache: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "CompareSettings":
        return cls(**values)


# TOFU (``--benchmark tofu``): authors 0-9 are retained, 180-189 taught and half of them forgotten
# ("tune": 180-184 to choose settings on, "report": 185-189 for the table), 190-194 never taught.
TOFU_AUTHORS = {"retain": list(range(10)), "tune": list(range(180, 185)), "report": list(range(185, 190)),
                "never_taught": list(range(190, 195))}
# ALTER and asymlora run at their own phase II cap (AlterConfig.phase2_epochs; the stop rule ends them
# first at their default rate), the baselines at unlearn_epochs (a fixed length)
TOFU = dict(dataset="tofu", finetune_epochs=5.0, finetune_lr=5e-4, eval_retain_per_author=3, eval_general=25,
            eval_forget=40, eval_never_taught=30, eval_reworded=20, max_new_tokens=40, eval_robustness=12,
            alter={"phase2_epochs": AlterConfig().phase2_epochs})

# MUSE-News (``--benchmark muse-news``): taught every forget window (both folds) and the retain windows,
# one fold forgotten; continuations of 64 new tokens (a verbmem window's 48-word continuation)
MUSE_NEWS = dict(dataset="muse_news", finetune_epochs=5.0, finetune_lr=5e-4, eval_general=25, max_new_tokens=64,
                 alter={"phase2_epochs": AlterConfig().phase2_epochs})

# (a smoke run: every method, ALTER included, at unlearn_epochs)
QUICK = dict(n_authors=4, questions_per_author=2, finetune_epochs=1.0, unlearn_epochs=1.0, eval_retain_per_author=1,
             eval_general=2, max_new_tokens=6, alter={})
