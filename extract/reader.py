"""Runs the queries of `extract.queries` and groups the rows by learner.

A chunk of learners costs four statements whatever its size (users, profiles, lessons,
achievements), each table read once, all inside the caller's snapshot; when lessons are capped,
a fifth counts each learner's lessons from the index (`_capped_lessons`), and each learner over
the cap costs a statement of its own (and splits the plain lessons read in two). The
lessons, nearly all of the bytes, are streamed: `iter_learners` hands over each learner as soon
as its lessons have arrived, so a chunk's memory is one learner's rows, not all of them.

One learner (`read_learner`: the one-off export, the readable page, restore's check) is held
whole anyway, so on PostgreSQL its three statements go out together in psycopg's pipeline mode:
one round trip to the server instead of three. The HTTP export reads its accounts and rows with
`extract.request_read` instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Generator, Iterator, Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Result

from extract import queries
from extract.errors import LearnerNotFound
from extract.records import Account, LearnerRows, Row

STREAM_ROWS = 500
"""Lesson rows PostgreSQL sends per message while streaming (libpq's chunked-rows mode): a few MB
at most, however many lessons a chunk holds."""

_CHUNKED_ROWS_LIBPQ = 170_000
"""The first libpq version (as `psycopg.pq.version()` numbers it) with chunked-rows mode."""


def read_learner(
    conn: Connection, learner_id: int, *, lesson_limit: int | None, user: Row | None = None
) -> LearnerRows:
    """One learner's rows; `LearnerNotFound` when the id is not a LEARNER user. `user`, the
    learner's `users` row when the caller has read it already (`read_users`), spares a read."""
    if conn.dialect.name == queries.POSTGRESQL:
        return _read_learner_pipelined(conn, learner_id, lesson_limit=lesson_limit, user=user)
    known = None if user is None else {learner_id: user}
    found = {
        rows.learner_id: rows
        for rows in iter_learners(conn, [learner_id], lesson_limit=lesson_limit, users=known)
    }
    if learner_id not in found:
        raise LearnerNotFound(learner_id)
    return found[learner_id]


def read_learners(
    conn: Connection, learner_ids: Collection[int], *, lesson_limit: int | None
) -> dict[int, LearnerRows]:
    """The rows of every id in `learner_ids` that is a LEARNER user, keyed by id: all of
    `iter_learners`, held at once."""
    return {
        rows.learner_id: rows
        for rows in iter_learners(conn, learner_ids, lesson_limit=lesson_limit)
    }


def iter_learners(
    conn: Connection,
    learner_ids: Collection[int],
    *,
    lesson_limit: int | None,
    users: Mapping[int, Row] | None = None,
) -> Generator[LearnerRows, None, None]:
    """The rows of every id in `learner_ids` that is a LEARNER user, one learner at a time in
    ascending id order, each as soon as its lessons have been read.

    Ids that do not exist or are not learners are skipped. With `lesson_limit`, at most that many
    lessons per learner are read (the most recent), and `LearnerRows.lesson_total` still counts
    them all. The small statements run first; the lessons statement then streams, and the
    connection serves nothing else until the iterator is exhausted. Closing it early cancels the
    statement on PostgreSQL, which aborts the transaction: end the snapshot then.
    """
    dialect = conn.dialect.name
    ids = sorted(set(learner_ids))
    if users is None:
        users = read_users(conn, ids)
    users = {i: users[i] for i in ids if i in users and users[i]["role"] == "LEARNER"}
    if not users:
        return
    ids = sorted(users)
    profiles: dict[int, Row] = {}
    for row in conn.execute(queries.profiles_query(dialect, ids)):
        profiles.setdefault(row.user_id, _mapping(row))  # first in order is the one kept
    achievements = _grouped(
        conn.execute(queries.achievements_query(dialect, ids)), key="learner_id"
    )
    if lesson_limit is None or len(ids) == 1:
        lessons = _stream(conn, queries.lessons_query(dialect, ids, limit_per_learner=lesson_limit))
    else:
        lessons = _capped_lessons(conn, ids, lesson_limit)
    json_checked = dialect == queries.POSTGRESQL
    # Lessons come ordered by learner id, as `ids` are: each learner's are the next run of rows.
    pending = next(lessons, None)
    for learner_id in ids:
        own: list[Row] = []
        total = 0
        while pending is not None and pending["learner_id"] == learner_id:
            total = _pop_total(pending)
            own.append(pending)
            pending = next(lessons, None)
        yield LearnerRows(
            learner_id=learner_id,
            user=users[learner_id],
            profile=profiles.get(learner_id),
            lessons=own,
            lesson_total=len(own) if lesson_limit is None else max(total, len(own)),
            achievements=achievements.get(str(learner_id), []),
            json_checked=json_checked,
        )


def _capped_lessons(conn: Connection, ids: list[int], limit: int) -> Iterator[Row]:
    """The lessons of `ids` (ascending, each a LEARNER), at most `limit` per learner (the most
    recent), grouped by learner in contract order, each row carrying LESSON_TOTAL: what
    `lessons_query(..., limit_per_learner=limit)` gives, read for less.

    That statement numbers every lesson with a window and sorts the numbered rows again, specs
    and all (`bench/lessons_read.py`, one 200-learner chunk: SQLite 0.62 s that way, 0.26 s
    this way; PostgreSQL 0.45 and 0.35 s). Here one count per learner, from the index by
    learner, comes first; then the learners with at most `limit` lessons, nearly all of them,
    are read by the plain ordered statement in runs of consecutive ids, and each learner over the
    cap by the one-learner statement (ORDER BY ... LIMIT). Streamed as before: one statement at
    a time, each read to its end before the next starts, all in the caller's snapshot (so the
    counts match the rows).
    """
    dialect = conn.dialect.name
    totals: dict[int, int] = {
        learner_id: count for learner_id, count in conn.execute(queries.lesson_counts_query(ids))
    }
    run: list[int] = []

    def uncapped(run: list[int]) -> Iterator[Row]:
        for row in _stream(conn, queries.lessons_query(dialect, run)):
            cast(dict[str, Any], row)[queries.LESSON_TOTAL] = totals[row["learner_id"]]
            yield row

    for learner_id in ids:
        total = totals.get(learner_id, 0)
        if total <= limit:
            if total:
                run.append(learner_id)
            continue
        if run:
            yield from uncapped(run)
            run = []
        yield from _stream(
            conn, queries.lessons_query(dialect, [learner_id], limit_per_learner=limit)
        )
    if run:
        yield from uncapped(run)


def _read_learner_pipelined(
    conn: Connection, learner_id: int, *, lesson_limit: int | None, user: Row | None
) -> LearnerRows:
    """`read_learner` on PostgreSQL: profiles, achievements and lessons in one round trip."""
    if user is None:
        user = read_users(conn, [learner_id]).get(learner_id)
    if user is None or user["role"] != "LEARNER":
        raise LearnerNotFound(learner_id)
    dialect = conn.dialect.name
    profiles, achievements, lessons = _pipelined(
        conn,
        queries.profiles_query(dialect, [learner_id]),
        queries.achievements_query(dialect, [learner_id]),
        queries.lessons_query(dialect, [learner_id], limit_per_learner=lesson_limit),
    )
    total = 0
    for lesson in lessons:
        total = _pop_total(lesson)
    return LearnerRows(
        learner_id=learner_id,
        user=user,
        profile=profiles[0] if profiles else None,  # the first in order is the one kept
        lessons=lessons,
        lesson_total=len(lessons) if lesson_limit is None else max(total, len(lessons)),
        achievements=achievements,
        json_checked=True,
    )


def _pop_total(lesson: Row) -> int:
    """Take LESSON_TOTAL out of a lesson row of a capped read (0 if absent): it carries the
    learner's full count on every row (read once, with the rows), and is no column of the
    lesson."""
    return cast(dict[str, int], lesson).pop(queries.LESSON_TOTAL, 0)


def _pipelined(conn: Connection, *statements: queries.AnySelect) -> list[list[Row]]:
    """The rows of each statement (PostgreSQL), as dicts keyed by column name, the statements
    sent together in psycopg's pipeline mode (one round trip) inside the caller's transaction.

    Driver errors are raised as SQLAlchemy's, like every other statement's, for
    `extract.engine.snapshot` to translate.
    """
    driver = conn.connection.driver_connection
    dbapi = conn.dialect.loaded_dbapi
    compiled = [
        statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        for statement in statements
    ]
    sql = "; ".join(str(c) for c in compiled)  # for the error's context only
    try:
        with driver.pipeline():  # type: ignore[union-attr]
            cursors = [driver.cursor() for _ in compiled]  # type: ignore[union-attr]
            for cursor, statement in zip(cursors, compiled, strict=True):
                cursor.execute(str(statement), statement.params)
        found: list[list[Row]] = []
        for cursor in cursors:
            columns = tuple(column.name for column in cursor.description)
            found.append([dict(zip(columns, row, strict=True)) for row in cursor.fetchall()])
            cursor.close()
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, {}, exc, dbapi.Error) from None
    return found


def read_users(conn: Connection, user_ids: Collection[int]) -> dict[int, Row]:
    """The `users` rows (every column but `password`) with these ids, keyed by id; ids with no
    user are absent. One statement; a caller that also needs a learner's rows can hand that
    learner's row to `read_learner`, so `users` is read once."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    return {
        row.id: _mapping(row)
        for row in conn.execute(queries.users_query(conn.dialect.name, wanted))
    }


def account(user: Row) -> Account:
    """What authorization needs of a `users` row."""
    return Account(id=user["id"], role=str(user["role"]), parent_id=user["parent_id"])


def read_accounts(conn: Connection, user_ids: Collection[int]) -> dict[int, Account]:
    """The accounts of the users with these ids, keyed by id; ids with no user are absent.

    One statement for any number of ids, so a request can look up who asks and whom they ask
    for in a single round trip.
    """
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    return {
        row.id: Account(id=row.id, role=str(row.role), parent_id=row.parent_id)
        for row in conn.execute(queries.accounts_query(wanted))
    }


def optional_tables_present(conn: Connection) -> dict[str, bool]:
    """Which of the optional source tables (contract §1b) this source has, by name."""
    names = list(queries.OPTIONAL_QUERIES)
    found = set(conn.scalars(queries.tables_present_query(conn.dialect.name, names)))
    return {name: name in found for name in names}


def iter_optional_rows(conn: Connection, table: str, learner_ids: Collection[int]) -> Iterator[Row]:
    """The rows of optional source table `table` for these learners, streamed as they arrive
    (see `queries.OPTIONAL_QUERIES` for the columns and order). The table must exist."""
    ids = sorted(set(learner_ids))
    if not ids:
        return iter(())
    return _stream(conn, queries.OPTIONAL_QUERIES[table](conn.dialect.name, ids))


def children_ids(conn: Connection, parent_id: int) -> list[int]:
    """The ids of the LEARNER users whose parent is `parent_id`, ascending ([] when none)."""
    return list(conn.execute(queries.children_query(parent_id)).scalars())


def read_family(conn: Connection, parent_id: int, *, lesson_limit: int | None) -> list[LearnerRows]:
    """The rows of every child (LEARNER user) of `parent_id`, ascending ids; [] when none. The
    children and their rows are read on `conn`: inside one snapshot, the family is the one whose
    documents are built."""
    return list(iter_learners(conn, children_ids(conn, parent_id), lesson_limit=lesson_limit))


def iter_optional_batches(
    conn: Connection, table: str, learner_ids: Collection[int], *, size: int
) -> Iterator[tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
    """The rows of optional source table `table` for these learners, as `iter_optional_rows`
    gives them but in batches of at most `size` tuples, each with its column names: for
    builders that convert a column at a time. The table must exist."""
    ids = sorted(set(learner_ids))
    if not ids:
        return
    statement = queries.OPTIONAL_QUERIES[table](conn.dialect.name, ids)
    if conn.dialect.name != queries.POSTGRESQL:
        result = conn.execute(statement)
        names = tuple(result.keys())
        for part in result.partitions(size):
            yield names, [tuple(row) for row in part]
        return
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql, params = str(compiled), compiled.params
    dbapi = conn.dialect.loaded_dbapi
    try:
        # A server-side cursor, a batch per FETCH: psycopg converts each batch at once, where
        # `_stream` hands rows over one by one (a Python call per row, most of the cost here).
        driver = conn.connection.driver_connection
        with driver.cursor(name="learner_export_optional_rows") as cursor:  # type: ignore[union-attr]
            cursor.execute(sql, params)
            names = tuple(column.name for column in cursor.description)
            while batch := cursor.fetchmany(size):
                yield names, batch
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, dbapi.Error) from None


def all_learner_ids(conn: Connection) -> list[int]:
    """Every LEARNER user's id, ascending."""
    return list(conn.execute(queries.learner_ids_query()).scalars())


def _stream(conn: Connection, statement: queries.AnySelect) -> Iterator[Row]:
    """The statement's rows as dicts keyed by column name, read as they arrive.

    On PostgreSQL through psycopg's `Cursor.stream`: the server keeps running the query and
    sending rows while the caller builds documents from the ones already here, so the database's
    work and ours overlap (SQLAlchemy's `stream_results` is a server-side cursor instead, on which
    the server computes each batch only when asked for it, so the two take turns: a
    single-threaded archive took 11 s where streaming takes 8). Driver errors are raised as
    SQLAlchemy's, like every other statement's, for `extract.engine.snapshot` to translate.
    SQLite runs in this process and yields rows as it finds them anyway.
    """
    if conn.dialect.name != queries.POSTGRESQL:
        result = conn.execute(statement)
        names = tuple(result.keys())
        for row in result:
            yield dict(zip(names, row, strict=True))
        return
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql, params = str(compiled), compiled.params
    driver = conn.connection.driver_connection
    dbapi = conn.dialect.loaded_dbapi
    # Chunked rows need libpq 17 (psycopg's binary wheel ships a newer one); an older libpq
    # streams row by row, slower but the same rows.
    size = STREAM_ROWS if dbapi.pq.version() >= _CHUNKED_ROWS_LIBPQ else 1
    try:
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            columns: tuple[str, ...] | None = None
            for row in cursor.stream(sql, params, size=size):
                if columns is None:  # known once the first rows are in
                    columns = tuple(column.name for column in cursor.description)
                yield dict(zip(columns, row, strict=True))
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, dbapi.Error) from None


def _grouped(result: Result[Any], *, key: str) -> dict[Any, list[Row]]:
    """The result's rows as dicts keyed by column name, grouped by the `key` column, each group
    in result order.

    Plain dicts, not SQLAlchemy's `RowMapping`: the builder reads every column of every lesson,
    and a dict lookup costs a fraction of a RowMapping one.
    """
    names = tuple(result.keys())
    position = names.index(key)
    groups: defaultdict[Any, list[Row]] = defaultdict(list)
    for row in result:
        groups[row[position]].append(dict(zip(names, row, strict=True)))
    return groups


def _mapping(row: Any) -> Row:
    """A result row as a read-only mapping keyed by column name."""
    return cast(Row, row._mapping)
