"""`extract.errors.classify_database_error`: the one transient/terminal decision for database
errors, per SQLSTATE class and SQLite result code, and the same for reading and restoring.

The driver exceptions are the drivers' own classes (psycopg's per-SQLSTATE errors, sqlite3's);
two cases are raised by real databases end to end.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg.errors
import pytest
import sqlalchemy as sa

from extract.engine import create_source_engine, snapshot
from extract.errors import (
    TerminalExtractError,
    TransientExtractError,
    classify_database_error,
)
from load.errors import TransientLoadError
from load.restore_target import open_target, prepare_target
from tests.conftest import DemoSource


def _wrapped(orig: Exception) -> sa.exc.DBAPIError:
    """`orig` as SQLAlchemy hands it on (the wrapper class follows the DBAPI class)."""
    wrapped: sa.exc.DBAPIError = sa.exc.DBAPIError.instance(
        "SELECT 1",
        {},
        orig,
        type(orig).__mro__[1] if isinstance(orig, psycopg.Error) else Exception,
    )
    return wrapped


def _sqlite_error(name: str) -> sqlite3.Error:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorname = name
    return error


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("08006", True),  # connection failure
        ("08001", True),  # cannot connect
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock
        ("53300", True),  # too many connections
        ("53200", True),  # out of memory
        ("57P01", True),  # admin shutdown (a restart)
        ("57P03", True),  # cannot connect now (starting up)
        ("57014", True),  # query cancelled: statement_timeout
        ("42P01", False),  # undefined table: the source lacks the contract's tables
        ("42501", False),  # insufficient privilege
        ("23505", False),  # unique violation (restore)
        ("22P02", False),  # invalid text representation
        ("25006", False),  # read-only transaction
        ("XX000", False),  # internal error
    ],
)
def test_postgresql_errors_by_sqlstate_class(sqlstate: str, transient: bool) -> None:
    fault = classify_database_error(_wrapped(psycopg.errors.lookup(sqlstate)()))

    assert fault.code == sqlstate
    assert fault.answered
    assert fault.transient is transient


@pytest.mark.parametrize(
    ("name", "transient"),
    [
        ("SQLITE_BUSY", True),
        ("SQLITE_BUSY_SNAPSHOT", True),
        ("SQLITE_LOCKED", True),
        ("SQLITE_IOERR_READ", True),
        ("SQLITE_PROTOCOL", True),
        ("SQLITE_READONLY", False),
        ("SQLITE_CORRUPT", False),
        ("SQLITE_CONSTRAINT_PRIMARYKEY", False),
        ("SQLITE_ERROR", False),  # no such table, syntax
        ("SQLITE_CANTOPEN", False),
    ],
)
def test_sqlite_errors_by_result_code(name: str, transient: bool) -> None:
    fault = classify_database_error(_wrapped(_sqlite_error(name)))

    assert (fault.code, fault.answered, fault.transient) == (name, True, transient)


def test_a_driver_failure_before_any_answer_is_transient() -> None:
    refused = sa.exc.OperationalError("connect", {}, psycopg.OperationalError("refused"))

    fault = classify_database_error(refused)

    assert (fault.code, fault.answered, fault.transient) == ("OperationalError", False, True)


def test_an_invalidated_connection_is_transient_whatever_the_code() -> None:
    error = _wrapped(psycopg.errors.lookup("XX000")())
    error.connection_invalidated = True

    assert classify_database_error(error).transient


def test_a_busy_sqlite_file_is_transient_when_reading_and_when_restoring(tmp_path: Path) -> None:
    """The same SQLITE_BUSY, raised for real by a file another connection holds locked."""
    target_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    target = open_target(target_url)
    prepare_target(target)
    target.dispose()
    locker = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        reader = create_source_engine(target_url)  # waits sqlite3's default 5 s, then BUSY
        busy = r"\(SQLITE_BUSY\); it may be retried"
        with pytest.raises(TransientExtractError, match=busy), snapshot(reader) as conn:
            conn.execute(sa.text("SELECT count(*) FROM users"))
        reader.dispose()
        writer = open_target(target_url + "?timeout=0")
        with pytest.raises(TransientLoadError, match=busy):
            prepare_target(writer)
        writer.dispose()
    finally:
        locker.execute("ROLLBACK")
        locker.close()


@pytest.mark.postgres
def test_a_statement_timeout_is_transient_and_a_missing_table_terminal(
    postgres_demo: DemoSource,
) -> None:
    engine = create_source_engine(postgres_demo.url)
    try:
        with pytest.raises(TransientExtractError, match=r"\(57014\)"), snapshot(engine) as conn:
            conn.execute(sa.text("SET LOCAL statement_timeout = 1"))
            conn.execute(sa.text("SELECT pg_sleep(5)"))
        with pytest.raises(TerminalExtractError, match=r"\(42P01\)$"), snapshot(engine) as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
    finally:
        engine.dispose()
