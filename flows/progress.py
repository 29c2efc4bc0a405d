"""A progress bar over a run's chunks, on a terminal only (logs and pipes get none)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def chunk_progress(total: int, done: int) -> Iterator[Callable[[], None]]:
    """Yields `advance()`, to call once per finished chunk; draws a bar when stderr is a TTY."""
    if not sys.stderr.isatty() or total == 0:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "chunks",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as progress:
        bar = progress.add_task("chunks", total=total, completed=done)
        yield lambda: progress.advance(bar)
