"""The worker's budget of document bytes in flight."""

from __future__ import annotations

import threading

import pytest

from learner_export.byte_budget import ByteBudget


def test_reservations_that_fit_are_granted_and_the_rest_refused() -> None:
    budget = ByteBudget(100)
    assert budget.reserve(60)
    assert budget.reserve(40)
    assert not budget.reserve(1)  # refused, and nothing reserved
    assert budget.held == 100
    budget.release(40)
    assert not budget.reserve(41)
    assert budget.reserve(40)
    budget.release(60)
    budget.release(40)
    assert budget.held == 0


def test_a_document_larger_than_the_budget_is_served_alone() -> None:
    budget = ByteBudget(100)
    assert budget.reserve(500)  # alone: granted, or it could never be served
    assert not budget.reserve(1)
    budget.release(500)
    assert budget.reserve(10)
    assert not budget.reserve(500)  # not alone
    budget.release(10)
    assert budget.held == 0


def test_releasing_more_than_was_reserved_is_a_bug() -> None:
    budget = ByteBudget(100)
    with pytest.raises(RuntimeError):
        budget.release(1)
    assert budget.reserve(5)
    with pytest.raises(RuntimeError):
        budget.release(6)
    with pytest.raises(ValueError):
        ByteBudget(0)
    with pytest.raises(ValueError):
        budget.reserve(-1)


def test_concurrent_reservations_never_exceed_the_capacity() -> None:
    budget = ByteBudget(1000)
    peak = [0]
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(2000):
            if budget.reserve(300):
                with lock:
                    peak[0] = max(peak[0], budget.held)
                budget.release(300)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.held == 0
    assert 300 <= peak[0] <= 900  # at most three of 300 in 1,000
