"""Errors raised while reading the source, split the way a scheduler needs them, and the one place
that decides which database errors are worth a retry (the restore's writes use it too).

Messages name the learner id, table or database kind, never a row's content or a connection URL
(it may hold a password): they end up in logs and orchestration metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa


class ExtractError(Exception):
    """Base class of every error the extract stage raises."""


class TransientExtractError(ExtractError):
    """The source could not be reached or broke off; the same read may succeed if retried."""


class TerminalExtractError(ExtractError):
    """Retrying will not help: the source is missing, misconfigured or lacks the tables."""


class LearnerNotFound(TerminalExtractError):
    """The id names no user, or a user who is not a LEARNER."""

    def __init__(self, learner_id: int) -> None:
        super().__init__(f"learner {learner_id} not found: no LEARNER user has this id")
        self.learner_id = learner_id


TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "57014")
"""PostgreSQL SQLSTATEs after which the same statement may well succeed: connection exceptions
(08), transaction rollbacks such as serialization failures and deadlocks (40), insufficient
resources such as too many connections (53), the server shutting down or starting (57P), and a
statement cancelled by `statement_timeout` or an operator (57014). Everything else (a missing
table, a permission, a constraint, bad data) is terminal."""

TRANSIENT_SQLITE_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_PROTOCOL")
"""SQLite result codes (with their extended codes) after which the same statement may succeed:
another connection holds a lock, or an I/O error of the file system. Everything else (a read-only
or corrupt file, a missing table, a constraint) is terminal."""


@dataclass(frozen=True, slots=True)
class DatabaseFault:
    """What a database error says, without its message (PostgreSQL quotes offending values).

    `code` is the SQLSTATE, the SQLite error name, or else the driver exception's class name;
    `answered` is False when the driver failed before the server answered (refused, reset, timed
    out); `transient` whether the same statement may succeed if retried.
    """

    code: str
    answered: bool
    transient: bool


def classify_database_error(exc: sa.exc.DBAPIError) -> DatabaseFault:
    """The one transient/terminal decision for DBAPI errors, reading or writing, any backend."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    sqlite_name = getattr(exc.orig, "sqlite_errorname", None)
    code = sqlstate or sqlite_name or type(exc.orig).__name__
    if sqlstate:
        transient = sqlstate.startswith(TRANSIENT_SQLSTATE_PREFIXES)
    elif sqlite_name:
        transient = sqlite_name.startswith(TRANSIENT_SQLITE_ERRORS)
    else:
        # No code at all: the driver failed before the server answered (refused, reset, timeout).
        transient = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    answered = bool(sqlstate or sqlite_name)
    return DatabaseFault(code, answered, transient or exc.connection_invalidated)
