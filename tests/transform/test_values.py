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
