"""`/healthz`'s view of the source database: apart from the exports, and quick whatever happens.

The check never competes with exports: it has its own engine (no pool, so a fresh connection per
check, with a short connect and statement timeout) and runs in a thread of its own, one check at
a time, never in the server's thread pool or on the exports' connections. The thread is a daemon:
a probe stuck on a paused database never holds up the server's exit. Its answer comes within `ANSWER_WITHIN`
seconds: a check still running then (a database that accepts connections but never answers) is
reported as unreachable, and the next requests wait on that same check instead of starting
more. A result is reused for `CACHE_SECONDS`, so a burst of probes costs one query.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import sqlalchemy as sa

from extract.engine import SourceTimeouts, create_source_engine, snapshot
from extract.errors import ExtractError

ANSWER_WITHIN = 0.8
"""Seconds a health request waits for the check (the endpoint promises an answer within 1 s)."""
CACHE_SECONDS = 1.0
"""Seconds a finished check's result is reused."""
PROBE_TIMEOUTS = SourceTimeouts(pool=None, connect=2, statement=1.0)
"""The probe's own bounds: libpq's shortest connect timeout, a one-second statement."""


class HealthCheck:
    """Whether the source at `url` answers a trivial read. Call `reachable` from the event loop."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = create_source_engine(
            url, timeouts=PROBE_TIMEOUTS, poolclass=sa.pool.NullPool
        )
        self._clock = clock
        self._running: Future[bool] | None = None
        self._last: tuple[float, bool] | None = None

    async def reachable(self) -> bool:
        """The last result if it is fresh, else the running (or a new) check's, or False when it
        has not answered within ANSWER_WITHIN seconds."""
        if self._last is not None and self._clock() - self._last[0] < CACHE_SECONDS:
            return self._last[1]
        if self._running is None or self._running.done():
            self._running = Future()
            threading.Thread(
                target=self._probe, args=(self._running,), name="healthz", daemon=True
            ).start()
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(self._running)), ANSWER_WITHIN
            )
        except TimeoutError:
            return False

    def _probe(self, future: Future[bool]) -> None:
        result = False
        try:
            with snapshot(self._engine) as conn:
                conn.exec_driver_sql("SELECT 1").scalar()
            result = True
        except ExtractError:
            pass
        finally:  # whatever else went wrong, the waiting requests get an answer (unreachable)
            self._last = (self._clock(), result)
            future.set_result(result)

    def close(self) -> None:
        """Close the check's engine (a probe still running keeps its own connection)."""
        self._engine.dispose()
