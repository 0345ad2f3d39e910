"""Random labels (RL): fine-tune on the forget questions paired with wrong, randomly drawn answers.

    L = NLL( y_rand(x) | x ) over forget examples  +  alpha * NLL_retain        (alpha = 0 by default)

``y_rand(x)`` is the answer of another example (forget or retain, a different answer text), drawn
once per forget example with a generator seeded by the run's seed, so a run is reproducible.
Descending this NLL overwrites the true answer with an unrelated one. The ALTER paper's RL baseline
cites Yao et al. 2024, "Machine Unlearning of Pre-trained Large Language Models" (ACL), whose
mismatch term comes from Yao, Xu & Liu 2024, "Large Language Model Unlearning" (NeurIPS). Default
without a retain term (``alpha = 0``), which is why RL collapses MMLU in the paper's table 1;
``alpha > 0`` adds the retain NLL. open-unlearning has no RL trainer.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar, List, Sequence, Tuple

import torch

from alter.baselines.base import UnlearningMethod, forward_logits
from alter.train.losses import answer_nll


def _with_answer(example, answer: str):
    if dataclasses.is_dataclass(example) and not isinstance(example, type):
        return dataclasses.replace(example, answer=answer)
    return SimpleNamespace(**{**vars(example), "answer": answer})


def random_answers(forget: Sequence, retain: Sequence, seed: int) -> List[str]:
    """For each forget example, the answer of a random other example whose answer text differs."""
    pool = [ex.answer for ex in list(forget) + list(retain)]
    digest = hashlib.sha256(repr((seed, "random_labels")).encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    out = []
    for ex in forget:
        candidates = [a for a in pool if a != ex.answer]
        if not candidates:
            raise ValueError("random labels need at least two different answers among the forget and retain "
                             "examples; every answer is identical")
        out.append(candidates[int(torch.randint(len(candidates), (1,), generator=gen))])
    return out


@dataclass
class RandomLabels(UnlearningMethod):
    name: ClassVar[str] = "rl"
    citation: ClassVar[str] = ("Yao et al. 2024, Machine Unlearning of Pre-trained Large Language Models (ACL); "
                               "Yao, Xu & Liu 2024, Large Language Model Unlearning (NeurIPS)")
    alpha: float = 0.0

    @property
    def uses_retain(self) -> bool:
        return self.alpha > 0

    def prepare_data(self, forget, retain, seed) -> Tuple[List, List]:
        answers = random_answers(forget, retain, seed)
        return [_with_answer(ex, a) for ex, a in zip(forget, answers)], list(retain)

    def loss(self, model, forget_batch, retain_batch, reference):
        forget = answer_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        out = {"loss": forget, "random_label_nll": forget.detach()}
        if self.alpha > 0:
            retain = answer_nll(forward_logits(model, retain_batch), retain_batch["labels"])
            out["loss"] = forget + self.alpha * retain
            out["retain_nll"] = retain.detach()
        return out
