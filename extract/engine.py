"""Read-only engines for the source database.

Least privilege is enforced on our side too, not only by the database role: SQLite files are
opened with `mode=ro` (a missing file is an error, never a new empty database), and PostgreSQL
sessions start with `default_transaction_read_only=on`.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from extract.errors import (
    ExtractError,
    TerminalExtractError,
    TransientExtractError,
    classify_database_error,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def normalize_url(url: str | URL) -> URL:
    """Return `url` with the driver this project ships: psycopg 3 for PostgreSQL."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        # The message would quote the URL, password included.
        raise TerminalExtractError("the database URL is not a valid SQLAlchemy URL") from None
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in {
        "psycopg2",
        "psycopg",
    } | {parsed.get_backend_name()}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_postgresql(url: str | URL) -> bool:
    """Whether `url` names a PostgreSQL source (anything else is SQLite or refused)."""
    return normalize_url(url).get_backend_name() == "postgresql"


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:":
        return None
    return Path(database)


def describe(url: str | URL) -> str:
    """A printable name for the source that never includes credentials."""
    parsed = normalize_url(url)
    return parsed.render_as_string(hide_password=True)


@dataclass(frozen=True, slots=True)
class SourceTimeouts:
    """How long a reader waits on the source before giving up, in seconds (None: no bound).

    `pool`: for a free connection of the engine's pool (SQLAlchemy's `pool_timeout`).
    `connect`: for a new PostgreSQL connection (libpq's `connect_timeout`; libpq counts anything
    below 2 as 2). `statement`: for one PostgreSQL statement (the session's `statement_timeout`,
    enforced by the server; SQLite reads a local file and has no such bound).
    Every one of them ends as a `TransientExtractError` from `snapshot`.
    """

    pool: float | None = 30.0
    connect: int | None = 10
    statement: float | None = None


def create_source_engine(
    url: str | URL,
    *,
    timeouts: SourceTimeouts | None = None,
    ping_after_idle: float = 0.0,
    **engine_kwargs: Any,
) -> Engine:
    """An engine that can only read the source at `url`, bounded by `timeouts` (default:
    SQLAlchemy's 30 s pool wait, a 10 s connect timeout, no statement timeout).

    PostgreSQL connections are tested before use once they have been idle in the pool for more
    than `ping_after_idle` seconds (0: before every use, SQLAlchemy's `pool_pre_ping`), and a
    dead one is replaced: a restarted database costs no request. A connection used within that
    time goes out untested, which spares a round trip per checkout; if the database went away in
    between, the statement fails and the caller reports it (`snapshot`: transient).

    SQLite: the file must exist; it is opened read-only, and every transaction is an explicit
    `BEGIN` so that the several SELECTs of one export see one snapshot (pysqlite would otherwise
    run each SELECT outside any transaction).
    PostgreSQL: every session is read-only; callers ask for REPEATABLE READ where they need one
    snapshot across statements (`snapshot`).
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    timeouts = timeouts or SourceTimeouts()
    if timeouts.pool is not None:
        engine_kwargs.setdefault("pool_timeout", timeouts.pool)
    if backend == "sqlite":
        return _sqlite_engine(parsed, **engine_kwargs)
    if backend == "postgresql":
        return _postgres_engine(parsed, timeouts, ping_after_idle, **engine_kwargs)
    raise TerminalExtractError(f"unsupported database kind {backend!r}: use sqlite or postgresql")


def _sqlite_engine(url: URL, **engine_kwargs: Any) -> Engine:
    path = sqlite_path(url)
    if path is None:
        raise TerminalExtractError("an in-memory SQLite database has no data to export")
    if not path.is_file():
        raise TerminalExtractError(
            f"SQLite database {path} does not exist "
            "(run `learner-export demo-db` to create the demo)"
        )
    uri = f"{path.resolve().as_uri()}?mode=ro"

    def connect() -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; the "begin" hook below issues BEGIN.
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)

    # The URL says "sqlite://" only because `creator` opens the file, and for that URL SQLAlchemy
    # would pick SingletonThreadPool: one connection per thread, and connections of other threads
    # closed, while in use, once more than five threads have asked. A server's worker threads
    # crash the process that way. A QueuePool hands each connection to one thread at a time.
    engine_kwargs.setdefault("poolclass", sa.pool.QueuePool)
    engine = sa.create_engine("sqlite://", creator=connect, **engine_kwargs)

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def _postgres_engine(
    url: URL, timeouts: SourceTimeouts, ping_after_idle: float, **engine_kwargs: Any
) -> Engine:
    connect_args = _postgres_connect_args(timeouts, engine_kwargs.pop("connect_args", {}))
    engine = sa.create_engine(
        url, connect_args=connect_args, pool_pre_ping=ping_after_idle <= 0, **engine_kwargs
    )
    _postgres_sessions(engine, ping_after_idle)
    return engine


def create_async_source_engine(
    url: str | URL,
    *,
    timeouts: SourceTimeouts | None = None,
    ping_after_idle: float = 0.0,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """`create_source_engine` for asyncio, PostgreSQL only: the same read-only sessions, timeouts,
    idle test and stored JSON as bytes, through SQLAlchemy's asyncio extension (psycopg's
    AsyncConnection). A caller waits for the database on its event loop, without a thread.

    Its connections are in autocommit mode unless a caller says otherwise: its readers bring
    their own transaction (`extract.request_read.read_request_async` queues BEGIN and COMMIT in
    its pipeline; `async_snapshot` asks for REPEATABLE READ, and the pool puts autocommit back
    when the connection returns). Switching a connection to autocommit and back around every
    request cost ~0.2 ms of CPU per export (measured ad hoc: 1.40 against 1.18 ms for checkout,
    read and release), through SQLAlchemy's greenlet bridge each way.
    """
    from sqlalchemy.ext.asyncio import create_async_engine

    parsed = normalize_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise TerminalExtractError("an asyncio source engine reads PostgreSQL only")
    timeouts = timeouts or SourceTimeouts()
    if timeouts.pool is not None:
        engine_kwargs.setdefault("pool_timeout", timeouts.pool)
    connect_args = _postgres_connect_args(timeouts, engine_kwargs.pop("connect_args", {}))
    engine_kwargs.setdefault("isolation_level", "AUTOCOMMIT")
    engine = create_async_engine(
        parsed, connect_args=connect_args, pool_pre_ping=ping_after_idle <= 0, **engine_kwargs
    )
    _postgres_sessions(engine.sync_engine, ping_after_idle)
    return engine


def _postgres_connect_args(timeouts: SourceTimeouts, given: dict[str, Any]) -> dict[str, Any]:
    """libpq's settings of every source session: read-only, `timeouts`, our application name,
    UTF-8 text (`given` first, but never a writable session or another encoding)."""
    connect_args = dict(given)
    options = connect_args.get("options", "") + " -c default_transaction_read_only=on"
    if timeouts.statement is not None:
        # Server-side: a statement running longer is cancelled (SQLSTATE 57014, transient).
        options += f" -c statement_timeout={max(1, round(timeouts.statement * 1000))}"
    connect_args["options"] = options.strip()
    if timeouts.connect is not None:
        connect_args.setdefault("connect_timeout", timeouts.connect)
    connect_args.setdefault("application_name", "learner-export")
    # Text arrives as UTF-8 whatever the database's encoding, so stored JSON can go into the
    # (UTF-8) documents byte for byte.
    connect_args["client_encoding"] = "utf8"
    return connect_args


def _postgres_sessions(engine: Engine, ping_after_idle: float) -> None:
    """What `engine` does with each PostgreSQL connection it makes and hands out: stored JSON
    as bytes, and the idle test (`_ping_after_idle`; SQLAlchemy's pre-ping when 0)."""
    if ping_after_idle > 0:
        _ping_after_idle(engine, ping_after_idle)

    @sa.event.listens_for(engine, "connect")
    def _json_as_bytes(dbapi_connection: Any, _record: Any) -> None:
        # psycopg would parse every json/jsonb value into Python objects (and a str would cost a
        # decode): the builder passes stored JSON through unparsed, so hand its text over as
        # the bytes that arrived. Text result format only, which is all this package asks for.
        # (An asyncio engine's connection is SQLAlchemy's adapter around psycopg's.)
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        loader = _json_text_loader()
        for type_name in ("json", "jsonb"):
            driver.adapters.register_loader(type_name, loader)


_IDLE_SINCE = "learner_export_idle_since"
"""Where a pooled connection's record keeps the `time.monotonic()` of its last check-in."""


def _ping_after_idle(engine: Engine, seconds: float) -> None:
    """Test each connection of `engine` at checkout if it has been idle in the pool for more than
    `seconds`: SQLAlchemy's documented pessimistic recipe, where a `DisconnectionError` raised
    from the checkout event makes the pool replace the connection and try again."""

    @sa.event.listens_for(engine, "checkin")
    def _idle_from_now(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since <= seconds:
            return  # just made, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception:
            raise sa.exc.DisconnectionError("an idle source connection failed its test") from None


@functools.cache
def _json_text_loader() -> type:
    """A psycopg loader that returns a value's text as bytes (made on first use, so SQLite-only
    processes never import psycopg)."""
    from psycopg.adapt import Loader

    class JsonTextLoader(Loader):
        def load(self, data: Any) -> bytes:
            return bytes(data)

    return JsonTextLoader


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction in which every SELECT sees the same committed state.

    Source errors are translated: connection failures, timeouts and an exhausted pool become
    `TransientExtractError` (worth a retry), everything else `TerminalExtractError`. The
    database's own message is left out on purpose, since PostgreSQL quotes offending values; the
    SQLSTATE code is kept.
    """
    with source_errors(engine.dialect.name), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        with conn.begin():
            yield conn


@contextmanager
def source_connection(engine: Engine) -> Iterator[Connection]:
    """A connection of `engine`'s pool, in no transaction, its source errors translated as
    `snapshot` translates them (for readers that manage their transaction themselves,
    `extract.request_read`)."""
    with source_errors(engine.dialect.name), engine.connect() as conn:
        yield conn


@asynccontextmanager
async def async_source_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`source_connection` for an asyncio engine (`create_async_source_engine`)."""
    with source_errors(engine.dialect.name):
        async with engine.connect() as conn:
            yield conn


@asynccontextmanager
async def async_snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`snapshot` for an asyncio engine: one read-only REPEATABLE READ transaction, its errors
    translated. Sync readers run in it through `AsyncConnection.run_sync`."""
    with source_errors(engine.dialect.name):
        async with engine.connect() as conn:
            conn = await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with conn.begin():
                yield conn


@contextmanager
def source_errors(dialect: str) -> Iterator[None]:
    """Translate the errors of reading a `dialect` source, as `snapshot` states."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise translate_error(exc, dialect) from None
    except sa.exc.TimeoutError:
        # The pool's own wait (not a DBAPIError): every connection stayed busy for pool_timeout.
        raise TransientExtractError(
            f"no {dialect} source connection became free in time; it may be retried"
        ) from None


def translate_error(exc: sa.exc.DBAPIError, dialect: str) -> ExtractError:
    """The extract error a driver error of a `dialect` source is reported as (see `snapshot`)."""
    fault = classify_database_error(exc)
    where = f"{dialect} source"
    if fault.transient:
        return TransientExtractError(
            f"reading the {where} failed ({fault.code}); it may be retried"
        )
    return TerminalExtractError(f"reading the {where} failed ({fault.code})")
