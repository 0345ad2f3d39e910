"""Training checkpoints: adapter, optimizer and progress, written atomically with safetensors.

A checkpoint directory ``<output>/checkpoints/step-<global step>`` holds

- the adapter (``adapter_config.json`` + ``adapter_model.safetensors``, as ``save_adapter``);
- ``optimizer.safetensors``: every tensor of the optimizer's state, keyed
  ``state.<param index>.<name>``, plus the RNG state;
- ``trainer_state.json``: the phase, the step within it, the global step, theta, the optimizer's
  param groups (without tensors) and the non-tensor entries of its state.

Nothing is pickled. The whole directory appears at once (``alter.io.atomic_directory``), so an
interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Dict, Optional

import torch

from alter import io as alter_io

STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def _split_optimizer_state(optimizer: torch.optim.Optimizer):
    sd = optimizer.state_dict()
    tensors: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, Dict[str, object]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, scalars, sd["param_groups"]


def save_checkpoint(directory, model, optimizer: torch.optim.Optimizer, progress: dict, keep: int = 2) -> Path:
    """Write ``directory/step-<progress['global_step']>``; keep only the newest ``keep`` checkpoints."""
    directory = Path(directory)
    target = directory / f"step-{int(progress['global_step']):07d}"
    tensors, scalars, groups = _split_optimizer_state(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    with alter_io.atomic_directory(target) as tmp:
        model.save_adapter(tmp / "adapter")
        alter_io.atomic_save_tensors(tmp / OPTIM_FILE, tensors)
        alter_io.atomic_write_json(tmp / STATE_FILE, {"progress": progress, "param_groups": groups,
                                                       "state_scalars": scalars})
    existing = sorted(p for p in directory.iterdir() if _STEP_DIR.match(p.name))
    for old in existing[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(directory) -> Optional[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for entry in list(directory.iterdir()):            # a swap a crash interrupted: bring the old copy back
        if entry.name.startswith(".") and entry.name.endswith(".old"):
            alter_io.recover_directory(directory / entry.name[1:-len(".old")])
    found = sorted(p for p in directory.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file())
    return found[-1] if found else None


def read_progress(checkpoint) -> dict:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())["progress"]


def restore_optimizer(checkpoint, optimizer: torch.optim.Optimizer) -> None:
    """Load the optimizer state (and the torch RNG) saved by :func:`save_checkpoint`."""
    checkpoint = Path(checkpoint)
    meta = json.loads((checkpoint / STATE_FILE).read_text())
    tensors = alter_io.load_tensors(checkpoint / OPTIM_FILE)
    state: Dict[int, Dict[str, object]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, entries in meta["state_scalars"].items():
        state.setdefault(int(idx), {}).update(entries)
    current = optimizer.state_dict()
    if len(current["param_groups"]) != len(meta["param_groups"]) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(current["param_groups"], meta["param_groups"])):
        raise ValueError(f"checkpoint {checkpoint} was written for a different set of trainable parameters")
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
