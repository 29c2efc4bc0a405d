"""extract.engine: read-only engines, URL handling and error translation."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from extract.engine import (
    SourceTimeouts,
    create_source_engine,
    describe,
    normalize_url,
    snapshot,
)
from extract.errors import TerminalExtractError, TransientExtractError
from extract.reader import all_learner_ids
from learner_export.processes import free_port
from tests.conftest import DemoSource
from tests.pg import PostgresCluster


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg2://u:p@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_postgresql_urls_use_psycopg_3(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


def test_descriptions_and_errors_never_show_the_password() -> None:
    assert "s3cret" not in describe("postgresql://user:s3cret@db.example/platform")
    with pytest.raises(TerminalExtractError) as caught:
        normalize_url("not a url with s3cret")
    assert "s3cret" not in str(caught.value)


def test_a_missing_sqlite_file_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    with pytest.raises(TerminalExtractError, match="does not exist"):
        create_source_engine(f"sqlite:///{missing}")
    assert not missing.exists()


def test_unsupported_databases_are_refused() -> None:
    with pytest.raises(TerminalExtractError, match="unsupported database kind 'mysql'"):
        create_source_engine("mysql://u@h/db")


def test_an_unreachable_server_is_transient() -> None:
    port = free_port()  # a loopback port nobody listens on
    engine = create_source_engine(f"postgresql://nobody:pw@127.0.0.1:{port}/none")
    with (
        pytest.raises(TransientExtractError, match="may be retried") as caught,
        snapshot(engine) as conn,
    ):
        all_learner_ids(conn)
    assert "pw" not in str(caught.value)


def test_an_empty_sqlite_file_is_terminal(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    engine = create_source_engine(f"sqlite:///{empty}")
    expected = r"sqlite source failed \(SQLITE_ERROR\)"
    with pytest.raises(TerminalExtractError, match=expected), snapshot(engine) as conn:
        all_learner_ids(conn)


@pytest.mark.postgres
def test_a_database_without_the_tables_is_terminal(pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.create_database("no_tables")
    engine = create_source_engine(url)
    with pytest.raises(TerminalExtractError, match=r"\(42P01\)"), snapshot(engine) as conn:
        all_learner_ids(conn)
    engine.dispose()


def test_an_exhausted_pool_is_transient(sqlite_demo: DemoSource) -> None:
    engine = create_source_engine(
        sqlite_demo.url, timeouts=SourceTimeouts(pool=0.05), pool_size=1, max_overflow=0
    )
    with (
        engine.connect(),  # the pool's only connection, held
        pytest.raises(TransientExtractError, match="no sqlite source connection became free"),
        snapshot(engine),
    ):
        pass
    engine.dispose()


def test_a_server_that_never_answers_is_a_transient_connect_timeout() -> None:
    """A listening socket that accepts and never speaks: libpq gives up after connect_timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        engine = create_source_engine(
            f"postgresql://nobody@127.0.0.1:{port}/none", timeouts=SourceTimeouts(connect=2)
        )
        with pytest.raises(TransientExtractError, match="may be retried"), snapshot(engine):
            pass
        engine.dispose()


@pytest.mark.postgres
def test_a_statement_past_the_statement_timeout_is_transient(postgres_demo: DemoSource) -> None:
    engine = create_source_engine(postgres_demo.url, timeouts=SourceTimeouts(statement=0.05))
    with pytest.raises(TransientExtractError, match="57014"), snapshot(engine) as conn:
        conn.exec_driver_sql("SELECT pg_sleep(5)")
    with snapshot(engine) as conn:  # the session is usable again afterwards
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "50ms"
    engine.dispose()
