"""Whole columns of stored values turned into Arrow arrays at once, for the analyst tables.

Building a table row by row in Python (a dict per row, a converter call per value) cost several
times the documents; a column of a batch converted by Arrow costs a fraction. Each function here
takes one column of a batch, as the driver returned it, and gives the array the row-by-row
readers (`transform.tables`, `transform.source_tables`) would give for the same values, or
raises `Irregular` when any value is not of the plain form a database of the contract's types
returns (a SQLite column holding another type, an out-of-range integer, a NULL where the readers
report a problem, a timestamp as text or with a zone). The caller then reads that batch row by
row, so every odd value is handled, and reported, in one place: these functions never decide
what an odd value means. `tests/transform/test_columns.py` compares both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from transform.analyst_schema import TIMESTAMP

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class Irregular(Exception):
    """A column holds a value the fast path does not convert; read its batch row by row."""


def inferred(values: Sequence[Any]) -> pa.Array:
    """`values` as Arrow infers them: one Python type per column, or Irregular."""
    try:
        return pa.array(values)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        raise Irregular from None


def texts(values: Sequence[Any], *, nullable: bool = True) -> pa.Array:
    """A text column of str (and None where `nullable`): as `transform.tables.as_text` makes it."""
    array = inferred(values)
    if array.type == pa.null() and (nullable or not values):
        return pa.nulls(len(array), pa.string())
    if array.type != pa.string() or (array.null_count and not nullable):
        raise Irregular
    return array


def int32s(values: Sequence[Any], *, nullable: bool) -> pa.Array:
    """An integer column within int32 (NULL allowed where `nullable`, as the readers keep it)."""
    array = inferred(values)
    if array.type == pa.null() and (nullable or not values):
        return pa.nulls(len(array), pa.int32())
    if array.type != pa.int64() or (array.null_count and not nullable):
        raise Irregular
    low_high = pc.min_max(array)
    low, high = low_high["min"].as_py(), low_high["max"].as_py()
    if low is not None and (low < _INT32_MIN or high > _INT32_MAX):
        raise Irregular
    return pc.cast(array, pa.int32())


def timestamps(values: Sequence[Any]) -> pa.Array:
    """A timestamp column of naive datetimes (UTC, contract §1) and NULLs, truncated to the
    millisecond toward the past, as `transform.values.iso_timestamp` does for the documents."""
    array = inferred(values)
    if array.type == pa.null():
        return pa.nulls(len(array), TIMESTAMP)
    if array.type != pa.timestamp("us"):  # text, epoch numbers, or a zone: the readers decide
        raise Irregular
    return pc.cast(pc.floor_temporal(array, unit="millisecond"), TIMESTAMP)


def arrow_timestamps(values: pa.Array) -> pa.Array:
    """`timestamps` for a column already in Arrow (`timestamp[us]`, no zone)."""
    if values.type != pa.timestamp("us"):
        raise Irregular
    return pc.cast(pc.floor_temporal(values, unit="millisecond"), TIMESTAMP)


def flags(values: Sequence[Any]) -> pa.Array:
    """A boolean column as Python's `bool(value)` reads it (SQLite's 0/1, NULL false)."""
    array = inferred(values)
    if array.type == pa.null():
        return pa.array([False] * len(array), pa.bool_())
    if array.type == pa.bool_():
        return pc.fill_null(array, False)
    if array.type == pa.int64():
        return pc.fill_null(pc.not_equal(array, 0), False)
    raise Irregular


def text_lists(values: Sequence[Any]) -> pa.Array:
    """A column of lists of str (PostgreSQL's `text[]`) and NULLs, kept as they are."""
    array = inferred(values)
    if array.type == pa.null():
        return pa.nulls(len(array), pa.list_(pa.string()))
    if array.type == pa.list_(pa.null()):
        return pc.cast(array, pa.list_(pa.string()))
    if array.type != pa.list_(pa.string()):  # JSON text (SQLite): the readers parse it
        raise Irregular
    return array


def pseudonyms(
    learner_ids: Sequence[Any] | pa.Array, pseudonym_of: Callable[[int], str]
) -> pa.Array:
    """The pseudonym of each learner id (int, or an Arrow integer array without nulls),
    computed once per distinct id."""
    ids = learner_ids if isinstance(learner_ids, pa.Array) else int64s(learner_ids)
    if not pa.types.is_integer(ids.type) or ids.null_count:
        raise Irregular
    distinct = pc.unique(ids)
    named = pa.array([pseudonym_of(i) for i in distinct.to_pylist()], pa.string())
    return pc.take(named, pc.index_in(ids, distinct))


def int64s(values: Sequence[Any]) -> pa.Array:
    """A NOT NULL integer column (ids)."""
    array = inferred(values)
    if array.type == pa.null() and not values:
        return pa.array([], pa.int64())
    if array.type != pa.int64() or array.null_count:
        raise Irregular
    return array


def question_ids(lesson_ids: pa.Array, indexes: pa.Array) -> pa.Array:
    """`<lesson id>:<index>` for each pair, as `transform.tables.question_id` writes it."""
    return pc.binary_join_element_wise(lesson_ids, pc.cast(indexes, pa.string()), ":")
