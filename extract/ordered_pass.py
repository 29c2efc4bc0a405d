"""One ordered pass over each learner table, cut into chunks: how a source without the indexes
of `extract.indexes` is read at a cost that grows with the tables, not with tables x chunks.

A chunk's `learner_id IN (...)` statement (`extract.reader.iter_learners`) scans the whole table
when the column has no index, so a run of C chunks scans each table C times. An `OrderedPass`
instead reads each of `learner_profiles`, `achievements` and `lessons` once for a whole range of
learners (many chunks), ordered by learner, and hands each chunk the next runs of rows: a merge
of three sorted streams against the chunk's ids, which come in the same order. The statements
are `extract.queries`' own with a range instead of a list, so every learner's rows are the same
rows in the same order either way, and the documents are byte-identical.

Invariants:
- every statement of a pass runs in the caller's connection, so in one snapshot;
- chunks are read in ascending id order, each chunk's ids above the previous chunk's (a chunk
  that goes back raises ValueError: its rows are already behind the cursors);
- memory is one learner's rows per table plus one fetch of each cursor, whatever the range:
  on PostgreSQL each table is a server-side cursor (several can be open in one transaction,
  where a streamed statement holds the connection until it ends), fetched `FETCH_ROWS` at a time;
  SQLite steps its cursors as they are read anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import contextmanager
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from extract import queries
from extract.engine import translate_error
from extract.reader import read_users
from extract.records import LearnerRows, Row

FETCH_ROWS = 2_000
"""Rows per fetch of a PostgreSQL cursor: one round trip per a few MB of lessons."""


class _Merge:
    """A stream of rows in ascending `key` order, taken from one key at a time."""

    def __init__(self, rows: Iterator[Row], key: Callable[[Row], Any]) -> None:
        self._rows = rows
        self._key = key
        self._next = next(rows, None)

    def take(self, key: Any) -> list[Row]:
        """The rows whose key is `key`; rows with a smaller key (ids no chunk asks for) are
        skipped. `key` must not go below the previous call's."""
        while self._next is not None and self._key(self._next) < key:
            self._next = next(self._rows, None)
        taken: list[Row] = []
        while self._next is not None and self._key(self._next) == key:
            taken.append(self._next)
            self._next = next(self._rows, None)
        return taken

    def close(self) -> None:
        close = getattr(self._rows, "close", None)
        if close is not None:
            close()


class OrderedPass:
    """One pass over each learner table for the learners of `learner_ids` (all chunks of it),
    in the connection `conn`; `learners` hands out one chunk at a time. Close it (or use it as a
    context manager) to end the cursors before the connection serves anything else."""

    def __init__(
        self, conn: Connection, learner_ids: Collection[int], *, lesson_limit: int | None
    ) -> None:
        ids = sorted(set(learner_ids))
        if not ids:
            raise ValueError("an ordered pass needs at least one learner id")
        self.conn = conn
        self.lesson_limit = lesson_limit
        self._last_id = -1
        dialect = conn.dialect.name
        span = queries.IdRange(ids[0], ids[-1])
        self._merges: list[_Merge] = []
        self._profiles = self._open(
            "profiles", queries.profiles_query(dialect, span), lambda r: r["user_id"]
        )
        self._achievements = self._open(
            "achievements",
            queries.achievements_query(dialect, span),
            lambda r: queries.text_id_key(r["learner_id"]),
        )
        lessons = queries.lessons_query(dialect, span, limit_per_learner=lesson_limit)
        self._lessons = self._open("lessons", lessons, lambda r: r["learner_id"])

    def _open(self, name: str, statement: queries.AnySelect, key: Callable[[Row], Any]) -> _Merge:
        merge = _Merge(_ordered_rows(self.conn, statement, f"learner_export_pass_{name}"), key)
        self._merges.append(merge)
        return merge

    def learners(self, learner_ids: Collection[int]) -> Generator[LearnerRows, None, None]:
        """The rows of every id in `learner_ids` that is a LEARNER user, in ascending id order,
        as `extract.reader.iter_learners` gives them; the ids must all lie above those of the
        chunks read before."""
        ids = sorted(set(learner_ids))
        if not ids:
            return
        if ids[0] <= self._last_id:
            raise ValueError("an ordered pass reads its chunks in ascending id order")
        self._last_id = ids[-1]
        users = read_users(self.conn, ids)  # by primary key: indexed on every source
        json_checked = self.conn.dialect.name == queries.POSTGRESQL
        for learner_id in ids:
            user = users.get(learner_id)
            if user is None or user["role"] != "LEARNER":
                continue
            profiles = self._profiles.take(learner_id)
            achievements = self._achievements.take(queries.text_id_key(str(learner_id)))
            lessons = self._lessons.take(learner_id)
            total = 0
            for lesson in lessons:
                # As in iter_learners: a capped read carries the full count on every row.
                total = cast(dict[str, int], lesson).pop(queries.LESSON_TOTAL, 0)
            yield LearnerRows(
                learner_id=learner_id,
                user=user,
                profile=profiles[0] if profiles else None,  # the first created is kept
                lessons=lessons,
                lesson_total=(
                    len(lessons) if self.lesson_limit is None else max(total, len(lessons))
                ),
                achievements=achievements,
                json_checked=json_checked,
            )

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Driver errors raised while reading the pass, as `extract.engine.snapshot` reports
        them (transient or terminal, the SQLSTATE kept, the database's message left out)."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            raise translate_error(exc, self.conn.dialect.name) from None

    def close(self) -> None:
        """End the pass's cursors (once every chunk is read, or when giving up)."""
        for merge in self._merges:
            merge.close()

    def __enter__(self) -> OrderedPass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ordered_rows(conn: Connection, statement: queries.AnySelect, name: str) -> Iterator[Row]:
    """The statement's rows as dicts keyed by column name, fetched as they are read: on
    PostgreSQL through a server-side cursor `name` (values as the driver returns them, exactly
    as `extract.reader` streams them), on SQLite through an ordinary cursor."""
    if conn.dialect.name != queries.POSTGRESQL:
        result = conn.execute(statement)
        names = tuple(result.keys())
        try:
            for row in result:
                yield dict(zip(names, row, strict=True))
        finally:
            result.close()
        return
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql, params = str(compiled), compiled.params
    dbapi = conn.dialect.loaded_dbapi
    driver = conn.connection.driver_connection
    try:
        with driver.cursor(name=name) as cursor:  # type: ignore[union-attr]
            cursor.itersize = FETCH_ROWS
            cursor.execute(sql, params)
            columns = tuple(column.name for column in cursor.description)
            for row in cursor:
                yield dict(zip(columns, row, strict=True))
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, dbapi.Error) from None
