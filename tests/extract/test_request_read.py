"""extract.request_read on real databases: one request's reads give the rows read_learner gives,
guarded by the endpoint's rule, in one snapshot and (PostgreSQL) one round trip."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import sqlalchemy as sa

from extract import queries
from extract.engine import create_source_engine, snapshot, source_connection
from extract.errors import TransientExtractError
from extract.reader import read_learner
from extract.request_read import _compiled, read_request
from tests.conftest import DemoSource
from transform.document import LESSON_CAP, build_document

WHEN = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(demo_source: DemoSource) -> Iterator[sa.Engine]:
    engine = create_source_engine(demo_source.url)
    yield engine
    engine.dispose()


def _admin(source: DemoSource) -> int:
    return next(u["id"] for u in source.rows.users if u["role"] == "ADMIN")


def _document(rows: Any, admin: int) -> bytes:
    return orjson.dumps(build_document(rows, export_date=WHEN, exported_by=admin).document)


def test_every_learner_reads_as_read_learner_gives_it(
    engine: sa.Engine, demo_source: DemoSource
) -> None:
    """The same rows, so the same document byte for byte, for every demo learner (the
    1,000-lesson one capped, with its full count)."""
    admin = _admin(demo_source)
    capped = 0
    for learner_id in demo_source.rows.learner_ids:
        with source_connection(engine) as conn:
            read = read_request(conn, admin, learner_id, lesson_limit=LESSON_CAP)
        with snapshot(engine) as conn:
            expected = read_learner(conn, learner_id, lesson_limit=LESSON_CAP)
        assert read.allowed and read.learner is not None
        assert read.learner.lesson_total == expected.lesson_total
        assert len(read.learner.lessons) == len(expected.lessons)
        assert read.learner.json_checked == expected.json_checked
        assert _document(read.learner, admin) == _document(expected, admin)
        assert sorted(read.users) == sorted({admin, learner_id})
        capped += expected.lesson_total > len(expected.lessons)
    assert capped == 1  # the demo's 1,000-lesson learner, over the cap (LESSON_CAP)


def _rule(users: dict[int, dict[str, Any]], requester: int, learner: int) -> bool:
    """Contract §3: an ADMIN exports any learner, a PARENT their own children, nobody else."""
    asking, child = users.get(requester), users.get(learner)
    if asking is None or child is None or child["role"] != "LEARNER":
        return False
    return asking["role"] == "ADMIN" or (
        asking["role"] == "PARENT" and child["parent_id"] == requester
    )


def test_the_verdict_is_the_endpoint_rule_for_every_pair(
    engine: sa.Engine, demo_source: DemoSource
) -> None:
    """Every pair of demo users (and ids nobody has): allowed exactly when the rule allows, and
    a refused request reads no row of the learner."""
    users = {u["id"]: u for u in demo_source.rows.users}
    ids = [*users, max(users) + 1]
    outcomes = set()
    with source_connection(engine) as conn:
        for requester, learner in itertools.product(ids, ids):
            read = read_request(conn, requester, learner, lesson_limit=LESSON_CAP)
            expected = _rule(users, requester, learner)
            assert read.allowed is expected, (requester, learner)
            assert (read.learner is not None) is expected
            assert set(read.users) == {requester, learner} & set(users)
            outcomes.add((users.get(requester, {}).get("role"), expected))
    # Every role was asked for, and both verdicts were seen for parents.
    assert {("ADMIN", True), ("PARENT", True), ("PARENT", False), ("LEARNER", False)} <= outcomes


def test_a_refused_request_reads_no_row_of_the_learner(
    engine: sa.Engine, demo_source: DemoSource
) -> None:
    """The three statements of the learner's rows, run alone: nothing for a stranger's
    request, the rows for the learner's parent."""
    users = {u["id"]: u for u in demo_source.rows.users}
    learner = next(i for i in demo_source.rows.learner_ids if users[i]["parent_id"] is not None)
    parent = users[learner]["parent_id"]
    stranger = next(u["id"] for u in users.values() if u["role"] == "PARENT" and u["id"] != parent)
    statements = queries.request_statements(engine.dialect.name)
    rows_of = (statements.profile, statements.achievements, statements.lessons)

    def counts(requester: int) -> list[int]:
        params = {
            queries.REQUESTER: requester,
            queries.LEARNER: learner,
            queries.LEARNER_TEXT: str(learner),
            queries.LESSON_LIMIT: LESSON_CAP,
        }
        with snapshot(engine) as conn:
            return [len(conn.execute(s, params).all()) for s in rows_of]

    assert counts(stranger) == [0, 0, 0]
    assert counts(learner) == [0, 0, 0]  # a LEARNER exports nothing, not even their own
    own = counts(parent)
    assert own[0] == 1 and own[2] > 0


# --- PostgreSQL: one round trip, and what a dead connection costs -------------------------------


@pytest.mark.postgres
def test_one_round_trip_in_one_read_only_snapshot(
    postgres_demo: DemoSource, tmp_path: Path
) -> None:
    """libpq's own trace of one request: BEGIN REPEATABLE READ READ ONLY, the four statements,
    COMMIT, and a single Sync: the client waits for the server once."""
    engine = create_source_engine(postgres_demo.url)
    learner = postgres_demo.rows.learner_ids[0]
    trace = tmp_path / "libpq.trace"
    try:
        with source_connection(engine) as conn:
            read_request(conn, _admin(postgres_demo), learner, lesson_limit=LESSON_CAP)  # warm
            driver = conn.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            with trace.open("w") as out:
                driver.pgconn.trace(out.fileno())
                driver.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
                read = read_request(conn, _admin(postgres_demo), learner, lesson_limit=LESSON_CAP)
                driver.pgconn.untrace()
            assert driver.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        engine.dispose()
    assert read.allowed
    text = trace.read_text()
    kinds = re.findall(r"^F\t\d+\t(\w+)", text, flags=re.MULTILINE)  # the messages sent
    assert kinds.count("Sync") == 1
    assert kinds.count("Execute") == 6  # BEGIN, four statements, COMMIT
    assert kinds.index("Sync") > max(i for i, kind in enumerate(kinds) if kind == "Execute")
    assert '"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"' in text
    assert '"COMMIT"' in text
    assert text.index('"BEGIN ISOLATION') < text.index("FROM lessons") < text.index('"COMMIT"')


def _terminate(source: DemoSource, pid: int) -> None:
    with psycopg.connect(source.owner_url.replace("+psycopg", ""), autocommit=True) as owner:
        owner.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        return driver.info.backend_pid


@pytest.mark.postgres
def test_a_connection_that_died_in_use_is_transient_and_not_reused(
    postgres_demo: DemoSource,
) -> None:
    engine = create_source_engine(postgres_demo.url, ping_after_idle=60.0, pool_size=1)
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]
    try:
        _terminate(postgres_demo, _backend_pid(engine))
        with (
            pytest.raises(TransientExtractError, match="postgresql source"),
            source_connection(engine) as conn,
        ):
            read_request(conn, admin, learner, lesson_limit=LESSON_CAP)
        with source_connection(engine) as conn:  # a new connection, not the dead one
            assert read_request(conn, admin, learner, lesson_limit=LESSON_CAP).allowed
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("ping_after_idle", [0.0, 0.2])
def test_an_idle_connection_is_tested_and_replaced(
    postgres_demo: DemoSource, ping_after_idle: float
) -> None:
    """Idle longer than `ping_after_idle` (0: always), a dead pooled connection is replaced at
    checkout: the request never sees it."""
    engine = create_source_engine(postgres_demo.url, ping_after_idle=ping_after_idle, pool_size=1)
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]
    try:
        first = _backend_pid(engine)
        _terminate(postgres_demo, first)
        time.sleep(ping_after_idle + 0.1)
        with source_connection(engine) as conn:
            assert read_request(conn, admin, learner, lesson_limit=LESSON_CAP).allowed
        assert _backend_pid(engine) != first
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_known_column_names_are_the_results(postgres_demo: DemoSource) -> None:
    """The rows are keyed by names taken from the statements, not from each result: they must
    be the names PostgreSQL describes, in its order."""
    engine = create_source_engine(postgres_demo.url)
    params = {
        queries.REQUESTER: _admin(postgres_demo),
        queries.LEARNER: postgres_demo.rows.learner_ids[0],
        queries.LEARNER_TEXT: str(postgres_demo.rows.learner_ids[0]),
        queries.LESSON_LIMIT: LESSON_CAP,
    }
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            for statement in _compiled(conn.dialect):
                with driver.cursor() as cursor:
                    cursor.execute(statement.sql, {**statement.defaults, **params})
                    assert cursor.description is not None
                    assert tuple(c.name for c in cursor.description) == statement.columns
    finally:
        engine.dispose()
