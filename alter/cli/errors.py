"""Which exceptions are the user's to fix (one line, no traceback) and how to phrase them, and the
frame every command runs in (:func:`run_command`)."""

from __future__ import annotations

import sys
from typing import Callable, Optional

from alter.cli.options import UsageError


def describe(exc: BaseException) -> Optional[str]:
    """The one-line message for a user error, or None for a bug (whose traceback should show)."""
    from alter.modeling.model_loading import ModelLoadError

    if isinstance(exc, (UsageError, ModelLoadError)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return str(exc) if exc.filename is None else f"file not found: {exc.filename}"
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        text = str(exc).strip().strip("'\"")
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def report(prog: str, exc: BaseException, debug: bool) -> int:
    """Print a user error as one line and return exit code 2; re-raise bugs (and everything under --debug)."""
    message = None if debug else describe(exc)
    if message is None:
        raise exc
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def run_command(prog: str, args, body: Callable[[], int],
                interrupted: str = "interrupted (resume with --resume)") -> int:
    """Run a command's ``body`` with its logging, its progress bars and ``--threads`` set up; Ctrl-C
    exits 130 with one line, a user error 2 with one line (:func:`report`)."""
    from alter.cli.logs import configure_logging
    from alter.cli.progress import quiet_progress_off_terminal

    configure_logging()
    quiet_progress_off_terminal()
    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for user errors; --debug for the rest
        return report(prog, exc, args.debug)
