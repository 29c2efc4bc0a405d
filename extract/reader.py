"""Runs the queries of `extract.queries` and groups the rows by learner.

A chunk of learners costs four statements whatever its size (users, profiles, lessons,
achievements) plus one count when lessons are capped, all inside the caller's snapshot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator
from typing import Any, cast

from sqlalchemy.engine import Connection

from extract import queries
from extract.errors import LearnerNotFound
from extract.records import LearnerRows, Row

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
    users: dict[int, Row] = {
        row.id: cast(Row, row._mapping)
        for row in conn.execute(queries.users_query(dialect, ids))
        if row.role == "LEARNER"
    }
    if not users:
        return {}
    ids = sorted(users)
    profiles: dict[int, Row] = {}
    for row in conn.execute(queries.profiles_query(dialect, ids)):
        profiles.setdefault(row.user_id, cast(Row, row._mapping))  # first in order is kept
    lessons = _grouped(
        conn.execution_options(yield_per=LESSON_BATCH_ROWS).execute(
            queries.lessons_query(dialect, ids, limit_per_learner=lesson_limit)
        ),
        key="learner_id",
    )
    if lesson_limit is None:
        totals = {learner_id: len(rows) for learner_id, rows in lessons.items()}
    else:
        totals = dict(conn.execute(queries.lesson_counts_query(ids)).all())
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


def all_learner_ids(conn: Connection) -> list[int]:
    """Every LEARNER user's id, ascending."""
    return list(conn.execute(queries.learner_ids_query()).scalars())


def _grouped(rows: Iterator[Any], *, key: str) -> dict[Any, list[Row]]:
    groups: defaultdict[Any, list[Row]] = defaultdict(list)
    for row in rows:
        mapping = row._mapping
        groups[mapping[key]].append(mapping)
    return groups
