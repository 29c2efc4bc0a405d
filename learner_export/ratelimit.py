"""A per-user limit on exports: at most N in any sliding window of 60 seconds.

In memory, per process: with several server workers each enforces its own window, so a user may
get up to N per worker (documented in the server's help). Only admitted requests count: a client
that waits out the Retry-After it was given is admitted, however often it was refused before.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class RateLimiter:
    """Sliding-window counter keyed by user id. Thread-safe. Memory is bounded by the users seen
    in the last two windows: idle users' entries are swept at most once a window."""

    def __init__(
        self,
        per_window: int,
        *,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_window < 1:
            raise ValueError("the limit must allow at least one request per window")
        self.per_window = per_window
        self.window = window
        self._clock = clock
        self._admitted: dict[int, deque[float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def admit(self, user_id: int) -> int | None:
        """Count one request of `user_id` and return None if it is within the limit; otherwise
        count nothing and return the whole seconds (>= 1) after which a retry will be admitted."""
        now = self._clock()
        horizon = now - self.window
        with self._lock:
            if self._last_sweep <= horizon:  # at most once a window: drop idle users' entries
                self._sweep(horizon)
                self._last_sweep = now
            times = self._admitted.setdefault(user_id, deque())
            while times and times[0] <= horizon:
                times.popleft()
            if len(times) < self.per_window:
                times.append(now)
                return None
            return max(1, math.ceil(times[0] + self.window - now))

    def _sweep(self, horizon: float) -> None:
        for user_id in [u for u, times in self._admitted.items() if times[-1] <= horizon]:
            del self._admitted[user_id]
