"""Checking a source before anything is written: reachable, and holding the columns we export.

`check_source` is what an operator wants from a run that cannot work: one line, in well under a
second when the database answers, saying why — the host and port refused or timed out, the
password was refused, the database does not exist, or a column the documents need has gone or
changed type since the exporter was written (source schema drift). Added tables and columns are
fine: the exporter ignores what it does not read.

Messages name hosts, ports, database and column names, never a password or a row's content.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from extract import tables
from extract.engine import SourceTimeouts, create_source_engine, normalize_url
from extract.errors import ExtractError, TerminalExtractError, TransientExtractError

CONNECT_SECONDS = 5
"""How long the check waits for PostgreSQL to accept a connection (a database on the network
answers in milliseconds; an unreachable host would otherwise hold the run for minutes)."""

UNREAD_COLUMNS = {("users", "password")}
"""Declared (the restore writes it) but never read by an export: its absence is no drift."""

_FAMILIES: dict[type[sa.types.TypeEngine[Any]], str] = {
    sa.Integer: "integer",
    sa.String: "text",
    sa.Text: "text",
    sa.Enum: "text",
    sa.DateTime: "timestamp",
    sa.JSON: "json",
    sa.Uuid: "uuid",
    sa.Boolean: "boolean",
}
"""SQL types by the family the exporter reads them as; a column of another family is drift."""

_ACCEPTED = {
    "text": {"text"},
    "integer": {"integer"},
    "timestamp": {"timestamp", "text"},  # SQLite has no date type: timestamps are text there
    "json": {"json", "text"},  # SQLite stores JSON as TEXT; some PostgreSQL schemas do too
    "uuid": {"uuid", "text"},
    "boolean": {"boolean", "integer"},
}
"""For each family the exporter expects, the families of source columns it reads correctly."""


def check_source(url: str | URL) -> None:
    """Connect to the source at `url` and check that every column the export reads is there with
    a type it can read. Raises TerminalExtractError (or TransientExtractError when the server
    may come back: refused, timed out, starting up) with a one-line reason."""
    parsed = normalize_url(url)
    engine = create_source_engine(
        parsed,
        timeouts=SourceTimeouts(pool=None, connect=CONNECT_SECONDS, statement=None),
        poolclass=sa.pool.NullPool,  # one connection, closed after the check
    )
    try:
        with engine.connect() as conn:
            drift = schema_drift(conn)
    except sa.exc.DBAPIError as exc:
        raise connection_error(parsed, exc) from None
    finally:
        engine.dispose()
    if drift:
        raise TerminalExtractError(
            f"the source database does not have what the export reads: {'; '.join(drift)}. "
            "Nothing was written"
        )


def schema_drift(conn: Connection) -> list[str]:
    """What differs between the source's tables and the columns the export reads, one phrase per
    missing table or column and per column of another type; [] when nothing does."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    found = []
    for table in (tables.users, tables.learner_profiles, tables.lessons, tables.achievements):
        if table.name not in present:
            found.append(f"table {table.name} is missing")
            continue
        columns = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if (table.name, column.name) in UNREAD_COLUMNS:
                continue
            if column.name not in columns:
                found.append(f"column {table.name}.{column.name} is missing")
                continue
            wanted = _family(column.type.dialect_impl(conn.dialect))
            have = _family(columns[column.name])
            if have not in _ACCEPTED.get(wanted, {wanted}):
                found.append(
                    f"column {table.name}.{column.name} is {have}, the export reads {wanted}"
                )
    return found


def _family(sql_type: sa.types.TypeEngine[Any]) -> str:
    for kind, family in _FAMILIES.items():
        if isinstance(sql_type, kind):
            return family
    if isinstance(sql_type, sa.types.NullType):  # SQLite: a column declared without a type
        return "text"
    return type(sql_type).__name__.lower()


def connection_error(url: URL, exc: sa.exc.DBAPIError) -> ExtractError:
    """The one-line reason a connection to `url` failed: where, and why, never the password."""
    where = (
        f"the sqlite source {url.database}"
        if url.get_backend_name() == "sqlite"
        else f"the postgresql source at {url.host or 'localhost'}:{url.port or 5432}"
    )
    sqlstate = getattr(exc.orig, "sqlstate", None)
    text = str(exc.orig).lower()
    if (
        sqlstate in {"28P01", "28000"}
        or "password authentication failed" in text
        or ("role" in text and "does not exist" in text)
    ):
        return TerminalExtractError(
            f"cannot connect to {where}: authentication failed for user {url.username!r}"
        )
    if sqlstate == "3D000" or ("database" in text and "does not exist" in text):
        return TerminalExtractError(
            f"cannot connect to {where}: database {url.database!r} does not exist"
        )
    for phrase, reason in (
        ("connection refused", "connection refused (is the server running there?)"),
        ("timeout expired", f"no answer within {CONNECT_SECONDS} s"),
        ("could not translate host name", "unknown host name"),
        ("name or service not known", "unknown host name"),
        ("no route to host", "no route to host"),
        ("the database system is starting up", "the server is starting up"),
        ("the database system is shutting down", "the server is shutting down"),
    ):
        if phrase in text:
            return TransientExtractError(f"cannot connect to {where}: {reason}")
    code = sqlstate or getattr(exc.orig, "sqlite_errorname", None) or type(exc.orig).__name__
    return TerminalExtractError(f"cannot read {where} ({code})")
