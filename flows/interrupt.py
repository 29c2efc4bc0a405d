"""Stopping a run on Ctrl-C or SIGTERM, quickly and in a state the next run completes.

A command that runs a flow calls `handle_stop_signals()` first. SIGINT (Ctrl-C) and SIGTERM (what
systemd, Kubernetes and `kill` send) then both raise KeyboardInterrupt in the main thread, as
Ctrl-C alone does by default, and set `STOP`. The chunk threads cannot be interrupted from outside,
so they look at `STOP` between learners and give up their chunk (`ChunkInterrupted`) instead of
finishing it: the command exits within a second or two, not after a chunk of hundreds of
learners. Everything a chunk wrote so far is either complete or a temporary file, and it has no
part record, so the rerun redoes it from the start (the names are the same, nothing doubles).

No Prefect here: the CLI installs the handlers before Prefect is imported. Prefect's flow engine
then puts its own SIGTERM handler in front for the length of a flow run: it raises
TerminationSignal, reports the run crashed and only then re-sends the signal to the handler it
replaced. Reporting to a server that is itself stopping can take seconds, during which `STOP` is
not set and the chunk threads go on finishing chunks; so the flow calls
`stop_chunks_on_sigterm()` first, which sets `STOP` before Prefect's handler runs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

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


def stop_chunks_on_sigterm() -> None:
    """Make a SIGTERM set `STOP` at once, then run the handler installed now (Prefect's, during a
    flow run). Main thread only; the engine restores its predecessor when the flow run ends, which
    drops this wrapper with it."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_stop_signal or getattr(current, "sets_stop", False):
        return  # already sets STOP first
    signal.signal(signal.SIGTERM, _stop_then(current))


def _stop_then(handler: Any) -> Callable[[int, FrameType | None], None]:
    """A handler that sets `STOP`, then does what `handler` does (a callable, SIG_DFL, SIG_IGN)."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        STOP.set()
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:  # the default action: restore it and end as it would
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    on_sigterm.sets_stop = True  # type: ignore[attr-defined]
    return on_sigterm
