"""Coverage: the demo schema is fully decided on both backends; an undecided learner-linked
column or table is reported; the registry file is checked for shape."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from extract.coverage import (
    ANALYST_ONLY,
    RegistryError,
    learner_link,
    load_registry,
    source_coverage,
    table_coverage,
)
from extract.engine import create_source_engine, snapshot
from learner_export.cli import main as cli_main
from tests.conftest import DemoSource, make_sqlite_demo


def _coverage(url: str) -> list[tuple[str, str, str]]:
    engine = create_source_engine(url)
    try:
        with snapshot(engine) as conn:
            return [(c.table, c.column, c.verdict) for c in source_coverage(conn, load_registry())]
    finally:
        engine.dispose()


def test_the_demo_schema_is_fully_decided(demo_source: DemoSource) -> None:
    """CI's guard: a learner-linked column added to the demo schema without a decision fails."""
    found = _coverage(demo_source.url)
    assert [f for f in found if f[2] == "unknown"] == []
    tables = {t for t, _, _ in found}
    assert tables == {
        "users", "learner_profiles", "lessons", "achievements", "quiz_answers",
        "concept_mastery", "points",
    }  # fmt: skip
    assert ("users", "password", "excluded") in found
    assert ("users", "theme", "excluded") in found
    assert ("lessons", "spec", "exported") in found


def test_an_undecided_column_and_table_are_unknown_and_the_command_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_sqlite_demo(tmp_path / "demo.sqlite3", learners=2)
    path = source.url.removeprefix("sqlite:///")
    assert cli_main(["coverage", "--database-url", source.url]) == 0
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE lessons ADD COLUMN mood text")
        conn.execute("CREATE TABLE rewards (id integer PRIMARY KEY, kid_id integer, prize text)")
        conn.execute("CREATE TABLE templates (id integer PRIMARY KEY, body text)")  # not linked
    unknown = [f for f in _coverage(source.url) if f[2] == "unknown"]
    assert unknown == [
        ("lessons", "mood", "unknown"),
        ("rewards", "id", "unknown"),
        ("rewards", "kid_id", "unknown"),
        ("rewards", "prize", "unknown"),
    ]
    capsys.readouterr()
    assert cli_main(["coverage", "--database-url", source.url]) == 1
    out, err = capsys.readouterr()
    assert "lessons.mood" in out and "unknown" in out
    assert "templates" not in out
    assert "coverage_registry.toml" in err


def test_learner_links() -> None:
    assert learner_link("users", ["id"], []) == "the users table itself"
    fk = {"referred_table": "users", "referred_columns": ["id"], "constrained_columns": ["owner"]}
    assert learner_link("goals", ["owner"], [fk]) == "foreign key owner -> users.id"
    assert learner_link("sessions", ["id", "UserId"], []) == "learner id column UserId (by name)"
    assert learner_link("templates", ["id", "body"], []) is None


def test_registry_shape_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "registry.toml"
    for text in (
        "[tables.t]\nexported = 1\n",
        "[tables.t]\nexcluded = 'why'\nexported.a = 'x'\n",
        "[tables.t.exported]\na = 'x'\n[tables.t.excluded]\na = 'y'\n",
        "[tables.t]\nfoo = 'x'\n",
        "not toml [",
    ):
        bad.write_text(text)
        with pytest.raises(RegistryError):
            load_registry(bad)


def test_whole_table_exclusion_and_what_the_document_leaves_out() -> None:
    registry = load_registry()
    left = registry.left_out_of_document()
    assert ("points", None, registry.tables["points"].whole_table_excluded) in left
    # Tables the document never carries are named whole, their exclusions column by column.
    assert ("quiz_answers", None, ANALYST_ONLY) in left
    assert ("quiz_answers", "is_correct", ANALYST_ONLY) not in left
    assert (
        "quiz_answers",
        "question_text",
        registry.tables["quiz_answers"].excluded["question_text"],
    ) in left
    assert ("concept_mastery", None, ANALYST_ONLY) in left
    assert not [entry for entry in left if entry[0] in ("lessons", "learner_profiles")]
    assert ("users", "password", registry.tables["users"].excluded["password"]) in left
    decided = table_coverage("points", ["a"], "x", registry.tables["points"])
    assert [c.verdict for c in decided] == ["excluded"]


@pytest.mark.postgres
def test_an_undecided_postgres_column_is_unknown(pg_cluster: object, tmp_path: Path) -> None:
    from tests.conftest import make_postgres_demo

    source = make_postgres_demo(pg_cluster, "coverage_extra", learners=2)  # type: ignore[arg-type]
    engine = sa.create_engine(source.owner_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE goals (id serial PRIMARY KEY, owner integer REFERENCES users(id))"
                )
            )
    finally:
        engine.dispose()
    unknown = [f for f in _coverage(source.owner_url) if f[2] == "unknown"]
    assert unknown == [("goals", "id", "unknown"), ("goals", "owner", "unknown")]
