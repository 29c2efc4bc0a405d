"""transform.values: timestamps in toISOString form, stored JSON passed through or rejected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from transform.values import Problem, is_json_null, iso_timestamp, stored_json


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (datetime(2024, 1, 15, 10, 30, 0), "2024-01-15T10:30:00.000Z"),
        (datetime(2024, 1, 15, 10, 30, 0, 999_999), "2024-01-15T10:30:00.999Z"),  # truncated
        (datetime(2024, 1, 15, 10, 30, 0, 1_500), "2024-01-15T10:30:00.001Z"),
        (datetime(999, 3, 4, 5, 6, 7), "0999-03-04T05:06:07.000Z"),  # zero-padded year
        (
            datetime(2024, 1, 15, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            "2024-01-15T10:00:00.000Z",
        ),
        ("2024-01-15 10:30:00.123456", "2024-01-15T10:30:00.123Z"),  # SQLite's text form
        ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00.000Z"),
        ("2024-01-15T10:30:00.5+01:00", "2024-01-15T09:30:00.500Z"),
        (1_705_314_600, "2024-01-15T10:30:00.000Z"),  # epoch seconds
        (1_705_314_600_250, "2024-01-15T10:30:00.250Z"),  # epoch milliseconds
        (None, None),
    ],
)
def test_iso_timestamp_matches_javascript_to_iso_string(stored: Any, expected: str | None) -> None:
    assert iso_timestamp(stored) == expected


# Truncation against rounding, on every kind of value a source hands over: one instant 999 µs past
# a millisecond tick (rounding moves it up one millisecond) and one 1 µs before midnight of New
# Year (rounding moves it into the next second, day and year). Truncation keeps both where they are.
AFTER_TICK = "2024-12-31T23:59:59.000Z"  # from 23:59:59.000999
BEFORE_NEW_YEAR = "2024-12-31T23:59:59.999Z"  # from 23:59:59.999999
_PLUS_0530 = timezone(timedelta(hours=5, minutes=30))
_MINUS_08 = timezone(timedelta(hours=-8))


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        # PostgreSQL `timestamp`: naive datetimes (the fast path).
        pytest.param(datetime(2024, 12, 31, 23, 59, 59, 999), AFTER_TICK, id="naive-.000999"),
        pytest.param(datetime(2024, 12, 31, 23, 59, 59, 999_999), BEFORE_NEW_YEAR,
                     id="naive-.999999"),
        # Aware datetimes (a `timestamptz` column): converted to UTC, then truncated.
        pytest.param(datetime(2024, 12, 31, 23, 59, 59, 999, tzinfo=UTC), AFTER_TICK,
                     id="aware-utc-.000999"),
        pytest.param(datetime(2025, 1, 1, 5, 29, 59, 999_999, tzinfo=_PLUS_0530),
                     BEFORE_NEW_YEAR, id="aware-+05:30-.999999"),
        pytest.param(datetime(2024, 12, 31, 15, 59, 59, 999, tzinfo=_MINUS_08), AFTER_TICK,
                     id="aware--08:00-.000999"),
        # SQLite text: its own form, ISO with `T`, `Z` or an offset, and more than six digits.
        pytest.param("2024-12-31 23:59:59.000999", AFTER_TICK, id="text-.000999"),
        pytest.param("2024-12-31 23:59:59.999999", BEFORE_NEW_YEAR, id="text-.999999"),
        pytest.param("2024-12-31T23:59:59.000999Z", AFTER_TICK, id="text-Z-.000999"),
        pytest.param("2025-01-01T05:29:59.999999+05:30", BEFORE_NEW_YEAR,
                     id="text-+05:30-.999999"),
        pytest.param("2024-12-31 23:59:59.9999999", BEFORE_NEW_YEAR, id="text-7-digits"),
        pytest.param(" 2024-12-31 23:59:59.999999 ", BEFORE_NEW_YEAR, id="text-padded"),
        # SQLite numbers: epoch seconds and epoch milliseconds, REAL with sub-millisecond digits.
        pytest.param(1_735_689_599.000999, AFTER_TICK, id="epoch-s-.000999"),
        pytest.param(1_735_689_599.999999, BEFORE_NEW_YEAR, id="epoch-s-.999999"),
        pytest.param(1_735_689_599_000.999, AFTER_TICK, id="epoch-ms-.000999"),
        pytest.param(1_735_689_599_999.999, BEFORE_NEW_YEAR, id="epoch-ms-.999999"),
        pytest.param(1_735_689_599_999, BEFORE_NEW_YEAR, id="epoch-ms-integer"),
        # Digits below the microsecond: rounding to the microsecond first (as
        # datetime.fromtimestamp does) would land on the next second, here the next year.
        pytest.param(1_735_689_599.9999996, BEFORE_NEW_YEAR, id="epoch-s-sub-microsecond"),
        pytest.param(1_735_689_599_999.9996, BEFORE_NEW_YEAR, id="epoch-ms-sub-microsecond"),
        # A decimal the float cannot hold exactly keeps its written milliseconds.
        pytest.param(1_735_689_599.123, "2024-12-31T23:59:59.123Z", id="epoch-s-inexact-float"),
    ],
)  # fmt: skip
def test_iso_timestamp_truncates_and_never_rounds(stored: Any, expected: str) -> None:
    assert iso_timestamp(stored) == expected


@pytest.mark.parametrize("stored", ["yesterday", "", float("nan"), True, b"2024", object()])
def test_iso_timestamp_rejects_what_is_not_a_timestamp(stored: Any) -> None:
    with pytest.raises(ValueError):
        iso_timestamp(stored)


def test_naive_and_utc_aware_datetimes_agree() -> None:
    naive = datetime(2024, 6, 1, 23, 59, 59, 999_000)
    assert iso_timestamp(naive) == iso_timestamp(naive.replace(tzinfo=UTC))


@pytest.mark.parametrize(
    "text", ['{"b": 1,  "a" : [1, 2]}', " [ ] ", '"just a string"', "null", '{"emoji":"🌟"}']
)
@pytest.mark.parametrize("checked", [True, False])
def test_stored_json_text_is_passed_through_byte_for_byte(text: str, checked: bool) -> None:
    encoded = orjson.dumps({"v": stored_json(text, checked=checked)})
    assert encoded == b'{"v":' + text.encode() + b"}"


@pytest.mark.parametrize(
    "text", ['{"title": "Fractions", "sections": [', "{a:1}", "[1,]", "NaN", "", '{"x":"\t"}']
)
def test_unchecked_malformed_json_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        stored_json(text, checked=False)


def test_sqlite_numbers_and_bytes_are_json() -> None:
    assert stored_json(5, checked=False) == 5
    assert stored_json(1.5, checked=False) == 1.5
    assert orjson.dumps(stored_json(b'{"a":1}', checked=False)) == b'{"a":1}'
    assert stored_json(None, checked=False) is None
    for bad in (float("inf"), True, b"\xff\xfe", object()):
        with pytest.raises(ValueError):
            stored_json(bad, checked=False)


@pytest.mark.parametrize(("stored", "expected"), [(None, True), ("null", True), (" null ", True),
                                                  (b"null", True), ("{}", False), ("[]", False)])  # fmt: skip
def test_is_json_null(stored: Any, expected: bool) -> None:
    assert is_json_null(stored) is expected


def test_problem_names_the_place_not_the_value() -> None:
    problem = Problem("lessons", "spec", "abc", "malformed JSON")
    assert str(problem) == "lessons.spec of row abc: malformed JSON, exported as null"
