"""Stopping a run on Ctrl-C or SIGTERM, quickly and in a state the next run completes.

A command that runs a flow calls `handle_stop_signals()` first. SIGINT (Ctrl-C) and SIGTERM (what
systemd, Kubernetes and `kill` send) then both raise KeyboardInterrupt in the main thread, as
Ctrl-C alone does by default, and set `STOP`. The chunk threads cannot be interrupted from outside,
so they look at `STOP` between learners and give up their chunk (`ChunkInterrupted`) instead of
finishing it: the command exits within a second or two, not after a chunk of hundreds of
learners. Everything a chunk wrote so far is either complete or a temporary file, and it has no
part record, so the rerun redoes it from the start (the names are the same, nothing doubles).

No Prefect here: the CLI installs the handlers before Prefect is imported.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP = threading.Event()
"""Set once a stop signal has arrived; never cleared in a process (a stopping process stops)."""

INTERRUPTED_LINE = "interrupted; run the same command again to resume"
"""What the command prints on stderr when a stop signal ended it (exit status 130)."""


class ChunkInterrupted(Exception):
    """A chunk gave up because the process is stopping; it wrote no part record."""

    def __init__(self, index: int) -> None:
        super().__init__(f"chunk {index} stopped: the process was interrupted")


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    STOP.set()
    raise KeyboardInterrupt


def handle_stop_signals() -> None:
    """Make SIGINT and SIGTERM set `STOP` and raise KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_stop_signal)


def check_not_stopping(index: int) -> None:
    """Raise ChunkInterrupted when the process is stopping (call it between learners)."""
    if STOP.is_set():
        raise ChunkInterrupted(index)
