"""What the commands show while they run: the library's ``logging`` messages, plainly, on stderr.

The library (``alter``, ``alter_kernels``) logs through ``logging.getLogger(__name__)`` and never
prints; a command calls :func:`configure_logging` once so that INFO messages (``[demo] ...``,
``[compare] ...``) reach the user as plain lines. A Python user sees none of them unless they
configure ``logging`` themselves (e.g. ``logging.basicConfig(level=logging.INFO)``).
"""

from __future__ import annotations

import logging
import sys

LIBRARY_LOGGERS = ("alter", "alter_kernels")
FORMAT = "%(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message (a test's capture included)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):          # StreamHandler.__init__ / setStream assign it; stderr is read on use
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """INFO and above of the library's loggers to stderr, one plain line each. Idempotent."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter(FORMAT))
            logger.addHandler(handler)
        logger.propagate = False      # one line per record, even where another library configured the root
