"""Checking the source before a run: reachable, with the reason when not; and schema drift."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from extract.errors import TerminalExtractError, TransientExtractError
from extract.source_check import check_source
from learner_export.processes import free_port
from tests.conftest import DemoSource, make_sqlite_demo
from tests.pg import PostgresCluster


def test_a_demo_source_passes(demo_source: DemoSource) -> None:
    check_source(demo_source.url)


def test_a_missing_sqlite_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TerminalExtractError, match=r"SQLite database .*missing\.db does not exist"):
        check_source(f"sqlite:///{tmp_path / 'missing.db'}")


def test_a_refused_postgresql_names_host_and_port_never_the_password() -> None:
    port = free_port()
    with pytest.raises(TransientExtractError) as refused:
        check_source(f"postgresql://someone:s3cret-pw@127.0.0.1:{port}/platform")
    assert str(refused.value) == (
        f"cannot connect to the postgresql source at 127.0.0.1:{port}: connection refused "
        "(is the server running there?)"
    )


@pytest.mark.postgres
def test_postgresql_says_which_database_or_role_is_wrong(pg_cluster: PostgresCluster) -> None:
    where = f"the postgresql source at 127.0.0.1:{pg_cluster.port}"
    with pytest.raises(TerminalExtractError) as missing:
        check_source(pg_cluster.url("no_such_database"))
    assert (
        str(missing.value)
        == f"cannot connect to {where}: database 'no_such_database' does not exist"
    )
    with pytest.raises(TerminalExtractError) as role:
        check_source(f"postgresql://nobody:pw@127.0.0.1:{pg_cluster.port}/postgres")
    assert str(role.value) == f"cannot connect to {where}: authentication failed for user 'nobody'"
    assert "pw" not in str(role.value).replace("postgresql", "")


def _sqlite_copy(source: Path, tmp_path: Path, *statements: str) -> str:
    copy = tmp_path / "drift.sqlite3"
    shutil.copy(source, copy)
    engine = sa.create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()
    return f"sqlite:///{copy}"


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("drift") / "demo.sqlite3"
    make_sqlite_demo(path, learners=2)
    return path


def test_an_added_column_or_table_is_ignored(sqlite_file: Path, tmp_path: Path) -> None:
    check_source(
        _sqlite_copy(
            sqlite_file,
            tmp_path,
            "ALTER TABLE lessons ADD COLUMN points INTEGER",
            "CREATE TABLE rewards (id INTEGER PRIMARY KEY)",
            "ALTER TABLE users DROP COLUMN password",  # never read by an export
        )
    )


@pytest.mark.parametrize(
    ("statements", "says"),
    [
        (["ALTER TABLE lessons DROP COLUMN score"], "column lessons.score is missing"),
        (["ALTER TABLE lessons RENAME COLUMN spec TO content"], "column lessons.spec is missing"),
        (["DROP TABLE achievements"], "table achievements is missing"),
        (
            [
                "ALTER TABLE lessons DROP COLUMN score",
                "ALTER TABLE lessons ADD COLUMN score BLOB",
            ],
            "column lessons.score is blob, the export reads integer",
        ),
    ],
    ids=["dropped", "renamed", "table-dropped", "retyped"],
)
def test_a_dropped_or_retyped_exported_column_is_refused_by_name(
    sqlite_file: Path, tmp_path: Path, statements: list[str], says: str
) -> None:
    with pytest.raises(TerminalExtractError) as drift:
        check_source(_sqlite_copy(sqlite_file, tmp_path, *statements))
    assert says in str(drift.value)
    assert str(drift.value).endswith("Nothing was written")


@pytest.mark.postgres
def test_a_retyped_postgresql_column_is_refused(pg_cluster: PostgresCluster) -> None:
    from tests.conftest import make_postgres_demo

    source = make_postgres_demo(pg_cluster, "drift", learners=2)
    engine = sa.create_engine(source.owner_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE lessons ALTER COLUMN score TYPE text")
        conn.exec_driver_sql("ALTER TABLE lessons ADD COLUMN points integer")
    engine.dispose()
    with pytest.raises(
        TerminalExtractError, match=r"column lessons\.score is text, the export reads integer"
    ):
        check_source(source.url)
