from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.cron import BadCron, check_cron, next_runs


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("0 2 * * * *", "has 6 fields; give the five of standard cron"),
        ("not a cron", "has 3 fields"),
        ("61 * * * *", "is not a valid cron expression (Bad minute)"),
        ("0 0 31 2 *", "is not a valid cron expression"),
    ],
)
def test_bad_cron_is_refused_in_one_line(expression: str, says: str) -> None:
    with pytest.raises(BadCron) as refused:
        check_cron(expression)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_the_next_runs_are_in_utc() -> None:
    after = datetime(2026, 12, 31, 2, 0, tzinfo=UTC)
    assert next_runs("0 2 * * *", after) == [
        datetime(2027, 1, d, 2, 0, tzinfo=UTC) for d in (1, 2, 3)
    ]
    assert check_cron("  30  4 * * 1 ") == "30 4 * * 1"
