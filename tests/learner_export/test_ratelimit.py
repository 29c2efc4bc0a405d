"""The per-user sliding window, shared through a SQLite file by every limiter that opens it."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from learner_export.ratelimit import (
    MAX_REFUSALS_KEPT,
    RateLimitBusy,
    RateLimiter,
    RateLimitUnavailable,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(tmp_path: Path, per_window: int, clock: Clock) -> RateLimiter:
    return RateLimiter(tmp_path / "rate.sqlite3", per_window, clock=clock)


def test_admits_up_to_the_limit_then_says_when_to_retry(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, 3, clock)
    assert [limiter.admit(7) for _ in range(3)] == [None, None, None]
    clock.now += 10.5
    assert limiter.admit(7) == 50  # the first admitted request leaves the window at 1060
    clock.now = 1060.0
    assert limiter.admit(7) is None


def test_refusals_do_not_count(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, 1, clock)
    assert limiter.admit(1) is None
    for _ in range(100):
        assert limiter.admit(1) is not None
    clock.now += 60
    assert limiter.admit(1) is None


def test_users_are_counted_apart(tmp_path: Path) -> None:
    limiter = _limiter(tmp_path, 1, Clock())
    assert limiter.admit(1) is None
    assert limiter.admit(2) is None
    assert limiter.admit(1) is not None


def test_has_room_is_false_while_this_process_refusal_lasts(tmp_path: Path) -> None:
    clock = Clock()
    first, second = _limiter(tmp_path, 1, clock), _limiter(tmp_path, 1, clock)
    assert first.has_room(7)
    assert first.admit(7) is None
    assert first.has_room(7)  # admitted, never refused: nothing known against it
    assert first.admit(7) == 60
    assert not first.has_room(7) and first.has_room(8)  # per user
    assert second.has_room(7)  # a hint: another process's refusal is not seen...
    assert second.admit(7) == 60  # ...and admit alone decides
    assert not second.has_room(7)
    clock.now += 59.5
    assert not first.has_room(7)
    clock.now += 0.5
    assert first.has_room(7)
    assert first.admit(7) is None
    assert first.has_room(7)


def test_expired_refusals_are_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, 1, clock)
    for user in range(MAX_REFUSALS_KEPT + 1):
        limiter.admit(user)
        limiter.admit(user)  # refused until now + 60
    assert len(limiter._refused_until) == MAX_REFUSALS_KEPT + 1
    clock.now += 61
    limiter.admit(-1)
    limiter.admit(-1)
    assert list(limiter._refused_until) == [-1]


def test_retry_after_is_at_least_one_second(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, 1, clock)
    limiter.admit(1)
    clock.now += 59.999
    assert limiter.admit(1) == 1


def test_idle_users_are_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, 5, clock)
    for user in range(100):
        limiter.admit(user)
    clock.now += 61
    limiter.admit(1000)
    with sqlite3.connect(limiter.path) as db:
        assert db.execute("SELECT DISTINCT user_id FROM admitted").fetchall() == [(1000,)]


def test_two_limiters_on_one_file_share_the_window(tmp_path: Path) -> None:
    """What two worker processes see: each opens the file, neither admits beyond the limit."""
    clock = Clock()
    first, second = _limiter(tmp_path, 2, clock), _limiter(tmp_path, 2, clock)
    assert first.admit(5) is None
    assert second.admit(5) is None
    assert first.admit(5) is not None
    assert second.admit(5) is not None


def test_concurrent_admissions_never_exceed_the_limit(tmp_path: Path) -> None:
    clock = Clock()
    limiters = [_limiter(tmp_path, 10, clock) for _ in range(4)]
    results: list[int | None] = []
    lock = threading.Lock()

    def ask(limiter: RateLimiter) -> None:
        for _ in range(10):
            answer = limiter.admit(9)
            with lock:
                results.append(answer)

    threads = [threading.Thread(target=ask, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(None) == 10
    assert len(results) == 40


def _first_answers(limiters: list[RateLimiter]) -> list[int | Exception | None]:
    """Each limiter's answer to one request, all asked at the same moment from their threads."""
    start = threading.Barrier(len(limiters))
    answers: list[int | Exception | None] = []

    def first(limiter: RateLimiter) -> None:
        start.wait()
        try:
            answers.append(limiter.admit(1))
        except RateLimitUnavailable as exc:
            answers.append(exc)

    threads = [threading.Thread(target=first, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_workers_opening_a_new_store_at_once_all_get_it(tmp_path: Path) -> None:
    """Four workers' first requests on a store that does not exist yet, at the same moment, 50
    times: each is decided (the switch to WAL mode does not wait for the file's lock by itself:
    without its retries about 7 % of these rounds had a request fail)."""
    for round_ in range(50):
        limiters = [_limiter(tmp_path / str(round_), 10, Clock()) for _ in range(4)]
        assert _first_answers(limiters) == [None] * 4, round_
        for limiter in limiters:
            limiter.close()


def test_an_entry_from_the_future_is_not_trusted(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, 1, clock)
    assert limiter.admit(1) is None
    clock.now -= 3600  # the wall clock was set back an hour
    assert limiter.admit(1) is None


def test_the_store_is_private(tmp_path: Path) -> None:
    limiter = _limiter(tmp_path, 1, Clock())
    limiter.admit(1)
    assert stat.S_IMODE(limiter.path.stat().st_mode) == 0o600


def test_a_store_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    limiter = RateLimiter(tmp_path / "file" / "rate.sqlite3", 1, clock=Clock())
    with pytest.raises(RateLimitUnavailable, match=r"rate\.sqlite3"):
        limiter.admit(1)


def test_a_limit_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        RateLimiter(tmp_path / "rate.sqlite3", 0)


def _counts(path: Path) -> tuple[dict[int, int], dict[int, int]]:
    """The kept count of each user, and the count of their entries."""
    with sqlite3.connect(path) as db:
        kept = dict(db.execute("SELECT user_id, n FROM admitted_count").fetchall())
        entries = db.execute("SELECT user_id, count(*) FROM admitted GROUP BY user_id").fetchall()
    return kept, dict(entries)


def test_the_kept_counts_follow_the_entries(tmp_path: Path) -> None:
    """Admissions, expiries, the sweep and entries from a clock set back: each user's kept count
    is always the number of their entries (a decision reads the count, not the entries)."""
    clock = Clock()
    limiter = _limiter(tmp_path, 3, clock)
    answers = []
    for step in range(1, 241):
        # Bursts, pauses past the window (the sweep), and now and then a clock set far back.
        clock.now += -150.0 if step % 80 == 0 else 70.0 if step % 40 == 0 else 2.5
        answers.append(limiter.admit(step % 3))
        kept, entries = _counts(limiter.path)
        assert kept == entries
    assert None in answers and any(answers)  # admitted and refused alike


def test_a_store_without_kept_counts_gets_them(tmp_path: Path) -> None:
    """A store an older version made holds the entries alone: the first limiter to open it counts
    them, so the window it holds still decides."""
    path = tmp_path / "rate.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE admitted (user_id INTEGER NOT NULL, at REAL NOT NULL)")
        db.execute("CREATE INDEX admitted_by_user ON admitted (user_id, at)")
        db.executemany("INSERT INTO admitted VALUES (?, ?)", [(7, 990.0), (7, 995.0), (8, 999.0)])
    db.close()
    limiter = RateLimiter(path, 3, clock=Clock())
    assert limiter.admit(7) is None
    assert limiter.admit(7) == 50  # the entry of 990 leaves the window at 1050
    assert limiter.admit(8) is None
    assert _counts(path) == ({7: 3, 8: 2}, {7: 3, 8: 2})
    second = RateLimiter(path, 3, clock=Clock())  # a second opening adds nothing twice
    assert second.admit(8) is None
    assert _counts(path) == ({7: 3, 8: 3}, {7: 3, 8: 3})


def test_a_decision_that_may_not_wait_says_busy_and_counts_nothing(tmp_path: Path) -> None:
    """`admit(wait=False)` (the event loop's): another connection writing the store, or another
    thread of this process deciding, makes it raise RateLimitBusy at once; nothing is counted,
    and once the store is free the same request is admitted (and counted once)."""
    clock = Clock()
    limiter = _limiter(tmp_path, 1, clock)
    assert limiter.admit(1) is None  # the store exists
    other = sqlite3.connect(tmp_path / "rate.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(RateLimitBusy):
            limiter.admit(2, wait=False)
        assert time.monotonic() - started < 1  # not BUSY_TIMEOUT_SECONDS
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert limiter.admit(2, wait=False) is None
    assert limiter.admit(2) == 60  # counted once: the limit is 1
    with limiter._lock, pytest.raises(RateLimitBusy):  # a thread of this process deciding
        limiter.admit(3, wait=False)
    assert limiter.admit(3, wait=False) is None
    # The connection waits again afterwards: a waiting decision outlasts a short lock.
    other = sqlite3.connect(
        tmp_path / "rate.sqlite3", isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.3, lambda: other.execute("ROLLBACK"))
    timer.start()
    try:
        assert limiter.admit(4) is None
    finally:
        timer.join()
        other.close()
