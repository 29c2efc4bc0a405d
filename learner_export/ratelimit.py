"""A per-user limit on exports: at most N in any sliding window of 60 seconds, shared by every
worker process of one server.

The window lives in a small SQLite file (WAL mode) beside the audit log, not in a process's
memory: with `--workers 2` a limit of 2 a minute admits 2, not 4. Each decision is one
`BEGIN IMMEDIATE` transaction (the file's write lock), so two workers never both take the last
place, and each reads the clock only once it holds that lock. Only admitted requests count: a
client that waits out the Retry-After it was given is admitted, however often it was refused
before. Times are wall-clock seconds (`time.time`, the one clock every process of the host
shares); an entry more than a window in the future (the clock was set back) is dropped rather
than trusted. The file holds user ids and times only, mode 0600.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

WINDOW_SECONDS = 60.0
BUSY_TIMEOUT_SECONDS = 5.0
"""How long a decision waits for another worker's transaction on the file before it fails."""
FILE_MODE = 0o600
MAX_REFUSALS_KEPT = 4096
"""Refusals a process remembers for `RateLimiter.has_room` before it drops the expired ones."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS admitted (user_id INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS admitted_by_user ON admitted (user_id, at);
"""

_COUNTS = """
CREATE TABLE admitted_count (user_id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO admitted_count (user_id, n) SELECT user_id, count(*) FROM admitted GROUP BY user_id;
CREATE TRIGGER admitted_counted AFTER INSERT ON admitted BEGIN
  INSERT INTO admitted_count (user_id, n) VALUES (NEW.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER admitted_uncounted AFTER DELETE ON admitted BEGIN
  UPDATE admitted_count SET n = n - 1 WHERE user_id = OLD.user_id;
  DELETE FROM admitted_count WHERE user_id = OLD.user_id AND n <= 0;
END;
"""
"""Each user's number of entries in `admitted`, kept by triggers in the same transactions as the
entries, so a decision reads one row where `count(*)` walked every entry of the window: with a
high limit (a service account's, or the benchmarks' 10^8) a user's entries reach thousands.
Created, and filled from the entries already there, by the first process that opens a store
without it (a store an older version made)."""


class RateLimitUnavailable(Exception):
    """The shared window could not be read or written (locked too long, disk trouble)."""


class RateLimitBusy(Exception):
    """`admit(wait=False)` found the store being written (by another worker, or by a thread of
    this one): it counted nothing, and a caller that may wait can ask again."""


class RateLimiter:
    """Sliding-window counter keyed by user id, stored at `path`. Thread-safe, process-safe.

    The store holds at most `per_window` entries per user active in the last two windows: idle
    users' entries are swept at most once a window by each process.
    """

    def __init__(
        self,
        path: Path,
        per_window: int,
        *,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_window < 1:
            raise ValueError("the limit must allow at least one request per window")
        self.path = path
        self.per_window = per_window
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._last_sweep = -math.inf
        self._refused_until: dict[int, float] = {}
        """This process's last refusal of each user: the clock time its Retry-After ends."""

    def admit(self, user_id: int, *, wait: bool = True) -> int | None:
        """Count one request of `user_id` and return None if it is within the limit; otherwise
        count nothing and return the whole seconds (>= 1) after which a retry will be admitted.
        Raises `RateLimitUnavailable` when the shared store cannot be used.

        `wait=False`: raise `RateLimitBusy` at once, having counted nothing, where the decision
        would wait for the store's write lock (up to BUSY_TIMEOUT_SECONDS, sleeping): an event
        loop must not sleep, so it asks again from a worker thread."""
        if not self._lock.acquire(blocking=wait):
            raise RateLimitBusy("a thread of this process is deciding")
        try:
            try:
                db = self._connection()
                self._begin(db, wait)
                try:
                    # Read the clock holding the write lock: an entry written before is older.
                    now = self._clock()
                    retry_after = self._decide(db, user_id, now)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise RateLimitUnavailable(
                    f"the rate limit's store {self.path} cannot be used ({type(exc).__name__})"
                ) from None
            self._remember(user_id, now, retry_after)
        finally:
            self._lock.release()
        return retry_after

    @staticmethod
    def _begin(db: sqlite3.Connection, wait: bool) -> None:
        """Take the store's write lock: waiting for it up to BUSY_TIMEOUT_SECONDS, or (`wait`
        False) not at all, raising `RateLimitBusy` if another connection holds it."""
        if wait:
            db.execute("BEGIN IMMEDIATE")
            return
        db.execute("PRAGMA busy_timeout = 0")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise RateLimitBusy("another connection is writing the store") from None
            raise
        finally:
            db.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT_SECONDS * 1000)}")

    def has_room(self, user_id: int) -> bool:
        """False while a refusal of `user_id` by this process lasts (until its Retry-After is
        over), True otherwise: what this process knows without reading the store. A hint for
        skipping work that `admit` is bound to refuse, never a decision: `admit` alone decides,
        and another worker's refusals are not seen here (the first request after one costs a
        worker its full work, then the hint holds)."""
        until = self._refused_until.get(user_id)
        return until is None or self._clock() >= until

    def _remember(self, user_id: int, now: float, retry_after: int | None) -> None:
        """Note `admit`'s answer for `has_room` (holding the lock); expired notes are dropped
        once they pile up, so the map holds at most the users refused in the last window or
        so, plus MAX_REFUSALS_KEPT."""
        if retry_after is None:
            self._refused_until.pop(user_id, None)
            return
        self._refused_until[user_id] = now + retry_after
        if len(self._refused_until) > MAX_REFUSALS_KEPT:
            self._refused_until = {u: t for u, t in self._refused_until.items() if t > now}

    def _decide(self, db: sqlite3.Connection, user_id: int, now: float) -> int | None:
        horizon = now - self.window
        future = now + self.window  # beyond it, only a clock set back far could have written
        if self._last_sweep <= horizon:  # at most once a window: drop idle users' entries
            db.execute("DELETE FROM admitted WHERE at <= ? OR at > ?", (horizon, future))
            self._last_sweep = now
        else:
            # Two ranges of the index, not one statement with OR: SQLite reads an OR of two
            # ranges by walking every entry of the user.
            db.execute("DELETE FROM admitted WHERE user_id = ? AND at <= ?", (user_id, horizon))
            db.execute("DELETE FROM admitted WHERE user_id = ? AND at > ?", (user_id, future))
        counted = db.execute(
            "SELECT n FROM admitted_count WHERE user_id = ?", (user_id,)
        ).fetchone()
        if counted is None or counted[0] < self.per_window:
            db.execute("INSERT INTO admitted (user_id, at) VALUES (?, ?)", (user_id, now))
            return None
        (oldest,) = db.execute(
            "SELECT min(at) FROM admitted WHERE user_id = ?", (user_id,)
        ).fetchone()
        return max(1, math.ceil(float(oldest) + self.window - now))

    def _connection(self) -> sqlite3.Connection:
        """The process's connection to the store, opened (and the store created) on first use:
        after the server has forked or spawned its workers, never before."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it; its -wal and -shm files take the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
            try:
                _prepare(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def close(self) -> None:
        """Close the process's connection (it is reopened on the next `admit`)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _prepare(db: sqlite3.Connection) -> None:
    """Put the store in WAL mode and create its tables (the entries, and their count per user).
    The switch to WAL takes the file's exclusive lock and, unlike other statements, does not
    wait for it: SQLite answers "database is locked" at once while another connection holds a
    lock, as when several workers open a new store at the same moment (7 % of the time with
    four). So it is retried for up to BUSY_TIMEOUT_SECONDS; on a file already in WAL mode it
    changes nothing."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
    db.execute("PRAGMA synchronous=NORMAL")  # a lost last entry after a crash is harmless
    db.executescript(_SCHEMA)
    # Under the write lock: two workers opening an older store at once add the counts once.
    db.execute("BEGIN IMMEDIATE")
    try:
        found = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'admitted_count'"
        ).fetchone()
        if found is None:
            for statement in _statements(_COUNTS):
                db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """The statements of `script`, each whole (a trigger's body holds semicolons too)."""
    statements: list[str] = []
    pending = ""
    for line in script.strip().splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements
