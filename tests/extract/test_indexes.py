"""extract.indexes: which of the indexes an export needs a source lacks, and the statements that
would create them (run here only to prove them right, never by the exporter)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from extract.engine import create_source_engine, snapshot
from extract.indexes import NEEDED_INDEXES, missing_index_warning, missing_indexes
from learner_export.processes import free_port
from tests.conftest import DemoSource
from tests.factories import PLATFORM_TABLES, platform_like_sqlite
from tests.pg import PostgresCluster


def _missing(url: str) -> list[str]:
    engine = create_source_engine(url)
    try:
        with snapshot(engine) as conn:
            return [f"{m.table}.{m.column}" for m in missing_indexes(conn)]
    finally:
        engine.dispose()


def test_the_demo_schema_has_every_needed_index(demo_source: DemoSource) -> None:
    assert _missing(demo_source.url) == []
    assert missing_index_warning(demo_source.url) is None


def test_a_platform_like_sqlite_source_lacks_all_three_and_the_statements_fix_it(
    tmp_path: Path,
) -> None:
    url = platform_like_sqlite(tmp_path / "platform.sqlite3")
    assert _missing(url) == [
        "lessons.learner_id",  # the partial index on ACTIVE lessons covers only some rows
        "achievements.learner_id",
        "learner_profiles.user_id",
    ]
    warning = missing_index_warning(url)
    assert warning is not None and "lessons.learner_id" in warning
    assert "learner-export indexes" in warning
    with sqlite3.connect(tmp_path / "platform.sqlite3") as db:
        for needed in NEEDED_INDEXES:
            db.execute(needed.create_statement("sqlite"))
    db.close()
    assert _missing(url) == []


@pytest.mark.postgres
def test_a_platform_like_postgresql_source_and_concurrent_statements(
    pg_cluster: PostgresCluster,
) -> None:
    owner = pg_cluster.create_database("platform_indexes")
    with psycopg.connect(owner.replace("+psycopg", ""), autocommit=True) as db:
        db.execute(PLATFORM_TABLES)  # type: ignore[arg-type]
        assert len(_missing(owner)) == 3
        statements = [needed.create_statement("postgresql") for needed in NEEDED_INDEXES]
        assert statements[0] == (
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS lessons_learner_created_idx "
            "ON lessons (learner_id, created_at);"
        )
        for statement in statements:  # one by one: CONCURRENTLY refuses a transaction block
            db.execute(statement)  # type: ignore[arg-type]
    assert _missing(owner) == []


def test_a_source_that_cannot_be_read_gives_no_warning(tmp_path: Path) -> None:
    """The command's own start-up checks say what is wrong with it; the warning stays quiet."""
    assert missing_index_warning(f"postgresql://nobody@127.0.0.1:{free_port()}/none") is None
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    assert missing_index_warning(f"sqlite:///{empty}") is None
