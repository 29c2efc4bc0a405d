"""extract.request_read.read_request_async and the asyncio source engine, on a real PostgreSQL
server: the same rows as the threaded read, in the same one round trip, read-only sessions with
their timeouts, and what a dead, slow or cancelled read costs."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from extract.engine import (
    SourceTimeouts,
    async_snapshot,
    async_source_connection,
    create_async_source_engine,
    create_source_engine,
    source_connection,
)
from extract.errors import TerminalExtractError, TransientExtractError
from extract.reader import read_users
from extract.request_read import RequestRows, read_request, read_request_async
from tests.conftest import DemoSource
from transform.document import LESSON_CAP

pytestmark = pytest.mark.postgres

T = TypeVar("T")


def _run(make: Callable[[AsyncEngine], Awaitable[T]], url: str, **engine_kwargs: Any) -> T:
    """`make(engine)` on a new event loop with a new asyncio engine for `url`, disposed after."""

    async def main() -> T:
        engine = create_async_source_engine(url, **engine_kwargs)
        try:
            return await make(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _read(engine: AsyncEngine, requester: int, learner: int) -> Awaitable[RequestRows]:
    async def read() -> RequestRows:
        async with async_source_connection(engine) as conn:
            return await read_request_async(conn, requester, learner, lesson_limit=LESSON_CAP)

    return read()


def _admin(source: DemoSource) -> int:
    return next(u["id"] for u in source.rows.users if u["role"] == "ADMIN")


@contextmanager
def _owner(source: DemoSource) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(source.owner_url.replace("+psycopg", ""), autocommit=True) as owner:
        yield owner


def test_every_request_reads_as_the_threaded_read_gives_it(postgres_demo: DemoSource) -> None:
    """Every demo learner asked for by an ADMIN, the learner's parent, another parent, the
    learner and an id nobody has: the same verdict, accounts and rows (so the same document)."""
    users = {u["id"]: u for u in postgres_demo.rows.users}
    parents = [i for i, u in users.items() if u["role"] == "PARENT"]
    missing = max(users) + 1000
    pairs = []
    for learner in postgres_demo.rows.learner_ids:
        parent = users[learner]["parent_id"]
        stranger = next(p for p in parents if p != parent)
        for requester in (_admin(postgres_demo), parent, stranger, learner, missing):
            if requester is not None:
                pairs.append((requester, learner))
    pairs.append((_admin(postgres_demo), missing))

    async def read_all(engine: AsyncEngine) -> list[RequestRows]:
        return [await _read(engine, requester, learner) for requester, learner in pairs]

    got = _run(read_all, postgres_demo.url)
    threaded = create_source_engine(postgres_demo.url)
    try:
        for (requester, learner), read in zip(pairs, got, strict=True):
            with source_connection(threaded) as conn:
                expected = read_request(conn, requester, learner, lesson_limit=LESSON_CAP)
            assert read == expected, (requester, learner)
    finally:
        threaded.dispose()
    assert sum(read.allowed for read in got) > len(postgres_demo.rows.learner_ids)


@pytest.mark.parametrize(
    "engine_kwargs",
    [{}, {"isolation_level": "READ COMMITTED"}],
    ids=["the source engine (autocommit)", "an engine not in autocommit"],
)
def test_one_round_trip_in_one_read_only_snapshot(
    postgres_demo: DemoSource, tmp_path: Path, engine_kwargs: dict[str, Any]
) -> None:
    """libpq's trace of one asyncio read: BEGIN REPEATABLE READ READ ONLY, the four statements,
    COMMIT and one Sync, as the threaded read sends them; the connection ends idle. On an engine
    whose connections are not in autocommit, the read switches its own (psycopg would otherwise
    open a transaction of its own first)."""
    trace = tmp_path / "libpq.trace"
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]

    async def traced(engine: AsyncEngine) -> tuple[RequestRows, bool]:
        async with async_source_connection(engine) as conn:
            await read_request_async(conn, admin, learner, lesson_limit=LESSON_CAP)  # warm
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert isinstance(driver, psycopg.AsyncConnection)
            with trace.open("w") as out:
                driver.pgconn.trace(out.fileno())
                driver.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
                read = await read_request_async(conn, admin, learner, lesson_limit=LESSON_CAP)
                driver.pgconn.untrace()
            idle = driver.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
            return read, idle

    read, idle = _run(traced, postgres_demo.url, **engine_kwargs)
    assert read.allowed and idle
    text = trace.read_text()
    kinds = re.findall(r"^F\t\d+\t(\w+)", text, flags=re.MULTILINE)
    assert kinds.count("Sync") == 1
    assert kinds.count("Execute") == 6
    assert kinds.index("Sync") > max(i for i, kind in enumerate(kinds) if kind == "Execute")
    assert (
        text.index('"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"')
        < text.index("FROM lessons")
        < text.index('"COMMIT"')
    )


def test_sessions_are_read_only_and_bounded(postgres_demo: DemoSource) -> None:
    """The asyncio engine's sessions: read-only by default, our application name, the
    statement timeout asked for; its snapshots are REPEATABLE READ and read-only."""

    async def settings(engine: AsyncEngine) -> list[str]:
        async with async_snapshot(engine) as conn:
            names = (
                "default_transaction_read_only",
                "transaction_read_only",
                "transaction_isolation",
                "statement_timeout",
                "application_name",
            )
            return [(await conn.exec_driver_sql(f"SHOW {name}")).scalar_one() for name in names]

    shown = _run(settings, postgres_demo.url, timeouts=SourceTimeouts(statement=1.5))
    assert shown == ["on", "on", "repeatable read", "1500ms", "learner-export"]


def test_connections_are_in_autocommit_at_every_checkout(postgres_demo: DemoSource) -> None:
    """The engine's one connection is in autocommit when checked out: at first, after a read,
    and after a REPEATABLE READ snapshot (the pool puts autocommit back), so a read never
    switches it (each switch, and the pool's switch back, cost CPU on every request)."""
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]

    async def modes(engine: AsyncEngine) -> list[bool]:
        seen = []
        for use in ("read", "snapshot", "read", None):
            async with async_source_connection(engine) as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert isinstance(driver, psycopg.AsyncConnection)
                seen.append(driver.autocommit)
                if use == "read":
                    await read_request_async(conn, admin, learner, lesson_limit=LESSON_CAP)
            if use == "snapshot":
                async with async_snapshot(engine) as conn:
                    await conn.run_sync(read_users, {admin})
        return seen

    assert _run(modes, postgres_demo.url, pool_size=1, max_overflow=0) == [True] * 4


def test_a_sqlite_source_has_no_asyncio_engine(sqlite_demo: DemoSource) -> None:
    with pytest.raises(TerminalExtractError, match="PostgreSQL only"):
        create_async_source_engine(sqlite_demo.url)


def test_sync_readers_run_in_an_asyncio_snapshot(postgres_demo: DemoSource) -> None:
    """`AsyncConnection.run_sync` runs the threaded readers (here `read_users`, the endpoint's
    read once the rate limit said no) on the asyncio engine's connection."""
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]

    async def accounts(engine: AsyncEngine) -> dict[int, Any]:
        async with async_snapshot(engine) as conn:
            found = await conn.run_sync(read_users, {admin, learner})
            return {i: dict(row) for i, row in found.items()}

    found = _run(accounts, postgres_demo.url)
    assert found[admin]["role"] == "ADMIN" and found[learner]["role"] == "LEARNER"
    assert "password" not in found[admin]


def _backend_pid(engine: AsyncEngine) -> Awaitable[int]:
    async def pid() -> int:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert isinstance(driver, psycopg.AsyncConnection)
            return driver.info.backend_pid

    return pid()


def test_a_connection_that_died_in_use_is_transient_and_not_reused(
    postgres_demo: DemoSource,
) -> None:
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]

    async def scenario(engine: AsyncEngine) -> tuple[int, int, bool]:
        first = await _backend_pid(engine)
        with _owner(postgres_demo) as owner:
            owner.execute("SELECT pg_terminate_backend(%s)", (first,))
        with pytest.raises(TransientExtractError, match="postgresql source") as raised:
            await _read(engine, admin, learner)
        assert "password" not in str(raised.value)
        read = await _read(engine, admin, learner)  # a new connection, not the dead one
        return first, await _backend_pid(engine), read.allowed

    first, then, allowed = _run(
        scenario, postgres_demo.url, ping_after_idle=60.0, pool_size=1, max_overflow=0
    )
    assert allowed and then != first


@pytest.mark.parametrize("ping_after_idle", [0.0, 0.2])
def test_an_idle_connection_is_tested_and_replaced(
    postgres_demo: DemoSource, ping_after_idle: float
) -> None:
    """The threaded engine's idle test, on the asyncio engine: idle longer than
    `ping_after_idle` (0: always), a dead pooled connection is replaced at checkout and the
    read never sees it."""
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]

    async def scenario(engine: AsyncEngine) -> tuple[int, int, bool]:
        first = await _backend_pid(engine)
        with _owner(postgres_demo) as owner:
            owner.execute("SELECT pg_terminate_backend(%s)", (first,))
        await asyncio.sleep(ping_after_idle + 0.1)
        read = await _read(engine, admin, learner)
        return first, await _backend_pid(engine), read.allowed

    first, then, allowed = _run(
        scenario,
        postgres_demo.url,
        ping_after_idle=ping_after_idle,
        pool_size=1,
        max_overflow=0,
    )
    assert allowed and then != first


def _blocked_on(owner: psycopg.Connection[Any], pid: int) -> None:
    """Wait (up to 10 s) until backend `pid` waits for a lock."""
    for _ in range(1000):
        row = owner.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == "Lock":
            return
        time.sleep(0.01)
    raise AssertionError("the read never waited for the lock")


def test_a_statement_over_its_timeout_is_transient(postgres_demo: DemoSource) -> None:
    """A read held up by a lock past the session's statement timeout: the server cancels it,
    and the caller hears a transient error that names the SQLSTATE only."""
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]

    async def scenario(engine: AsyncEngine) -> str:
        with _owner(postgres_demo) as owner, owner.transaction():
            owner.execute("LOCK TABLE lessons IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(TransientExtractError) as raised:
                await _read(engine, admin, learner)
        return str(raised.value)

    message = _run(scenario, postgres_demo.url, timeouts=SourceTimeouts(statement=1))
    assert "57014" in message  # query_canceled


def test_a_cancelled_read_never_goes_back_to_the_pool(postgres_demo: DemoSource) -> None:
    """A request cancelled while its pipeline waits (a client gone, a server stopping): its
    connection, in an unknown state, is closed rather than handed to the next request, which
    reads on a new one."""
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]

    async def scenario(engine: AsyncEngine) -> tuple[int, int, bool]:
        first = await _backend_pid(engine)
        with _owner(postgres_demo) as owner:
            with owner.transaction():
                owner.execute("LOCK TABLE lessons IN ACCESS EXCLUSIVE MODE")
                task = asyncio.create_task(_read(engine, admin, learner))
                await asyncio.to_thread(_blocked_on, owner, first)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            read = await _read(engine, admin, learner)
        return first, await _backend_pid(engine), read.allowed

    # One connection in the pool, tested only after a minute idle: the next read would get the
    # cancelled one back, were it returned.
    first, then, allowed = _run(
        scenario, postgres_demo.url, ping_after_idle=60.0, pool_size=1, max_overflow=0
    )
    assert allowed and then != first


def test_an_exhausted_pool_is_transient(postgres_demo: DemoSource) -> None:
    """Every connection busy past the pool timeout: a transient error; once one is back, the
    next read is served."""
    admin, learner = _admin(postgres_demo), postgres_demo.rows.learner_ids[0]

    async def scenario(engine: AsyncEngine) -> bool:
        async with engine.connect():  # the only connection, held
            with pytest.raises(TransientExtractError, match="no postgresql source connection"):
                await _read(engine, admin, learner)
        return (await _read(engine, admin, learner)).allowed

    assert _run(
        scenario, postgres_demo.url, timeouts=SourceTimeouts(pool=0.2), pool_size=1, max_overflow=0
    )


def test_json_arrives_as_the_stored_bytes(postgres_demo: DemoSource) -> None:
    """The asyncio engine's connections hand json/jsonb over unparsed, as the threaded ones do."""

    async def value(engine: AsyncEngine) -> Any:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("""SELECT '{"b": 1,  "a": [2]}'::json"""))).scalar()

    assert _run(value, postgres_demo.url) == b'{"b": 1,  "a": [2]}'
