"""Which linear layers of a model get an adapter, matched by module name like PEFT's ``target_modules``.

- ``"all-linear"``: every ``nn.Linear`` except the output layer (LM head).
- a list of names: a module matches when its full name equals an entry or ends in ``"." + entry``
  (``["q_proj", "v_proj"]``).
- any other string: a regular expression that must match the full module name.
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple, Union

from torch import nn


def _output_layer(model: nn.Module):
    get = getattr(model, "get_output_embeddings", None)
    try:
        return get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        return None


def _matches(name: str, target: Union[str, Sequence[str]]) -> bool:
    if isinstance(target, str):
        if target == "all-linear":
            return True
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith("." + t) for t in target)


def find_target_linears(model: nn.Module, target: Union[str, List[str]]) -> List[Tuple[str, nn.Linear]]:
    """``(name, module)`` of every ``nn.Linear`` selected by ``target``; raises if none match."""
    if isinstance(target, str) and target != "all-linear":
        try:
            re.compile(target)
        except re.error as exc:
            raise ValueError(f"target_modules {target!r} is neither 'all-linear' nor a valid regex: {exc}") from None
    head = _output_layer(model)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]
    chosen = [(n, m) for n, m in linears if _matches(n, target)]
    if not chosen:
        examples = ", ".join(sorted({n.rsplit(".", 1)[-1] for n, _ in linears})[:12]) or "none"
        raise ValueError(f"target_modules {target!r} matched no linear layer of {type(model).__name__}; "
                         f"its linear layers end in: {examples}")
    return chosen


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
