"""One export request's reads: who asks, for whom, and that learner's rows, in one snapshot.

The HTTP export reads the requester's and the learner's `users` rows to decide, then the
learner's profile, achievements and lessons to build. Here the four reads go out together, the
three of the learner's rows guarded in SQL by the endpoint's rule (`queries.export_allowed`), so
a refused request reads no row of the learner. On PostgreSQL they go out in psycopg's pipeline
mode with the transaction's BEGIN and COMMIT: one round trip to the server per request, where
reading the accounts, then the rows, then committing took four. The statements are compiled once
per process, and their text never changes (the ids are parameters), so psycopg prepares them on
the server after a few uses and the server stops planning them. `read_request_async` sends the
same pipeline on an asyncio connection (the endpoint's, on PostgreSQL), so that a server waits for
the database on its event loop rather than in a thread.

Invariants: every read sees one snapshot (REPEATABLE READ, read-only); `RequestRows.allowed` is
the database's verdict on the same rows the caller decides from; `RequestRows.learner` holds the
learner's rows exactly as `reader.read_learner` gives them, and is None unless `allowed`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from extract import queries
from extract.records import LearnerRows, Row

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class RequestRows:
    """What one export request read.

    `users`: the `users` rows (every column but `password`) of the requester and the learner,
    keyed by id; an id with no user is absent. `allowed`: whether the database found the
    requester may export the learner (False when neither user exists). `learner`: the learner's
    rows when `allowed`, else None.
    """

    users: dict[int, Row]
    allowed: bool
    learner: LearnerRows | None


def read_request(
    conn: Connection, requester_id: int, learner_id: int, *, lesson_limit: int
) -> RequestRows:
    """Read what an export of `learner_id` by `requester_id` needs, in one snapshot: at most
    `lesson_limit` lessons (the most recent), with the learner's full count. `conn` is in no
    transaction (`extract.engine.source_connection`), and in none afterwards."""
    params = _params(requester_id, learner_id, lesson_limit)
    dialect = conn.dialect.name
    if dialect == queries.POSTGRESQL:
        results = _pipelined(conn, params)
    else:
        with conn.begin():  # the SQLite engine's BEGIN: one snapshot for the four reads
            results = [_as_dicts(conn.execute(s, params)) for s in _statements(dialect)]
    return _request_rows(learner_id, *results, json_checked=dialect == queries.POSTGRESQL)


async def read_request_async(
    conn: AsyncConnection, requester_id: int, learner_id: int, *, lesson_limit: int
) -> RequestRows:
    """`read_request` on a PostgreSQL connection of an asyncio engine
    (`extract.engine.async_source_connection`): the same statements in the same one-round-trip
    pipeline, the same rows, and the event loop free while the database answers."""
    params = _params(requester_id, learner_id, lesson_limit)
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not driver.autocommit:  # type: ignore[union-attr]
        # As `_pipelined` says. The source engine's connections are in autocommit already
        # (`create_async_source_engine`), which spares this switch and the pool's switch back.
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
    dbapi = conn.dialect.loaded_dbapi
    statements = _compiled(conn.dialect)
    try:
        async with driver.pipeline():  # type: ignore[union-attr]
            await driver.execute(_BEGIN)  # type: ignore[union-attr]
            cursors = [driver.cursor() for _ in statements]  # type: ignore[union-attr]
            for cursor, statement in zip(cursors, statements, strict=True):
                await cursor.execute(statement.sql, {**statement.defaults, **params})
            await driver.execute("COMMIT")  # type: ignore[union-attr]
        results = []
        for cursor, statement in zip(cursors, statements, strict=True):
            results.append(_dicts(statement, await cursor.fetchall()))
            await cursor.close()
    except dbapi.Error as exc:
        await conn.invalidate()
        raise sa.exc.DBAPIError.instance(statements[0].sql, {}, exc, dbapi.Error) from None
    except BaseException:  # cancelled mid-pipeline: the session's state is unknown
        await asyncio.shield(conn.invalidate())
        raise
    return _request_rows(learner_id, *results, json_checked=True)


def _params(requester_id: int, learner_id: int, lesson_limit: int) -> dict[str, Any]:
    return {
        queries.REQUESTER: requester_id,
        queries.LEARNER: learner_id,
        queries.LEARNER_TEXT: str(learner_id),
        queries.LESSON_LIMIT: lesson_limit,
    }


def _request_rows(
    learner_id: int,
    users: list[dict[str, Any]],
    profiles: list[dict[str, Any]],
    achievements: list[dict[str, Any]],
    lessons: list[dict[str, Any]],
    *,
    json_checked: bool,
) -> RequestRows:
    allowed = False
    found: dict[int, Row] = {}
    for user in users:
        allowed = bool(user.pop(queries.EXPORT_ALLOWED))  # the same on every row
        found[user["id"]] = user
    if not allowed:
        return RequestRows(users=found, allowed=False, learner=None)
    total = 0
    for lesson in lessons:
        total = cast(int, lesson.pop(queries.LESSON_TOTAL))
    learner = LearnerRows(
        learner_id=learner_id,
        user=found[learner_id],
        profile=profiles[0] if profiles else None,
        lessons=lessons,
        lesson_total=max(total, len(lessons)),
        achievements=achievements,
        json_checked=json_checked,
    )
    return RequestRows(users=found, allowed=True, learner=learner)


@functools.cache
def _statements(dialect: str) -> tuple[queries.AnySelect, ...]:
    """The request's statements for `dialect`, built once (SQLAlchemy also caches their
    compiled form per engine, keyed on the statement)."""
    built = queries.request_statements(dialect)
    return built.users, built.profile, built.achievements, built.lessons


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    defaults: Mapping[str, Any]
    """The statement's constant parameters (the roles of `export_allowed`)."""
    columns: tuple[str, ...]
    """The names of its result's columns, in order (psycopg would build them, per result,
    from the result's description)."""


_COMPILED: dict[tuple[str, str, str], tuple[_Compiled, ...]] = {}
"""The request's statements as SQL text, by kind of dialect: strings, never a dialect or engine
(an engine per test or per chunk would otherwise stay alive here)."""


def _compiled(dialect: Dialect) -> tuple[_Compiled, ...]:
    """The request's statements as `dialect`'s driver takes them, compiled on first use: their
    text depends on the kind of dialect alone. (Two threads may both compile at first; they
    store the same text.)"""
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    if key not in _COMPILED:
        _COMPILED[key] = tuple(
            _Compiled(str(c), dict(c.params), tuple(column.name for column in s.selected_columns))
            for s in _statements(dialect.name)
            for c in [s.compile(dialect=dialect)]
        )
    return _COMPILED[key]


_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def _pipelined(conn: Connection, params: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """The four statements' rows (PostgreSQL), sent with their transaction in one pipeline:
    BEGIN (REPEATABLE READ, READ ONLY), the statements, COMMIT, then one sync, answered together.

    The connection is in autocommit mode for this, so that psycopg sends no BEGIN of its own
    (it would sync after it: a round trip more) and the transaction is the one queued here.
    On any error the connection is invalidated rather than given back to the pool: it may be
    broken, or left in the aborted transaction. Driver errors are raised as SQLAlchemy's for
    `source_errors` to translate.
    """
    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    driver = conn.connection.driver_connection
    dbapi = conn.dialect.loaded_dbapi
    statements = _compiled(conn.dialect)
    try:
        with driver.pipeline():  # type: ignore[union-attr]
            driver.execute(_BEGIN)  # type: ignore[union-attr]
            cursors = [driver.cursor() for _ in statements]  # type: ignore[union-attr]
            for cursor, statement in zip(cursors, statements, strict=True):
                cursor.execute(statement.sql, {**statement.defaults, **params})
            driver.execute("COMMIT")  # type: ignore[union-attr]
        # Leaving the block synced the pipeline: every answer is in.
        results = []
        for cursor, statement in zip(cursors, statements, strict=True):
            results.append(_dicts(statement, cursor.fetchall()))
            cursor.close()
    except dbapi.Error as exc:
        conn.invalidate()
        raise sa.exc.DBAPIError.instance(statements[0].sql, {}, exc, dbapi.Error) from None
    return results


def _dicts(statement: _Compiled, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    names = statement.columns
    return [dict(zip(names, row, strict=True)) for row in rows]


def _as_dicts(result: sa.CursorResult[Any]) -> list[dict[str, Any]]:
    names = tuple(result.keys())
    return [dict(zip(names, row, strict=True)) for row in result]
