"""Sequential forget requests from the command line (MUSE's "sustainability"): ``alter-train --adapter``.

    alter-train --adapter DIR --forget NEW --retain R [--model M] [--output OUT] [--request-name NAME]
    alter-train --adapter DIR --remove-request NAME [--model M] [--output OUT]

``DIR`` is an earlier ``alter-train --output`` folder or its ``adapter/`` subfolder. Adding a request
loads the adapter onto the base model, adds one forget expert and trains it alone
(:meth:`alter.train.AlterTrainer.train_new_domain`): the shared A, the retain expert, the earlier experts,
their router banks, the router's threshold and theta stay bit-identical. Removing a request deletes its
expert and bank (:meth:`alter.AlterModel.remove_forget_domain`) and trains nothing. Either way the result
is a new adapter in ``OUT/adapter``, written atomically; the adapter in ``DIR`` is left as it was.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, Optional

from alter.cli.options import DTYPES, UsageError, config_overrides

# config fields that only shape how the new expert trains: a new request may set them (flags or --config YAML)
REQUEST_OVERRIDES = (
    "phase2_epochs", "phase2_min_steps", "lr_phase2", "batch_size", "seed", "max_grad_norm", "weight_decay",
    "gradient_checkpointing", "fused_lm_head", "margin", "lambda_forget", "lambda_retain", "lambda_struct",
    "struct_kl_top_k", "hinge_tokens", "struct_tokens", "anchor_per_forget", "stop_level_scale",
    "stop_stall_scale", "stop_passage_level_scale", "stop_forget_probability", "stop_when_forgotten",
    "stop_window_steps", "stop_answer_overlap",
    "stop_probability_steps", "stop_check_every", "stop_check_every_passages", "stop_check_questions",
    "router_bank_size", "max_length", "system_prompt",
)

REQUEST_HELP = ("With --adapter only these hyperparameters apply, to the new request's training alone: "
                + ", ".join("--" + n.replace("_", "-") for n in REQUEST_OVERRIDES)
                + "; unset, each is the adapter's saved value, not the default shown below. Every other one "
                "(rank, targets, q, theta, router, top-k, ...) is the adapter's and is refused: it shapes or "
                "routes what is already trained.")


# ---------------------------------------------------------------------- where the adapter is
def find_adapter_dir(path: str) -> Path:
    """The adapter folder ``path`` names: itself, or the ``adapter/`` of an ``alter-train --output`` folder."""
    given = Path(path).expanduser()
    for candidate in (given, given / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    if (given / "model" / "config.json").is_file():
        raise UsageError(f"--adapter {path}: a full-parameter baseline run (model/), not an ALTER adapter; "
                         "sequential requests need an ALTER adapter")
    raise UsageError(f"--adapter {path}: no adapter_config.json there nor in {given / 'adapter'} "
                     "(give an alter-train --output folder or its adapter/ subfolder)")


def read_meta(directory: Path) -> dict:
    """The adapter's ``adapter_config.json``; a PEFT or damaged adapter is a UsageError naming it."""
    from alter.modeling import persistence

    try:
        return persistence.read_adapter_config(directory)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--adapter {directory}: {exc}") from None


def run_dir_of(adapter: Path) -> Path:
    """The ``alter-train --output`` folder an adapter folder sits in (the folder itself when it is not ``adapter/``)."""
    return adapter.parent if adapter.name == "adapter" else adapter


# ---------------------------------------------------------------------- checks before any work
def check_combination(args: argparse.Namespace) -> None:
    """Flags that make no sense with ``--adapter`` (or the request flags without it): one UsageError line."""
    if args.adapter is None:
        _require_adapter(args)
    elif args.remove_request is None:
        _refuse_with_adapter(args)
        if not (args.forget and args.retain):
            raise UsageError("--adapter adds a forget request: give --forget NEW --retain R (or --remove-request "
                             "NAME to remove one)")
    else:
        _refuse_with_adapter(args)
        _refuse_with_removal(args)


def _require_adapter(args: argparse.Namespace) -> None:
    for flag, value in (("--remove-request", args.remove_request), ("--request-name", args.request_name)):
        if value is not None:
            raise UsageError(f"{flag} needs --adapter DIR (the adapter that holds the requests)")


def _refuse_with_adapter(args: argparse.Namespace) -> None:
    refused = [("--demo", args.demo, "--demo builds its own data and model; drop --adapter"),
               ("--quick", args.quick, "--quick only applies to --demo"),
               ("--resume", args.resume, "--resume continues an interrupted run; a new request starts from "
                                         "--adapter and is not resumable"),
               ("--method", args.method.strip().lower() != "alter",
                f"--method {args.method}: a baseline cannot add to an ALTER adapter; drop --method"),
               ("--lr/--epochs", args.lr is not None or args.epochs is not None,
                "--lr and --epochs apply to a baseline --method; a new request takes --lr-phase2, --phase2-epochs")]
    for flag, bad, why in refused:
        if bad:
            raise UsageError(f"--adapter with {flag}: {why}")


def _refuse_with_removal(args: argparse.Namespace) -> None:
    extra = [f for f, v in (("--forget", args.forget), ("--retain", args.retain),
                            ("--request-name", args.request_name)) if v is not None]
    if args.config or config_overrides(args):
        extra.append("the hyperparameters (--config, --<hyperparameter>)")
    if extra:
        raise UsageError(f"--remove-request trains nothing: drop {', '.join(extra)}")


def check_output(output: Path, adapter: Path) -> None:
    """The new adapter must not replace the one it starts from (that one is the undo of this request)."""
    out = output.expanduser().resolve()
    if out in (adapter.resolve(), run_dir_of(adapter).resolve()):
        raise UsageError(f"--output {output} is where --adapter's adapter lives; give a new folder so that "
                         "the earlier adapter stays as it is")


def request_overrides(args: argparse.Namespace) -> Dict[str, object]:
    """The hyperparameters given for the new request (``--config`` YAML < flags); a field that belongs to the
    adapter is a UsageError naming it and the fields that may be set."""
    from alter.config import read_yaml

    values: Dict[str, object] = {}
    if args.config:
        try:
            values.update(read_yaml(args.config))
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None
    values.update(config_overrides(args))
    fixed = [k for k in values if k not in REQUEST_OVERRIDES]
    if fixed:
        names = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise UsageError(f"{names}: fixed by the adapter in --adapter (a new request cannot change it); with "
                         f"--adapter only these apply: {', '.join(REQUEST_OVERRIDES)}")
    return values


def request_config(meta: dict, overrides: Dict[str, object]):
    """The adapter's saved config with the new request's overrides (a bad value is a UsageError)."""
    from alter.modeling import persistence

    try:
        return persistence.config_from_metadata(meta).replace(**overrides)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def new_request_name(given: Optional[str], meta: dict) -> str:
    """``given`` (checked), or ``request_<k>``: k = forget domains + 1, the next free one if that is taken."""
    domains = list(meta["domains"])
    if given is not None:
        name = given.strip()
        if not name:
            raise UsageError("--request-name is empty")
        if name in domains:
            kind = "the retain domain" if name == domains[0] else "a request in it already"
            raise UsageError(f"--request-name {name}: {kind} of --adapter (domains: {', '.join(domains)}); "
                             "pick another name")
        return name
    k = len(domains)                          # forget domains + 1
    while f"request_{k}" in domains:
        k += 1
    return f"request_{k}"


def check_removable(name: str, meta: dict) -> None:
    """Only a forget request that exists, and never the last one: an adapter needs a forget expert
    (``AlterConfig`` refuses an empty ``forget_domains``, so such an adapter could not be loaded)."""
    domains = list(meta["domains"])
    requests = domains[1:]
    if name == domains[0]:
        raise UsageError(f"--remove-request {name}: that is the retain domain, which is no request; "
                         f"requests in the adapter: {', '.join(requests)}")
    if name not in requests:
        raise UsageError(f"--remove-request {name}: no such request in the adapter; its requests: "
                         f"{', '.join(requests)}")
    if len(requests) == 1:
        raise UsageError(f"--remove-request {name}: the adapter's only request; an adapter needs at least one "
                         "forget expert (to undo every request, use the base model without the adapter)")


def check_router(meta: dict) -> None:
    """A new request leaves everything trained before bit-identical only with the question router."""
    router = (meta.get("config") or {}).get("router", "question")
    if router != "question":
        raise UsageError(f"--adapter: the adapter uses router={router!r}, whose per-layer routers retrain for a "
                         "new request (earlier requests would change); sequential requests need router='question'")


# ---------------------------------------------------------------------- the two jobs
def load_adapter_model(args: argparse.Namespace, directory: Path, meta: dict):
    """``(AlterModel, tokenizer)``: the base model ``--model`` with the adapter in ``directory`` loaded on it."""
    import torch

    import alter
    from alter.modeling import model_loading

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base, tokenizer = model_loading.load(args.model, device=device, dtype=DTYPES[args.dtype])
    warn_other_base(meta, base, args.model)
    return alter.AlterModel.from_pretrained(base, directory), tokenizer


def warn_other_base(meta: dict, base, model_arg: str) -> None:
    """A warning when the adapter names another base model than ``--model`` loaded (shapes may still fit)."""
    import sys

    saved = meta.get("base_model")
    loaded = getattr(getattr(base, "config", None), "_name_or_path", None)
    if saved and loaded and Path(str(saved)).expanduser() != Path(str(loaded)).expanduser():
        print(f"alter-train: warning: the adapter was trained on {saved}, --model {model_arg} loads {loaded}; "
              "use the earlier run's --model", file=sys.stderr)


def default_output(kind: str) -> Path:
    return Path(f"alter_runs/{kind}-{time.strftime('%Y%m%d-%H%M%S')}")


def run_add_request(args: argparse.Namespace, load_sets) -> int:
    """Train one new forget expert on ``--forget`` into the adapter of ``--adapter``; save every domain to
    OUT/adapter (atomically, by ``train_new_domain``)."""
    from alter.train import AlterTrainer

    directory = find_adapter_dir(args.adapter)
    meta = read_meta(directory)
    check_router(meta)
    name = new_request_name(args.request_name, meta)
    config = request_config(meta, request_overrides(args))
    output = Path(args.output) if args.output else default_output("request")
    check_output(output, directory)
    forget, retain = load_sets(args)
    model, tokenizer = load_adapter_model(args, directory, meta)
    from alter.cli.train import load_reference
    trainer = AlterTrainer(model, tokenizer, config, forget, retain, output_dir=output,
                           checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                           stop_reference=load_reference(getattr(args, "stop_reference", None)))
    trainer.train_new_domain(name)
    phase = trainer.report.phases.get("phase2", {})
    router = trainer.report.entropy_summary.get("question_router") or {}
    print(f"request {name!r}: {len(forget)} forget examples, {phase.get('steps', 0)} steps, "
          f"{phase.get('seconds', 0.0):.0f} s; held-out routing recall of its questions "
          f"{router.get('loo_forget_recall', float('nan')):.2f}")
    print(f"adapter (domains {model.domains}) saved to {output / 'adapter'}")
    return 0


def run_remove_request(args: argparse.Namespace) -> int:
    """Write the adapter of ``--adapter`` without request ``--remove-request`` to OUT/adapter (no training)."""
    directory = find_adapter_dir(args.adapter)
    meta = read_meta(directory)
    name = args.remove_request.strip()
    check_removable(name, meta)
    output = Path(args.output) if args.output else default_output("remove")
    check_output(output, directory)
    model, _ = load_adapter_model(args, directory, meta)
    model.remove_forget_domain(name)
    model.save_pretrained(output / "adapter", extra={"removed_request": name, "from_adapter": str(directory)})
    print(f"removed request {name!r}: adapter (domains {model.domains}) saved to {output / 'adapter'}")
    return 0
