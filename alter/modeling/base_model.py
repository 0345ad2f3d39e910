"""The base model back from an :class:`alter.AlterModel` (PEFT's ``unload`` / ``get_base_model``) and the
parameter counts PEFT users print: a mixin of :class:`alter.modeling.model.AlterModel`, with the helpers
that undo :func:`alter.wrap` (also used when ``from_pretrained`` fails half-way)."""

from __future__ import annotations

import copy
from typing import Dict, List, Tuple

from torch import nn

from alter.modeling.layer import AlterLinear
from alter.modeling.targets import set_submodule


class BaseModelAccess:
    """``unload``, ``get_base_model``, ``get_nb_trainable_parameters``, ``print_trainable_parameters``."""

    def _require_model(self) -> nn.Module:
        return self.model        # after unload(): AdapterUnloadedError (see __getattr__)

    def unload(self) -> nn.Module:
        """Take the adapters out and return the base model as it was before wrapping.

        Every adapted layer gets its original ``nn.Linear`` object back (the same objects, never copied),
        every parameter its ``requires_grad`` of before wrapping; parameters and buffers were never
        changed, so the model's outputs are bit for bit its outputs before :func:`wrap`. The adapter
        weights are dropped (call :meth:`save_pretrained` first to keep them) and this AlterModel is
        unusable afterwards: using it raises :class:`AdapterUnloadedError`. What stays on the base model:
        its train/eval mode and anything done to it directly (e.g. gradient checkpointing turned on)."""
        base = self._require_model()
        _strip_adapters(base)
        _set_grad_flags(base, self._base_grad_flags)
        del self._modules["model"]
        self.__dict__["_unloaded_model"] = base
        return base

    def get_base_model(self) -> nn.Module:
        """The base model without the adapters, leaving this AlterModel as it is.

        A view, not a copy: the modules on the way to each adapted layer are shallow copies holding the
        original ``nn.Linear`` objects, and every parameter, buffer and hook is shared with the wrapped
        model (no extra memory; training it changes the base under the adapters too). Its class, module
        names, state dict and outputs are those of the model before :func:`wrap`, except that its
        parameters keep ``requires_grad=False`` while wrapped. After :meth:`unload`: the unloaded model."""
        if "_unloaded_model" in self.__dict__:
            return self.__dict__["_unloaded_model"]
        originals = {name: layer.base_layer for name, layer in self.adapter_layers().items()}
        return _replaced_view(self.model, originals)

    def get_nb_trainable_parameters(self) -> Tuple[int, int]:
        """``(trainable, all)`` parameter counts of the wrapped model (base + adapters), as PEFT's."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        """Print ``trainable params: X || all params: Y || trainable%: Z`` (PEFT's line)."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: "
              f"{100 * trainable / max(total, 1):.4f}")


class AdapterUnloadedError(AttributeError):
    """An :class:`AlterModel` was used after :meth:`AlterModel.unload` gave its base model back."""


def _grad_flags(model: nn.Module) -> Dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


def _set_grad_flags(model: nn.Module, flags: Dict[str, bool]) -> None:
    for name, p in model.named_parameters():
        if name in flags:
            p.requires_grad_(flags[name])


def _strip_adapters(model: nn.Module) -> List[str]:
    """Put each :class:`AlterLinear` of ``model`` back to its ``base_layer``; returns their names."""
    names = [name for name, m in model.named_modules() if isinstance(m, AlterLinear)]
    for name in names:
        set_submodule(model, name, model.get_submodule(name).base_layer)
    return names


def _replaced_view(root: nn.Module, replacements: Dict[str, nn.Module]) -> nn.Module:
    """A shallow copy of ``root``'s module tree with ``replacements`` (full name -> module) in place: only
    the modules on the way to a replaced name are copied; parameters, buffers and hooks are shared."""
    copies = {"": copy.copy(root)}
    copies[""]._modules = dict(root._modules)
    for name, module in replacements.items():
        parent = ""
        *path, leaf = name.split(".")
        for part in path:
            here = f"{parent}.{part}" if parent else part
            if here not in copies:
                child = copy.copy(copies[parent]._modules[part])
                child._modules = dict(child._modules)
                copies[parent]._modules[part] = copies[here] = child
            parent = here
        copies[parent]._modules[leaf] = module
    return copies[""]
