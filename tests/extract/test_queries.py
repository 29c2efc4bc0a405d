"""extract.queries: the statements, checked by compiling them for each dialect."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from extract import queries

DIALECTS = {"postgresql": postgresql.dialect(), "sqlite": sqlite.dialect()}


def sql(statement: sa.Select[tuple[object, ...]], dialect: str) -> str:
    return str(statement.compile(dialect=DIALECTS[dialect]))


def test_password_is_never_selected() -> None:
    for dialect in DIALECTS:
        assert "password" not in sql(queries.users_query(dialect, [3]), dialect)


def test_postgresql_orders_text_ids_by_code_point_and_reads_json_as_stored() -> None:
    text = sql(queries.lessons_query("postgresql", [3]), "postgresql")
    assert 'lessons.id COLLATE "C"' in text
    assert "lessons.spec AS spec," in text and "CAST(lessons.spec" not in text  # loaded as bytes
    assert "CAST(lessons.template_id AS TEXT)" in text  # a UUID
    assert "lessons.created_at DESC NULLS LAST" in text


def test_sqlite_uses_its_binary_collation_and_raw_json() -> None:
    text = sql(queries.lessons_query("sqlite", [3]), "sqlite")
    assert "COLLATE" not in text
    assert "CAST" not in text
    assert "lessons.created_at DESC NULLS LAST" in text


def test_capped_lessons_use_one_window_over_the_whole_chunk() -> None:
    text = sql(queries.lessons_query("postgresql", [3, 4], limit_per_learner=1000), "postgresql")
    assert "row_number() OVER (PARTITION BY lessons.learner_id ORDER BY" in text
    assert "numbered.position <=" in text


def test_achievements_match_the_text_form_of_learner_ids() -> None:
    statement = queries.achievements_query("sqlite", [3, 14])
    compiled = statement.compile(dialect=DIALECTS["sqlite"], compile_kwargs={"literal_binds": True})
    assert "achievements.learner_id IN ('3', '14')" in str(compiled)


def test_only_the_four_tables_are_read() -> None:
    statements = [
        queries.users_query("postgresql", [1]),
        queries.profiles_query("postgresql", [1]),
        queries.lessons_query("postgresql", [1], limit_per_learner=5),
        queries.lessons_query("postgresql", [1, 2], limit_per_learner=5),
        queries.achievements_query("postgresql", [1]),
        queries.learner_ids_query(),
    ]
    tables = {t.name for s in statements for t in s.get_final_froms() for t in _tables(t)}
    assert tables <= {"users", "learner_profiles", "lessons", "achievements"}


def _tables(from_clause: sa.FromClause) -> list[sa.Table]:
    if isinstance(from_clause, sa.Table):
        return [from_clause]
    return [
        t
        for f in getattr(from_clause, "element", from_clause).get_final_froms()
        for t in _tables(f)
    ]
