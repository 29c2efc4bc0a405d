"""Runs the queries of `extract.queries` and groups the rows by learner.

A chunk of learners costs four statements whatever its size (users, profiles, lessons,
achievements) plus one count when lessons are capped, all inside the caller's snapshot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any, cast

from sqlalchemy.engine import Connection, Result

from extract import queries
from extract.errors import LearnerNotFound
from extract.records import Account, LearnerRows, Row

LESSON_BATCH_ROWS = 2_000
"""Lesson rows fetched per round trip: specs run to hundreds of KB, so the driver streams them
(a server-side cursor on PostgreSQL) instead of buffering a whole chunk's lessons twice."""


def read_learner(conn: Connection, learner_id: int, *, lesson_limit: int | None) -> LearnerRows:
    """One learner's rows; `LearnerNotFound` when the id is not a LEARNER user."""
    found = read_learners(conn, [learner_id], lesson_limit=lesson_limit)
    if learner_id not in found:
        raise LearnerNotFound(learner_id)
    return found[learner_id]


def read_learners(
    conn: Connection, learner_ids: Collection[int], *, lesson_limit: int | None
) -> dict[int, LearnerRows]:
    """The rows of every id in `learner_ids` that is a LEARNER user, keyed by id.

    Ids that do not exist or are not learners are simply absent from the result. With
    `lesson_limit`, at most that many lessons per learner are read (the most recent), and
    `LearnerRows.lesson_total` still counts them all.
    """
    dialect = conn.dialect.name
    ids = sorted(set(learner_ids))
    users = {
        row.id: _mapping(row)
        for row in conn.execute(queries.users_query(dialect, ids))
        if row.role == "LEARNER"
    }
    if not users:
        return {}
    ids = sorted(users)
    profiles: dict[int, Row] = {}
    for row in conn.execute(queries.profiles_query(dialect, ids)):
        profiles.setdefault(row.user_id, _mapping(row))  # first in order is the one kept
    # yield_per on the statement, not the connection: Connection.execution_options() sets
    # options on the connection itself in SQLAlchemy 2, so every later statement of the
    # snapshot would open a server-side cursor too (three extra round trips each).
    lessons_statement = queries.lessons_query(dialect, ids, limit_per_learner=lesson_limit)
    lessons = _grouped(
        conn.execute(lessons_statement.execution_options(yield_per=LESSON_BATCH_ROWS)),
        key="learner_id",
    )
    if lesson_limit is None:
        totals = {learner_id: len(rows) for learner_id, rows in lessons.items()}
    else:
        # Rows unpack as tuples (SQLAlchemy 2.1 deprecates Result.tuples()).
        totals = {
            learner_id: count
            for learner_id, count in conn.execute(queries.lesson_counts_query(ids))
        }
    achievements = _grouped(
        conn.execute(queries.achievements_query(dialect, ids)), key="learner_id"
    )
    json_checked = dialect == queries.POSTGRESQL
    return {
        learner_id: LearnerRows(
            learner_id=learner_id,
            user=user,
            profile=profiles.get(learner_id),
            lessons=lessons.get(learner_id, []),
            lesson_total=totals.get(learner_id, 0),
            achievements=achievements.get(str(learner_id), []),
            json_checked=json_checked,
        )
        for learner_id, user in users.items()
    }


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


def all_learner_ids(conn: Connection) -> list[int]:
    """Every LEARNER user's id, ascending."""
    return list(conn.execute(queries.learner_ids_query()).scalars())


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
