"""extract.arrow_read on a real PostgreSQL server: the optional source tables read into Arrow give
the analyst rows the psycopg reads give, in the caller's snapshot, on a read-only connection, and
hand the values only psycopg reads as the tables define back to it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict

from extract.arrow_read import ArrowSession, _libpq_uri
from extract.engine import create_source_engine, snapshot
from extract.errors import TransientExtractError
from extract.reader import all_learner_ids, iter_optional_batches
from tests.conftest import DemoSource, make_postgres_demo
from tests.pg import PostgresCluster
from transform.source_tables import SourceTableRows
from transform.tables import RunStamp

pytestmark = pytest.mark.postgres

KEY = b"test-pseudonym-key-0123456789"
RUN = RunStamp("2026-12-03", datetime(2026, 12, 3, 12, 0, tzinfo=UTC))
TABLES = ("quiz_answers", "concept_mastery")


@pytest.fixture
def engine(postgres_demo: DemoSource) -> Iterator[sa.Engine]:
    engine = create_source_engine(postgres_demo.url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def writable(pg_cluster: PostgresCluster) -> DemoSource:
    """A demo database of this module's own, which its tests change."""
    return make_postgres_demo(pg_cluster, "arrow_read", learners=4)


def _via_arrow(session: ArrowSession, table: str, ids: list[int]) -> SourceTableRows:
    rows = SourceTableRows(table, KEY)
    batches = session.batches(table, ids)
    assert batches is not None and rows.accepts(batches.schema)
    for batch in batches:
        rows.add_arrow(batch)
    return rows


def _via_psycopg(conn: sa.Connection, table: str, ids: list[int]) -> SourceTableRows:
    rows = SourceTableRows(table, KEY)
    for names, batch in iter_optional_batches(conn, table, ids, size=7):
        rows.add_batch(names, batch)
    return rows


@pytest.mark.parametrize("table", TABLES)
def test_arrow_and_psycopg_give_the_same_rows(engine: sa.Engine, table: str) -> None:
    with snapshot(engine) as conn, ArrowSession(conn) as session:
        ids = all_learner_ids(conn)
        arrow = _via_arrow(session, table, ids)
        plain = _via_psycopg(conn, table, ids)
        assert arrow.pending == plain.pending > 0
        assert arrow.take(RUN).equals(plain.take(RUN), check_metadata=True)
        assert arrow.problems == plain.problems == []


def test_one_session_reads_both_tables_on_one_connection(engine: sa.Engine) -> None:
    with snapshot(engine) as conn, ArrowSession(conn) as session:
        ids = all_learner_ids(conn)
        for table in TABLES:
            _via_arrow(session, table, ids)
        cursor = session._adbc.cursor()
        cursor.execute(
            "SELECT current_setting('application_name'), "
            "current_setting('default_transaction_read_only'), "
            "current_setting('transaction_isolation'), current_setting('transaction_read_only')"
        )
        assert cursor.fetchall() == [("learner-export", "on", "repeatable read", "on")]
        cursor.close()


def _owner(source: DemoSource) -> psycopg.Connection[Any]:
    return psycopg.connect(source.owner_url.replace("+psycopg", ""), autocommit=True)


COPIED = "copied-by-test"
"""The question_hash of the answers a test adds (and removes again)."""


def _copy_an_answer(source: DemoSource, learner: int, **changed: str) -> None:
    """Add a copy of one of `learner`'s answers with the columns `changed` (SQL expressions)."""
    changed = {"question_hash": f"'{COPIED}'", **changed}
    columns = [
        "learner_id", "lesson_id", "question_index", "question_text", "question_hash",
        "user_answer", "correct_answer", "is_correct", "concept_tags", "answered_at",
    ]  # fmt: skip
    values = ", ".join(changed.get(name, name) for name in columns)
    with _owner(source) as db:
        db.execute(
            f"INSERT INTO quiz_answers (id, {', '.join(columns)}) "  # type: ignore[arg-type]
            f"SELECT gen_random_uuid(), {values} FROM quiz_answers WHERE learner_id = %s LIMIT 1",
            (learner,),
        )


def _drop_copies(source: DemoSource) -> None:
    with _owner(source) as db:
        db.execute("DELETE FROM quiz_answers WHERE question_hash = %s", (COPIED,))


def test_the_arrow_connection_sees_the_callers_snapshot(writable: DemoSource) -> None:
    engine = create_source_engine(writable.url)
    try:
        with snapshot(engine) as conn, ArrowSession(conn) as session:
            ids = all_learner_ids(conn)
            before = _via_psycopg(conn, "quiz_answers", ids).pending
            _copy_an_answer(writable, ids[0])  # committed after the snapshot began
            try:
                assert _via_arrow(session, "quiz_answers", ids).pending == before
            finally:
                _drop_copies(writable)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "changed",
    [
        {"answered_at": "'infinity'::timestamp"},
        {"answered_at": "'-infinity'::timestamp"},
        {"answered_at": "'0044-03-15 BC'::timestamp"},
        {"answered_at": "'10000-01-01'::timestamp"},
        {"concept_tags": "'{{a,b},{c,d}}'::text[]"},
    ],
    ids=["infinity", "-infinity", "BC", "year 10000", "2-D array"],
)
def test_values_only_psycopg_reads_as_defined_are_left_to_it(
    writable: DemoSource, changed: dict[str, str]
) -> None:
    """ADBC reads these differently (a number out of range, a flattened array): the session
    says None, and the caller reads the table through psycopg."""
    engine = create_source_engine(writable.url)
    try:
        with snapshot(engine) as conn:
            ids = all_learner_ids(conn)
        _copy_an_answer(writable, ids[-1], **changed)
        try:
            with snapshot(engine) as conn, ArrowSession(conn) as session:
                assert session.batches("quiz_answers", ids) is None
                for table, learners in (("quiz_answers", ids[:-1]), ("concept_mastery", ids)):
                    others = session.batches(table, learners)  # rows without such values
                    assert others is not None
                    others.close()
        finally:
            _drop_copies(writable)
    finally:
        engine.dispose()


def test_a_lost_arrow_connection_is_a_transient_error(
    writable: DemoSource, pg_cluster: PostgresCluster
) -> None:
    engine = create_source_engine(writable.url)
    try:
        with snapshot(engine) as conn, ArrowSession(conn) as session:
            ids = all_learner_ids(conn)
            _via_arrow(session, "quiz_answers", ids)
            ours = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with _owner(writable) as db:
                db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'learner-export' AND pid <> %s "
                    "AND datname = current_database()",
                    (ours,),
                )
            with pytest.raises(TransientExtractError) as raised:
                batches = session.batches("concept_mastery", ids)
                assert batches is not None
                list(batches)
            assert "into Arrow" in str(raised.value)
            assert "password" not in str(raised.value)
    finally:
        engine.dispose()


def test_the_libpq_uri_keeps_every_setting_as_libpq_reads_it() -> None:
    url = sa.make_url(
        "postgresql+psycopg://reader:p%40ss%20word@db.internal:6432/platform"
        "?sslmode=require&options=-c%20search_path%3Dapp"
    )
    uri = _libpq_uri(url, application_name="learner-export chunk", timeout="15s")
    assert conninfo_to_dict(uri) == {
        "user": "reader",
        "password": "p@ss word",
        "host": "db.internal",
        "port": "6432",
        "dbname": "platform",
        "sslmode": "require",
        "options": "-c search_path=app -c default_transaction_read_only=on "
        "-c statement_timeout=15s",
        "application_name": "learner-export chunk",
        "connect_timeout": "10",
        "client_encoding": "utf8",
    }
    odd = _libpq_uri(url, application_name="x", timeout="15s; DROP")  # never passed on
    assert "statement_timeout" not in conninfo_to_dict(odd)["options"]
