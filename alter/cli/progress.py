"""Progress bars a log file can hold: off a terminal, tqdm redraws at most once a minute.

tqdm redraws a bar on every update; written to a file (``alter-train ... > run.log 2>&1``) each redraw
is a new line, thousands in a few minutes. ``TQDM_MININTERVAL`` and ``TQDM_MAXINTERVAL`` (tqdm reads
``TQDM_*`` environment variables as its defaults; its monitor thread forces a redraw every
``maxinterval`` seconds, 10 by default) set before any bar exists slow the redraws of every bar of
the command and of the worker processes it starts, which inherit the environment. A value the user
set wins; on a terminal nothing changes. The run directory's ``train_log.jsonl`` stays the record of
a run.

Every bar of the library is a ``tqdm.auto.tqdm`` with ``disable=not progress``: ``--no-progress``
turns them all off.
"""

from __future__ import annotations

import os
import sys

SECONDS_OFF_TERMINAL = "60"


def quiet_progress_off_terminal(stream=None) -> None:
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return
    if "TQDM_MININTERVAL" not in os.environ and "TQDM_MAXINTERVAL" not in os.environ:
        os.environ["TQDM_MININTERVAL"] = SECONDS_OFF_TERMINAL
        os.environ["TQDM_MAXINTERVAL"] = SECONDS_OFF_TERMINAL
