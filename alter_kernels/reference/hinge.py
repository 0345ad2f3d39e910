"""Reference bounded hinge forget loss (docs/method.md §4).

For a row with logits z and true next token y, with y' the highest-scoring token other than y:

    l = max(0, z_y - z_y' + margin)

and the loss is the mean of l over the rows whose label is not ``ignore_index`` (0 when every
row is ignored). Its gradient is +1/M at z_y and -1/M at z_y' on the rows where the hinge is
active (M = number of rows counted), zero elsewhere: the loss stops pushing once the true
token sits ``margin`` below the runner-up, unlike gradient ascent.
"""

from __future__ import annotations

import torch


def hinge_forget_rows_reference(logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0,
                                *, ignore_index: int = -100):
    """``(per_row [N], other_index [N] int64)``: each row's hinge and its runner-up y' (first index
    on ties); 0 and -1 on ignored rows. fp32 (fp64 kept)."""
    z = logits.to(torch.float32) if logits.dtype != torch.float64 else logits
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels)).long()
    z_true = z.gather(1, safe_labels[:, None]).squeeze(1)
    others = z.scatter(1, safe_labels[:, None], float("-inf"))
    z_other, other_index = others.max(1)
    per_row = torch.clamp(z_true - z_other + margin, min=0.0)
    per_row = torch.where(valid, per_row, torch.zeros_like(per_row))
    return per_row, torch.where(valid, other_index, torch.full_like(other_index, -1))


def hinge_forget_loss_reference(logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0,
                                *, ignore_index: int = -100) -> torch.Tensor:
    per_row, _ = hinge_forget_rows_reference(logits, labels, margin, ignore_index=ignore_index)
    count = (labels != ignore_index).sum()
    return per_row.sum() / count.clamp(min=1).to(per_row.dtype)
