"""The optional source tables (contract §1b) read from PostgreSQL straight into Arrow record
batches, in the caller's snapshot.

A 200-learner chunk of the bench has ~120,000 `quiz_answers` rows: through psycopg each row
became a tuple of Python objects, and each column of a batch a Python list that Arrow then
converted again, about a second of the chunk. The PostgreSQL driver of Arrow's ADBC project reads
the same statement (`extract.queries.OPTIONAL_QUERIES`: the same columns, names and order) with
the binary COPY protocol into Arrow arrays, in C++.

The driver has a connection of its own, which imports the caller's snapshot
(`pg_export_snapshot()`, as `pg_dump --jobs` shares one): a REPEATABLE READ, READ ONLY
transaction that sees exactly what the caller's transaction sees. It is opened like the source
engine's connections: the same URL, read-only by default, the same application name and
statement timeout.

ADBC and psycopg do not convert every stored value alike: a timestamp of `infinity` or outside
years 1-9999 (psycopg refuses it; ADBC gives a number out of range) and a multi-dimensional
`text[]` (psycopg nests it; ADBC flattens it). So `ArrowSession.batches` first asks, in the
caller's snapshot, whether these learners' rows hold any such value, and returns None when they
do: the caller then reads them through psycopg, whose answer for those values is the one the
analyst tables define. Errors are `ExtractError`s, classified as the engine's are, and never
quote the database's message.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from extract import queries
from extract.errors import (
    TRANSIENT_SQLSTATE_PREFIXES,
    TerminalExtractError,
    TransientExtractError,
)
from extract.tables import OPTIONAL_TABLES

BATCH_BYTES = 1 << 20
"""The size of record batch asked of the driver (a hint): ~4,000 `quiz_answers` rows, about the
row groups the tables are written in; its default (16 MB) held ~60,000 rows per batch per chunk
thread."""

_BATCH_SIZE_HINT = "adbc.postgresql.batch_size_hint_bytes"
"""The driver's statement option for BATCH_BYTES (`adbc_driver_postgresql.StatementOptions`)."""

CONNECT_TIMEOUT_SECONDS = 10
"""How long opening the Arrow connection may take before it fails (transient)."""

_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")
"""What `pg_export_snapshot()` returns (checked before it goes into a SET statement)."""

_SETTING = re.compile(r"[0-9]+[a-z]*")
"""A `statement_timeout` as `current_setting` shows it (`0`, `15s`, `1500ms`)."""

_TIMESTAMPS = {"quiz_answers": ("answered_at",), "concept_mastery": ("last_tested", "created_at")}
_TEXT_ARRAYS = {"quiz_answers": ("concept_tags",), "concept_mastery": ()}


class ArrowSession:
    """Arrow reads of the optional source tables in the snapshot of `conn` (PostgreSQL).

    Use as a context manager; the connection is opened on the first read that needs it and
    closed on exit. Not thread-safe: one per chunk.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._adbc: Any = None
        self._snapshot_failed = False

    def __enter__(self) -> ArrowSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batches(self, table: str, learner_ids: Collection[int]) -> ArrowRows | None:
        """The rows of optional table `table` for these learners, as `iter_optional_batches`
        would read them (same columns, names and order), in record batches of about
        BATCH_BYTES; None when they must be read through psycopg instead (see the module's
        docstring). The table must exist."""
        ids = sorted(set(learner_ids))
        if not ids or not self._all_convertible(table, ids):
            return None
        cursor = self._cursor()
        if cursor is None:
            return None
        statement = queries.OPTIONAL_QUERIES[table](queries.POSTGRESQL, ids)
        compiled = statement.compile(
            dialect=self._conn.dialect,
            compile_kwargs={"render_postcompile": True, "literal_binds": True},  # ints only
        )
        with _translated(table):
            cursor.adbc_statement.set_options(**{_BATCH_SIZE_HINT: str(BATCH_BYTES)})
            cursor.execute(str(compiled))
            reader = cursor.fetch_record_batch()
        return ArrowRows(cursor, reader, table)

    def close(self) -> None:
        """End the Arrow connection's transaction and close it (never raises)."""
        adbc, self._adbc = self._adbc, None
        if adbc is not None:
            with suppress(Exception):
                adbc.close()

    def _all_convertible(self, table: str, ids: list[int]) -> bool:
        """Whether every row of these learners holds only values ADBC converts as psycopg
        does: timestamps within years 1-9999, text arrays of one dimension (or none)."""
        source = OPTIONAL_TABLES[table]
        odd: list[sa.ColumnElement[bool]] = []
        for name in _TIMESTAMPS[table]:
            column = source.c[name]
            odd.append(
                sa.and_(
                    column.is_not(None),
                    sa.or_(
                        column < sa.literal_column("'0001-01-01'::timestamp"),
                        column >= sa.literal_column("'10000-01-01'::timestamp"),
                    ),
                )
            )
        for name in _TEXT_ARRAYS[table]:
            odd.append(sa.func.coalesce(sa.func.array_ndims(source.c[name]), 1) != 1)
        found = self._conn.execute(
            sa.select(sa.exists().where(source.c.learner_id.in_(ids), sa.or_(*odd)))
        ).scalar()
        return not found

    def _cursor(self) -> Any:
        """The Arrow connection's cursor, in the caller's snapshot; None when the server gave
        no snapshot id (the caller reads through psycopg)."""
        if self._adbc is not None:
            return self._adbc.cursor()
        if self._snapshot_failed:
            return None
        snapshot_id = self._export_snapshot()
        if snapshot_id is None:
            self._snapshot_failed = True
            return None
        import adbc_driver_postgresql.dbapi as adbc

        settings = self._conn.execute(
            sa.text(
                "SELECT current_setting('application_name'), current_setting('statement_timeout')"
            )
        ).one()
        uri = _libpq_uri(self._conn.engine.url, application_name=settings[0], timeout=settings[1])
        with _translated("the source"):
            connection = adbc.connect(uri, autocommit=True)
            try:
                cursor = connection.cursor()
                cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
            except BaseException:
                with suppress(Exception):
                    connection.close()
                raise
        self._adbc = connection
        return cursor

    def _export_snapshot(self) -> str | None:
        """The caller's snapshot id, or None when the server's answer is not one. (Not in a
        savepoint: PostgreSQL exports no snapshot from a subtransaction. An error here is the
        caller's transaction's, translated as its reads' are.)"""
        exported = self._conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar()
        if not isinstance(exported, str) or not _SNAPSHOT_ID.fullmatch(exported):
            return None
        return exported


class ArrowRows:
    """The record batches of one read: `schema` is known before the first batch; iterate once,
    then (or instead) `close`. Errors are translated as the module's docstring says."""

    def __init__(self, cursor: Any, reader: Any, table: str) -> None:
        self._cursor = cursor  # held: a cursor that is collected closes its reader
        self._reader = reader
        self._table = table
        self.schema: pa.Schema = reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        with _translated(self._table):
            try:
                yield from self._reader
            finally:
                self.close()

    def close(self) -> None:
        with suppress(Exception):
            self._reader.close()
        with suppress(Exception):
            self._cursor.close()


def _libpq_uri(url: sa.URL, *, application_name: str, timeout: str) -> str:
    """The source URL as libpq reads it (query parameters of the URL are libpq's, as psycopg
    passes them on), with the source session's read-only default, application name and
    statement timeout (`timeout` as `current_setting` shows it), and a connect timeout."""
    query = dict(url.query)
    options = query.get("options", "")
    options = options if isinstance(options, str) else " ".join(options)
    options += " -c default_transaction_read_only=on"
    if _SETTING.fullmatch(timeout):
        options += f" -c statement_timeout={timeout}"
    query["options"] = options.strip()
    query["application_name"] = application_name
    query.setdefault("connect_timeout", str(CONNECT_TIMEOUT_SECONDS))
    query["client_encoding"] = "utf8"
    # Written out by hand, every part percent-encoded: SQLAlchemy's rendering leaves a space in
    # a password as it is and writes one in a parameter as "+", both of which libpq misreads.
    credentials = quote(url.username or "", safe="")
    if url.password is not None:
        credentials += ":" + quote(str(url.password), safe="")
    host = url.host or ""
    host = f"[{host}]" if ":" in host else quote(host, safe="")
    port = f":{url.port}" if url.port else ""
    base = f"postgresql://{credentials}{'@' if credentials else ''}{host}{port}/"
    base += quote(url.database or "", safe="")
    pairs = [
        (key, value)
        for key, values in query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    return base + "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Raise an ADBC error as the `ExtractError` the engine would raise for it: transient for
    the SQLSTATEs worth a retry and for failures before the server answered, else terminal.
    The message names `what` and the SQLSTATE, never the server's text (it may quote values)."""
    from adbc_driver_manager import Error, OperationalError

    try:
        yield
    except Error as exc:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate and sqlstate != "00000":
            code, transient = sqlstate, sqlstate.startswith(TRANSIENT_SQLSTATE_PREFIXES)
        else:  # no answer from the server: refused, reset, timed out
            code, transient = type(exc).__name__, isinstance(exc, OperationalError)
        message = f"reading {what} into Arrow failed ({code})"
        if transient:
            raise TransientExtractError(f"{message}; it may be retried") from None
        raise TerminalExtractError(message) from None
    except pa.ArrowException as exc:
        # The stream broke off mid-read (the driver reports through Arrow's reader, without a
        # SQLSTATE): a read worth a retry, as a connection lost through psycopg is.
        raise TransientExtractError(
            f"reading {what} into Arrow broke off ({type(exc).__name__}); it may be retried"
        ) from None
