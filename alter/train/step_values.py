"""The one device-to-host transfer of a training step.

The trainer's loop needs a few numbers on the host after every step: the loss (to refuse a
non-finite one before the optimizer step), the logged terms, and what phase II's stop rules
read (docs/method.md §4). Each ``float(tensor)`` would be its own host sync on a GPU; here they
are reduced on the device (across processes too, where the stop rules need sums over the whole
step) and copied in one ``tolist()``. Every other line of the step path makes no host sync
(tests/test_no_host_sync.py).
"""

from __future__ import annotations

from typing import Dict

import torch

# summed over data-parallel processes (the stop rules need the whole step's counts and sums)
SUMMED = ("forget_violating", "forget_tokens", "forget_probability_sum", "forget_rows")


def step_values(out: Dict[str, torch.Tensor], accelerator=None) -> Dict[str, float]:
    """Every 0-dim entry of a step's loss dict as a Python float, plus, when ``out`` has
    ``forget_answer_nll`` (``[2, rows]``: summed NLL and token count of each forget answer),
    ``forget_probability_sum`` (the sum over forget rows of ``exp(-NLL / tokens)``, TOFU's per-item
    probability) and ``forget_rows`` (how many rows had forget answer tokens)."""
    values = {k: v.detach().double() for k, v in out.items() if v.dim() == 0}
    nll = out.get("forget_answer_nll")
    if nll is not None:
        total, count = nll.detach().double()
        has = count > 0
        values["forget_probability_sum"] = torch.where(has, torch.exp(-total / count.clamp_min(1)),
                                                       torch.zeros_like(total)).sum()
        values["forget_rows"] = has.sum().double()
    if not values:
        return {}
    keys = list(values)
    device = next(iter(values.values())).device
    flat = torch.stack([values[k].to(device) for k in keys])
    if accelerator is not None and accelerator.num_processes > 1:
        summed = torch.tensor([k in SUMMED for k in keys], device=device)
        total = accelerator.reduce(flat.to(accelerator.device), reduction="sum").to(device)
        flat = torch.where(summed, total, flat)
    return dict(zip(keys, flat.tolist()))          # the step's one host sync
