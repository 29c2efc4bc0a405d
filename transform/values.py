"""Turning stored column values into document values: timestamps and JSON text.

Both tolerate what real databases hold (see contract §1) and never raise on bad data: a value that
cannot be read becomes `null` and a `Problem` naming the row and column (never the value) is
recorded for the caller to report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Problem:
    """A stored value the export could not use: names where, never what (it may be personal)."""

    table: str
    column: str
    row_id: str
    kind: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column} of row {self.row_id}: {self.kind}, exported as null"


MALFORMED_JSON = "malformed JSON"
UNREADABLE_TIMESTAMP = "unreadable timestamp"

# Epoch numbers above this are taken as milliseconds (1e11 seconds is the year 5138).
_EPOCH_MS_THRESHOLD = 1e11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_timestamp(value: Any) -> str | None:
    """`value` as JavaScript's `toISOString()` would print it: UTC, millisecond precision, `Z`.

    Naive datetimes and naive text mean UTC (contract §1); aware ones are converted. Digits below
    the millisecond are truncated, not rounded. SQLite may hand back ISO text (space or `T`,
    optional zone) or epoch numbers (seconds, or milliseconds when very large). None stays None.
    Raises ValueError when the value is none of these.
    """
    if type(value) is datetime and value.tzinfo is None:
        # What PostgreSQL's `timestamp` columns give, so nearly every call: straight to the
        # formatting below, past the type tests.
        return value.isoformat(timespec="milliseconds") + "Z"
    if value is None:
        return None
    moment = _to_datetime(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    # isoformat is C code: a four-digit zero-padded year, and timespec="milliseconds" truncates
    # (the hottest call of the builder: every document has thousands of timestamps).
    return moment.isoformat(timespec="milliseconds") + "Z"


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        # In decimal, as the number was written (a float's shortest repr), so that the digits
        # below the millisecond are dropped exactly: datetime.fromtimestamp would first round to
        # the microsecond, and .9999996 s would become the next second.
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        milliseconds = exact if abs(value) >= _EPOCH_MS_THRESHOLD else exact * 1000
        whole = int(milliseconds.to_integral_value(rounding=ROUND_FLOOR))
        return _EPOCH + timedelta(milliseconds=whole)
    raise ValueError(f"not a timestamp: {type(value).__name__}")


def stored_json(value: Any, *, checked: bool) -> Any:
    """The stored JSON of a column, unchanged, ready for the encoder.

    Text (str, or its UTF-8 bytes) is passed through byte for byte (`orjson.Fragment`), so the
    document holds exactly what the application stored. When `checked` is False (SQLite, where
    JSON is plain TEXT) the text is parsed once to prove it valid. Numbers are what SQLite makes of numeric JSON text. Returns
    None for SQL NULL; raises ValueError for anything that is not valid JSON.
    """
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value)  # orjson parses bytes only if they are UTF-8
    if isinstance(value, str | bytes):
        if not checked:
            orjson.loads(value)  # JSONDecodeError is a ValueError
        return orjson.Fragment(value)
    if isinstance(value, bool):
        raise ValueError("not JSON text: bool")
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValueError(f"not JSON text: {type(value).__name__}")


def is_json_null(stored: Any) -> bool:
    """True for SQL NULL and for stored JSON text `null`: the application cannot tell them apart."""
    if isinstance(stored, bytes | bytearray | memoryview):
        return bytes(stored).strip() == b"null"
    return stored is None or (isinstance(stored, str) and stored.strip() == "null")
