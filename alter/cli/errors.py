"""Which exceptions are the user's to fix (one line, no traceback) and how to phrase them."""

from __future__ import annotations

from typing import Optional

from alter.cli.options import UsageError


def describe(exc: BaseException) -> Optional[str]:
    """The one-line message for a user error, or None for a bug (whose traceback should show)."""
    from alter.model_loading import ModelLoadError

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
    import sys

    message = None if debug else describe(exc)
    if message is None:
        raise exc
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
