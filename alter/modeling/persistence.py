"""Saving, loading and sharing ALTER adapters (the folder format and the Hub).

An adapter folder holds two files, written atomically together (:func:`alter.io.atomic_directory`):

- ``adapter_config.json``: the :class:`~alter.config.AlterConfig`, the entropy threshold, the domains,
  the adapted layer names, the question router's calibration and the base model's name;
- ``adapter_model.safetensors``: every adapter tensor (shared A, experts B, per-layer routers, the
  question router's banks). Never pickle.

PEFT reads the same file name, so the config carries a ``peft_type`` that PEFT cannot resolve and
whose text says what the folder is: ``peft.PeftModel.from_pretrained`` on an ALTER folder stops with
``KeyError: 'not a PEFT adapter: ...'``. The other way round, :func:`read_adapter_config` names a PEFT
folder's ``peft_type`` and how to load it.

A name that is not a local folder is read as a Hugging Face Hub repository id and fetched with
``huggingface_hub.snapshot_download`` (only the two adapter files); offline, or when the repository
does not exist, the error names the id.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from alter import io as alter_io
from alter.config import AlterConfig

if TYPE_CHECKING:                    # pragma: no cover
    from alter.modeling.model import AlterModel

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CONFIG_FILE = "alter_config.json"          # AlterConfig.save_pretrained: the hyperparameters alone
FORMAT = "alter-adapter"
FORMAT_VERSION = 2          # 2: the question router's banks and calibration (version 1 had per-layer routers only)
NOT_PEFT = ("not a PEFT adapter: an ALTER adapter (adapter_config.json format 'alter-adapter'); load it with "
            "alter.AlterModel.from_pretrained(base_model, path)")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


# ---------------------------------------------------------------------- writing
def adapter_metadata(model: "AlterModel") -> dict:
    """What ``adapter_config.json`` holds for ``model`` (JSON-serialisable)."""
    cfg = model.alter_config
    router = model.question_router
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "peft_type": NOT_PEFT,
        "base_model": model.base_model_name, "theta": model.state.theta, "domains": cfg.domains,
        "r": cfg.r, "alpha": cfg.alpha, "q": cfg.q, "tau_high": cfg.tau_high,
        "top_k": cfg.top_k, "target_modules": cfg.target_modules, "target_layers": list(model.target_names),
        "config": cfg.to_dict(),
        "question_router": router.metadata() if router is not None else None,
    }


def save_adapter_folder(model: "AlterModel", directory, extra: Optional[dict] = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` of ``model`` into ``directory``.

    The two files replace the folder's old ones together or not at all: a failure (disk full, a
    crash) leaves the previous adapter in ``directory`` intact. ``extra`` (JSON-serialisable) is kept
    under the config's ``"extra"`` key. Returns ``directory`` as a :class:`~pathlib.Path`."""
    directory = Path(directory)
    meta = adapter_metadata(model)
    if extra:
        meta["extra"] = extra
    with alter_io.atomic_directory(directory) as tmp:
        alter_io.atomic_save_tensors(tmp / ADAPTER_WEIGHTS, model.adapter_state_dict(), metadata={"format": FORMAT})
        alter_io.atomic_write_json(tmp / ADAPTER_CONFIG, meta)
    return directory


# ---------------------------------------------------------------------- reading
def read_json(path: Path) -> dict:
    """The JSON object in ``path``; ValueError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): the file is damaged") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_adapter_config(directory) -> dict:
    """The parsed ``adapter_config.json`` of an ALTER adapter folder.

    Raises FileNotFoundError (no folder, no config file) or ValueError (not JSON, a PEFT adapter
    (naming its ``peft_type``), or some other file)."""
    directory = Path(directory)
    alter_io.recover_directory(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no ALTER adapter at {directory}: no such directory")
    path = directory / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no ALTER adapter in {directory}: {ADAPTER_CONFIG} is missing")
    meta = read_json(path)
    if meta.get("format") == FORMAT:
        return meta
    if "peft_type" in meta:
        raise ValueError(f"{directory} holds a PEFT adapter (peft_type {meta['peft_type']!r}, base model "
                         f"{meta.get('base_model_name_or_path')!r}), not an ALTER adapter: load it with "
                         f"peft.PeftModel.from_pretrained(base_model, {str(directory)!r})")
    raise ValueError(f"{path} is not an ALTER adapter config (no \"format\": \"{FORMAT}\")")


def config_from_metadata(meta: dict) -> AlterConfig:
    """The :class:`AlterConfig` saved in an adapter's metadata (older keys dropped)."""
    values = dict(meta["config"])
    values.pop("tau_low", None)      # adapters saved before tau_low was removed (it changed no gate)
    return AlterConfig.from_dict(values)


def adapter_files(directory) -> tuple:
    """``(metadata dict, weights path)`` of a local ALTER adapter folder; clear errors when either is missing."""
    directory = Path(directory)
    meta = read_adapter_config(directory)
    weights = directory / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no ALTER adapter weights in {directory}: {ADAPTER_WEIGHTS} is missing")
    return meta, weights


def load_weights(weights: Path, device) -> dict:
    """The tensors of ``adapter_model.safetensors``; a damaged file is a ValueError naming it."""
    try:
        return alter_io.load_tensors(weights, device=device)
    except Exception as exc:                       # safetensors raises its own error types
        raise ValueError(f"{weights} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def load_into(model: "AlterModel", directory, meta: dict, weights: Path) -> None:
    """Check that the saved adapter fits ``model`` (same layers, shapes) and load it: calibration, then weights."""
    saved_layers = list(meta.get("target_layers", model.target_names))
    if list(model.target_names) != saved_layers:
        raise ValueError(f"the adapter in {directory} targets layers {saved_layers[:3]}... which this model "
                         f"does not have the same way ({list(model.target_names)[:3]}...): wrong base model?")
    if model.question_router is not None:
        saved = meta.get("question_router") or {}
        if "threshold" not in saved:
            raise ValueError(f"the adapter in {directory} has no question-router calibration in {ADAPTER_CONFIG}")
        model.question_router.load_metadata(saved)
    model.load_adapter_state_dict(load_weights(weights, model.device))


# ---------------------------------------------------------------------- the Hub
def _hub_error(name: str, exc: Exception) -> FileNotFoundError:
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(exc, LocalEntryNotFoundError):
        why = ("not in the local Hugging Face cache and the Hub cannot be reached (offline: HF_HUB_OFFLINE or "
               "local_files_only, or no network)")
    else:
        why = f"the Hugging Face Hub answered {type(exc).__name__} (no such repository, or it needs a token)"
    return FileNotFoundError(f"no ALTER adapter {name!r}: not a local directory, and as a Hub repository id: {why}")


def resolve_adapter_dir(name_or_path, *, revision: Optional[str] = None, token=None, cache_dir=None,
                        local_files_only: bool = False) -> Path:
    """A local folder holding the adapter ``name_or_path`` names.

    An existing directory is returned as is. A name shaped like a Hub id (``owner/name``) that is not
    a local path is fetched with ``huggingface_hub.snapshot_download`` (only ``adapter_config.json``
    and ``adapter_model.safetensors``, from the cache when offline). Raises FileNotFoundError naming
    ``name_or_path`` when it is neither."""
    path = Path(name_or_path).expanduser()
    alter_io.recover_directory(path)             # a save interrupted mid-swap: its previous copy comes back
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists():
        raise FileNotFoundError(f"no ALTER adapter at {text}: a file, not an adapter directory")
    if not HUB_ID.match(text) or text.startswith((".", "~")):
        raise FileNotFoundError(f"no ALTER adapter at {text}: no such directory (nor a Hub repository id)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(text, revision=revision, token=token, cache_dir=cache_dir,
                                      local_files_only=local_files_only,
                                      allow_patterns=[ADAPTER_CONFIG, ADAPTER_WEIGHTS]))
    except (LocalEntryNotFoundError, HfHubHTTPError, ValueError, OSError) as exc:
        raise _hub_error(text, exc) from None


def model_card(meta: dict, repo_id: str) -> str:
    """A short README.md for a pushed adapter: what it is, how to load it, what unlearning by adapter means."""
    base = meta.get("base_model") or "the base model it was trained on"
    header = "---\nlibrary_name: alter\ntags: [alter, unlearning, lora]\n"
    if meta.get("base_model"):
        header += f"base_model: {meta['base_model']}\n"
    return (header + "---\n\n"
            f"# {repo_id}\n\nAn ALTER unlearning adapter (asymmetric LoRA: a shared A, experts "
            f"{meta.get('domains')}) for {base}. It is not a PEFT adapter.\n\n"
            "```python\nimport alter\n"
            f"model = alter.AlterModel.from_pretrained(base_model, {repo_id!r})\n```\n\n"
            "Only the wrapped model stops producing the forgotten facts: the base weights still hold them, "
            "and anyone with the base model can drop the adapter.\n")


def push_folder(model: "AlterModel", repo_id: str, *, token=None, private: Optional[bool] = None,
                revision: Optional[str] = None, commit_message: str = "Upload ALTER adapter",
                create_repo: bool = True):
    """Save ``model``'s adapter (and a model card) to a temporary folder and upload it to ``repo_id``.

    Returns what ``HfApi.upload_folder`` returns (a ``CommitInfo``)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    if create_repo:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_adapter_folder(model, Path(tmp) / "adapter")
        (folder / "README.md").write_text(model_card(adapter_metadata(model), repo_id))
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                 revision=revision, repo_type="model")
