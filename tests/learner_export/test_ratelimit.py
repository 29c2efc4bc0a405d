"""The per-user sliding window, shared through a SQLite file by every limiter that opens it."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from learner_export.ratelimit import MAX_REFUSALS_KEPT, RateLimiter, RateLimitUnavailable


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
