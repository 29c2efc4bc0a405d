"""SELECT statements for the source tables, built apart from running them.

Every function returns a `Select` for a set of learners, so one statement serves one learner or a
chunk of thousands. They are dialect-aware only where the two backends would otherwise disagree:

* text ids are ordered by code point (`COLLATE "C"` on PostgreSQL, SQLite's default BINARY), so
  ties break the same way on both and the documents are byte-identical;
* JSON columns come back as the stored text, never parsed here (bytes on PostgreSQL);
* timestamps and UUIDs bypass SQLAlchemy's result processing, which raises on the odd formats a
  SQLite file may hold; the transform stage reads them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from extract.tables import (
    achievements,
    concept_mastery,
    learner_profiles,
    lessons,
    quiz_answers,
    users,
)

POSTGRESQL = "postgresql"
LESSON_TOTAL = "lesson_total"
"""The column a capped lessons query adds to each row: the learner's lesson count, all of them."""

AnySelect: TypeAlias = sa.Select[*tuple[Any, ...]]
"""A SELECT of any columns (SQLAlchemy 2.1 types a Select by its column types, one by one)."""


@dataclass(frozen=True, slots=True)
class IdRange:
    """Every learner id from `first` to `last`, both included: what an ordered pass reads
    (`extract.ordered_pass`), one scan of the table for many chunks where an `IN` list would be
    one scan per chunk on a source without the index. Ids are never negative (ordered passes
    compare text ids by length first, which orders them numerically only then)."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last:
            raise ValueError("an id range runs from a non-negative id up to a larger one")


Learners: TypeAlias = Collection[int] | IdRange
"""Whose rows a statement reads: these ids, or every id of a range."""


def _of_learners(column: sa.Column[int], learners: Learners) -> ColumnElement[bool]:
    """`column` is one of the learners."""
    if isinstance(learners, IdRange):
        return column.between(learners.first, learners.last)
    return column.in_(list(learners))


def text_id_key(text: str) -> tuple[int, str]:
    """Where a text learner id sorts in an ordered pass: by length, then by code point, which
    for the decimal text of non-negative ids is their numeric order (`achievements_query`)."""
    return len(text), text


def _raw(column: sa.Column[object]) -> ColumnElement[Any]:
    """The column's value as the driver returns it, with no type conversion."""
    return sa.type_coerce(column, sa.types.NullType()).label(column.name)


def _as_text(column: sa.Column[object], dialect: str) -> ColumnElement[Any]:
    """UUID columns as text: cast on PostgreSQL, untouched on SQLite."""
    if dialect == POSTGRESQL:
        return sa.cast(column, sa.Text).label(column.name)
    return _raw(column)


def _stored_json(column: sa.Column[object]) -> ColumnElement[Any]:
    """A JSON column as the database returns it, never parsed: on PostgreSQL the source engines
    load `json` values as their UTF-8 text in bytes (`extract.engine`), on SQLite it is TEXT."""
    return _raw(column)


def _code_point_order(column: ColumnElement[str], dialect: str) -> ColumnElement[str]:
    """Order text by code point, whatever the database's default collation is."""
    return column.collate("C") if dialect == POSTGRESQL else column


def _user_columns() -> list[ColumnElement[Any]]:
    """Every `users` column except `password` (it is never read)."""
    u = users.c
    return [u.id, u.username, u.email, u.name, _raw(u.role), u.parent_id, _raw(u.created_at)]


def users_query(dialect: str, user_ids: Collection[int]) -> AnySelect:
    """The `users` rows with these ids, every column except `password` (it is never read)."""
    return sa.select(*_user_columns()).where(users.c.id.in_(list(user_ids)))


def accounts_query(user_ids: Collection[int]) -> AnySelect:
    """Id, role and parent of the users with these ids: all that authorization needs."""
    return sa.select(users.c.id, _raw(users.c.role), users.c.parent_id).where(
        users.c.id.in_(list(user_ids))
    )


def learner_ids_query() -> sa.Select[int]:
    """Every LEARNER's id, ascending."""
    return sa.select(users.c.id).where(users.c.role == "LEARNER").order_by(users.c.id)


def children_query(parent_id: int) -> sa.Select[int]:
    """The ids of the LEARNER users whose parent is `parent_id`, ascending."""
    return (
        sa.select(users.c.id)
        .where(users.c.role == "LEARNER", users.c.parent_id == parent_id)
        .order_by(users.c.id)
    )


def profiles_query(dialect: str, user_ids: Learners) -> AnySelect:
    """Profiles of these users; per user, the first created comes first (the one kept)."""
    p = learner_profiles.c
    return (
        sa.select(*_profile_columns())
        .where(_of_learners(p.user_id, user_ids))
        .order_by(p.user_id, *_profile_order(dialect))
    )


def _profile_columns() -> list[ColumnElement[Any]]:
    p = learner_profiles.c
    return [
        p.id,
        p.user_id,
        p.grade_level,
        *(_stored_json(c) for c in (p.graph, p.subjects, p.subject_performance)),
        *(_stored_json(c) for c in (p.recommended_subjects, p.struggling_areas)),
        _raw(p.created_at),
    ]


def _profile_order(dialect: str) -> tuple[ColumnElement[Any], ...]:
    """One user's profiles, the one kept (the first created) first."""
    p = learner_profiles.c
    return p.created_at.asc().nulls_last(), _code_point_order(p.id, dialect)


def _lesson_columns(dialect: str) -> list[ColumnElement[Any]]:
    c = lessons.c
    return [
        c.id,
        c.learner_id,
        c.module_id,
        _raw(c.status),
        c.subject,
        c.category,
        c.difficulty,
        c.score,
        _stored_json(c.spec),
        _stored_json(c.image_paths),
        _as_text(c.template_id, dialect),
        _raw(c.created_at),
        _raw(c.completed_at),
    ]


def _lesson_order(dialect: str) -> tuple[ColumnElement[Any], ...]:
    return (
        lessons.c.created_at.desc().nulls_last(),
        _code_point_order(lessons.c.id, dialect),
    )


def lessons_query(
    dialect: str, learner_ids: Learners, *, limit_per_learner: int | None = None
) -> AnySelect:
    """Lessons of these learners, grouped by learner, each group in contract order.

    With `limit_per_learner`, only that many of each learner's most recent lessons are read, and
    each row carries LESSON_TOTAL, the learner's count of every lesson (a window over the same
    scan: the table is read once, not once more to count). A window function numbers each
    learner's lessons in contract order, so one statement caps every learner of a chunk. For a
    single learner (the HTTP export, the one-off CLI export) a plain ORDER BY ... LIMIT gives the
    same rows in the same order without numbering every lesson; the count is taken before the
    LIMIT applies.
    """
    ids = learner_ids if isinstance(learner_ids, IdRange) else list(learner_ids)
    columns = _lesson_columns(dialect)
    if limit_per_learner is None:
        return (
            sa.select(*columns)
            .where(_of_learners(lessons.c.learner_id, ids))
            .order_by(lessons.c.learner_id, *_lesson_order(dialect))
        )
    if not isinstance(ids, IdRange) and len(set(ids)) == 1:
        return (
            sa.select(*columns, sa.func.count().over().label(LESSON_TOTAL))
            .where(lessons.c.learner_id.in_(ids))
            .order_by(lessons.c.learner_id, *_lesson_order(dialect))
            .limit(limit_per_learner)
        )
    position = sa.func.row_number().over(
        partition_by=lessons.c.learner_id, order_by=_lesson_order(dialect)
    )
    total = sa.func.count().over(partition_by=lessons.c.learner_id)
    numbered = (
        sa.select(*columns, total.label(LESSON_TOTAL), position.label("position"))
        .where(_of_learners(lessons.c.learner_id, ids))
        .subquery("numbered")
    )
    kept = [col for col in numbered.c if col.name != "position"]
    return (
        sa.select(*kept)
        .where(numbered.c.position <= limit_per_learner)
        .order_by(numbered.c.learner_id, numbered.c.position)
    )


REQUESTER, LEARNER, LEARNER_TEXT, LESSON_LIMIT = (
    "requester",
    "learner",
    "learner_text",
    "lesson_limit",
)
"""The parameters of `request_statements`: who asks, for whom (as an integer, and as the text
`achievements.learner_id` holds), and how many lessons at most."""
EXPORT_ALLOWED = "export_allowed"
"""The column `request_statements` adds to each `users` row: the database's verdict on the
request (`export_allowed`)."""


def export_allowed(
    requester: ColumnElement[int], learner: ColumnElement[int]
) -> ColumnElement[bool]:
    """Whether user `requester` may export learner `learner`, as SQL: the learner is a LEARNER
    user, and the requester is an ADMIN or that learner's PARENT (contract §3).

    It guards the reads of `request_statements`, so that rows nobody may export are never read;
    the endpoint still decides every answer itself, from the `users` rows, and treats a verdict
    different from its own as a fault."""
    asking, child = users.alias("asking"), users.alias("child")
    return sa.exists().where(
        asking.c.id == requester,
        child.c.id == learner,
        child.c.role == "LEARNER",
        sa.or_(
            asking.c.role == "ADMIN",
            sa.and_(asking.c.role == "PARENT", child.c.parent_id == asking.c.id),
        ),
    )


@dataclass(frozen=True, slots=True)
class RequestStatements:
    """The four reads of one export request, each parameterized by REQUESTER, LEARNER,
    LEARNER_TEXT and LESSON_LIMIT (`request_statements`)."""

    users: AnySelect
    profile: AnySelect
    achievements: AnySelect
    lessons: AnySelect


def request_statements(dialect: str) -> RequestStatements:
    """One export request's reads, built once and run with different parameters:

    * `users`: the requester's and the learner's rows (as `users_query`), each with
      EXPORT_ALLOWED, the verdict of `export_allowed`;
    * `profile`: the learner's profile kept (the first created), as `profiles_query` orders them;
    * `achievements`, `lessons`: as `achievements_query` and the one-learner `lessons_query`
      (at most LESSON_LIMIT lessons, the most recent, each row with LESSON_TOTAL).

    The three reads of the learner's rows return nothing unless `export_allowed` holds: a
    refused request reads no row of the learner. The ids are bound parameters, not literals, so
    the statements' text never changes and the database can keep their plans.
    """
    requester = sa.bindparam(REQUESTER, type_=sa.Integer)
    learner = sa.bindparam(LEARNER, type_=sa.Integer)
    learner_text = sa.bindparam(LEARNER_TEXT, type_=sa.String)
    allowed = export_allowed(requester, learner)
    p, a, ls = learner_profiles.c, achievements.c, lessons.c
    return RequestStatements(
        users=sa.select(*_user_columns(), allowed.label(EXPORT_ALLOWED)).where(
            users.c.id.in_([requester, learner])
        ),
        profile=sa.select(*_profile_columns())
        .where(p.user_id == learner, allowed)
        .order_by(*_profile_order(dialect))
        .limit(1),
        achievements=sa.select(*_achievement_columns(dialect))
        .where(a.learner_id == learner_text, allowed)
        .order_by(*_achievement_order(dialect)),
        lessons=sa.select(*_lesson_columns(dialect), sa.func.count().over().label(LESSON_TOTAL))
        .where(ls.learner_id == learner, allowed)
        .order_by(*_lesson_order(dialect))
        .limit(sa.bindparam(LESSON_LIMIT, type_=sa.Integer)),
    )


def lesson_counts_query(learner_ids: Collection[int]) -> AnySelect:
    """(learner_id, count) of every lesson of these learners that has any (learners without
    lessons are absent): read from the index by learner alone, never from the rows."""
    return (
        sa.select(lessons.c.learner_id, sa.func.count().label(LESSON_TOTAL))
        .where(lessons.c.learner_id.in_(sorted(set(learner_ids))))
        .group_by(lessons.c.learner_id)
    )


def achievements_query(dialect: str, learner_ids: Learners) -> AnySelect:
    """Achievements of these learners (matched on the text form of their id), each group in
    contract order: `awarded_at` descending, NULL last, then `id`.

    `learner_id` is text, so a range of ids is a range of `text_id_key`s (length, then code
    point), and the groups come in that order: numeric for every text that can match an id."""
    a = achievements.c
    learner = a.learner_id
    if isinstance(learner_ids, IdRange):
        first, last = str(learner_ids.first), str(learner_ids.last)
        text = _code_point_order(learner, dialect)
        length = sa.func.length(learner)
        where = sa.and_(
            sa.or_(length > len(first), sa.and_(length == len(first), text >= first)),
            sa.or_(length < len(last), sa.and_(length == len(last), text <= last)),
        )
        groups: tuple[ColumnElement[Any], ...] = (length, text)
    else:
        where = learner.in_([str(i) for i in learner_ids])
        groups = (learner,)
    return (
        sa.select(*_achievement_columns(dialect))
        .where(where)
        .order_by(*groups, *_achievement_order(dialect))
    )


def _achievement_columns(dialect: str) -> list[ColumnElement[Any]]:
    a = achievements.c
    return [_as_text(a.id, dialect), a.learner_id, a.type, _stored_json(a.payload),
            _raw(a.awarded_at)]  # fmt: skip


def _achievement_order(dialect: str) -> tuple[ColumnElement[Any], ...]:
    """One learner's achievements in contract order: `awarded_at` descending, NULL last, then
    `id` by code point."""
    a = achievements.c
    by_id = _code_point_order(sa.cast(a.id, sa.Text), dialect) if dialect == POSTGRESQL else a.id
    return a.awarded_at.desc().nulls_last(), by_id


def quiz_answers_query(dialect: str, learner_ids: Collection[int]) -> AnySelect:
    """The `quiz_answers` rows of these learners (contract §1b), every column but
    `question_text`, ordered by learner, lesson, question, answer time, then id."""
    q = quiz_answers.c
    return (
        sa.select(
            _as_text(q.id, dialect),
            q.learner_id,
            q.lesson_id,
            _raw(q.question_index),
            q.question_hash,
            _raw(q.user_answer),
            _raw(q.correct_answer),
            q.is_correct,
            _raw(q.concept_tags),
            _raw(q.answered_at),
        )
        .where(q.learner_id.in_(list(learner_ids)))
        .order_by(
            q.learner_id,
            _code_point_order(q.lesson_id, dialect),
            q.question_index,
            q.answered_at.asc().nulls_last(),
            _code_point_order(sa.cast(q.id, sa.Text), dialect) if dialect == POSTGRESQL else q.id,
        )
    )


def concept_mastery_query(dialect: str, learner_ids: Collection[int]) -> AnySelect:
    """The `concept_mastery` rows of these learners (contract §1b), ordered by learner, subject,
    concept, then id."""
    m = concept_mastery.c
    return (
        sa.select(
            _as_text(m.id, dialect),
            m.learner_id,
            m.concept_name,
            m.subject,
            _raw(m.correct_count),
            _raw(m.total_count),
            _raw(m.mastery_level),
            _raw(m.last_tested),
            m.needs_reinforcement,
            _raw(m.created_at),
        )
        .where(m.learner_id.in_(list(learner_ids)))
        .order_by(
            m.learner_id,
            _code_point_order(m.subject, dialect),
            _code_point_order(m.concept_name, dialect),
            _code_point_order(sa.cast(m.id, sa.Text), dialect) if dialect == POSTGRESQL else m.id,
        )
    )


OPTIONAL_QUERIES = {"quiz_answers": quiz_answers_query, "concept_mastery": concept_mastery_query}
"""The SELECT builder of each optional source table, by table name."""

_PG_CLASS = sa.table(
    "pg_class", sa.column("oid"), sa.column("relname"), sa.column("relkind"), schema="pg_catalog"
)
_SQLITE_MASTER = sa.table("sqlite_master", sa.column("name"), sa.column("type"))


def tables_present_query(dialect: str, names: Collection[str]) -> sa.Select[str]:
    """Which of these tables (or views) the source has, as the names a default schema shows:
    on PostgreSQL the relations on the search path, on SQLite those of the main file.

    A catalog read of our own rather than SQLAlchemy's inspector: on PostgreSQL the inspector's
    `has_table` is memoised per dialect in a class-level `functools.lru_cache`, which keeps the
    dialect of every engine that called it, and its whole graph, alive until 128 have piled up;
    with an engine per chunk, the flow process grew by one dialect a chunk.
    """
    if dialect == POSTGRESQL:
        c = _PG_CLASS
        return sa.select(c.c.relname).where(
            c.c.relname.in_(list(names)),
            c.c.relkind.in_(["r", "p", "v", "m", "f"]),
            sa.func.pg_catalog.pg_table_is_visible(c.c.oid),
        )
    m = _SQLITE_MASTER
    return sa.select(m.c.name).where(m.c.name.in_(list(names)), m.c.type.in_(["table", "view"]))
