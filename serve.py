"""The HTTP export: `GET /api/export?learnerId={id}`, a drop-in for the platform's own endpoint.

Contract §3 is the specification.

This module does HTTP and authentication only. The rows come from `extract` (one snapshot per
request), the document from `transform.document.build_document` and its bytes from
`transform.encoding.encode_document`: the very builder and encoder the CLI uses, so an HTTP export
and a file export of the same learner differ only in `exportDate` and `exportedBy`.

Checks run in the contract's order, each answered `{"error": ...}`:
401 (no or bad token, unknown user) → 403 (not PARENT/ADMIN) → 429 (over the per-user limit,
shared by all workers) → 400 (learnerId) → 403 (a parent asking for anyone but their own child,
existing or not) → 404 (an admin asking for an id that is no learner). Database trouble is 503
with Retry-After, never 500.

Every request that reaches the application, except the two informational routes (/healthz,
/openapi.json), leaves exactly one line in the audit log with its final status (`AuditTrail`).
A served document's line is written before its first byte, with the document's sha256 and size:
when it cannot be written, the document is not served (503). A transfer that breaks off later
adds a note (`"complete": false`) to that line. A failure after the first byte aborts the
connection, so a truncated body never ends like a complete one.

Memory is bounded per worker: a document is built and encoded while its snapshot's connection is
held (so the pool bounds how many are being made at once), and its bytes are then held against
the worker's `ByteBudget` until the transfer is over; an export that does not fit is 503.

Run it with `python serve.py` or `learner-export serve` (options: `learner_export.serving`);
`uvicorn --factory serve:create_app_from_environment` works too.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import traceback
import warnings
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from jwt.warnings import InsecureKeyLengthWarning
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from extract.engine import (
    SourceTimeouts,
    async_snapshot,
    async_source_connection,
    create_async_source_engine,
    create_source_engine,
    is_postgresql,
    snapshot,
    source_connection,
)
from extract.errors import ExtractError
from extract.reader import account, read_accounts, read_family, read_users
from extract.records import Account, LearnerRows
from extract.request_read import RequestRows, read_request, read_request_async
from learner_export.arguments import UserError
from learner_export.bundle import Bundle, family_bundle, page_bytes
from learner_export.byte_budget import ByteBudget
from learner_export.health import HealthCheck
from learner_export.http_server import ServerConfig
from learner_export.malloc_arenas import limit_malloc_arenas
from learner_export.notice_config import operator_notice
from learner_export.ratelimit import RateLimitBusy, RateLimiter, RateLimitUnavailable
from learner_export.serving import DESCRIPTION, add_arguments, prepare
from learner_export.settings import Settings, get_settings
from learner_export.tokens import MAX_USER_ID, InvalidToken, VerifiedTokens
from load.audit import AuditRecord, append_audit, ensure_audit_log
from load.errors import LoadError
from load.names import document_filename, family_filename, page_filename
from load.zip_stream import iter_zip
from transform.document import LESSON_CAP, BuiltDocument, Document, build_document
from transform.encoding import encode_document
from transform.notice import OperatorNotice
from transform.page_html import CSP
from transform.page_html import MEDIA_TYPE as PAGE_MEDIA_TYPE
from transform.schema import document_schema

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("learner_export.serve")

EXPORT_PATH = "/api/export"
HEALTH_PATH = "/healthz"
UNAUDITED_PATHS = frozenset({HEALTH_PATH, "/openapi.json"})
"""Routes that serve no one's data and are probed often: no audit line."""
TOKEN_COOKIE = "token"  # noqa: S105 (a cookie's name, not a secret)
EXPORTING_ROLES = frozenset({"PARENT", "ADMIN"})
MAX_LEARNER_ID = MAX_USER_ID
"""The database's id range: PostgreSQL `serial` (integer) ids end at 2**31 - 1."""

STREAM_CHUNK_BYTES = 256 * 1024
"""A document's bytes go to the server in pieces of this size (its buffers stay small)."""
GZIP_LEVEL = 1
"""Level 1 compresses the documents' text about 4:1 at a fraction of level 6's cost."""
UNAVAILABLE_RETRY_SECONDS = 5
INLINE_LESSONS = 64
"""On PostgreSQL, documents are built and encoded on the event loop (`Exporter.decide_async`): the
JSON of a typical learner in about 0.3 ms, of the 1,000-lesson one in about 10 ms. A readable page
of more than this many lessons is rendered in a worker thread instead (1,000 lessons: ~160 ms)."""
PING_AFTER_IDLE_SECONDS = 1.0
"""A pooled source connection idle for longer is tested before an export uses it, so a restarted
database costs no request; one used within the last second is not, which saves a round trip
per export under load (`extract.engine.create_source_engine`)."""
MIN_SECRET_BYTES = 32
STARTUP_FAILURE = 3
"""uvicorn's exit status when the application does not start."""

# Error messages: fixed texts that never echo the request.
UNAUTHORIZED = "Unauthorized"
FORBIDDEN = "Forbidden"
LEARNER_ID_REQUIRED = "learnerId is required"
LEARNER_ID_REPEATED = "learnerId must be given only once"
LEARNER_ID_MALFORMED = (
    "learnerId must be a positive whole number in plain ASCII digits, without sign, spaces or "
    "leading zeros"
)
LEARNER_ID_OUT_OF_RANGE = f"learnerId is out of range (1 to {MAX_LEARNER_ID})"
LEARNER_NOT_FOUND = "Learner not found"
TOO_MANY_REQUESTS = "Too many requests"
UNAVAILABLE = "Service unavailable"
INTERNAL_ERROR = "Internal server error"

_CANONICAL_ID = re.compile(r"[1-9][0-9]*")


# --- the request's inputs -------------------------------------------------------------------


def bearer_token(request: Request) -> str | None:
    """The token of the request, or None when it brings none or brings it malformed.

    An `Authorization` header, if present, decides alone: it must be exactly one header
    `Bearer <token>` (scheme case-insensitive). Without one, the `token` cookie is used (the web
    client opens the export in a new tab and cannot set headers). Never the query string: URLs
    end up in logs and browser history.
    """
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        return None
    if headers:
        scheme, _, credentials = headers[0].strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials or " " in credentials:
            return None
        return credentials
    return request.cookies.get(TOKEN_COOKIE) or None


@dataclass(frozen=True, slots=True)
class LearnerParam:
    """The `learnerId` parameter: `value` when valid, else `problem`, the 400 message."""

    value: int | None
    problem: str | None


def learner_param(values: Sequence[str]) -> LearnerParam:
    """Parse every `learnerId` value of the query string (contract §3).

    Valid: given once, a canonical positive decimal (ASCII digits, no sign, space or leading
    zero) no larger than MAX_LEARNER_ID. Missing or empty is `learnerId is required`.
    """
    if len(values) > 1:
        return LearnerParam(None, LEARNER_ID_REPEATED)
    if not values or values[0] == "":
        return LearnerParam(None, LEARNER_ID_REQUIRED)
    text = values[0]
    if not _CANONICAL_ID.fullmatch(text):
        return LearnerParam(None, LEARNER_ID_MALFORMED)
    if len(text) > len(str(MAX_LEARNER_ID)) or int(text) > MAX_LEARNER_ID:
        return LearnerParam(None, LEARNER_ID_OUT_OF_RANGE)
    return LearnerParam(int(text), None)


# --- deciding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer: a document (status 200) or an error with its status and message."""

    status: int
    user_id: int | None
    learner_id: int | None
    error: str | None = None
    retry_after: int | None = None
    encoded: EncodedDocument | None = None


Render = Callable[[Document], bytes]
"""What a built document is sent as: `encode_document` (the JSON) or a page renderer."""


@dataclass(frozen=True, slots=True)
class EncodedDocument:
    """A document's bytes, with what its audit line says of them before the first is sent:
    their sha256 (hex) and the document's lesson counts."""

    body: bytes
    sha256: str
    lessons_exported: int
    lessons_total: int

    @classmethod
    def of(cls, built: BuiltDocument, render: Render = encode_document) -> EncodedDocument:
        """Encode `built` once (`render`: the JSON encoder, or the readable page's renderer);
        the built document itself is not kept (its bytes take less memory than its objects, and
        are what is hashed and sent)."""
        body = render(built.document)
        return cls(body, hashlib.sha256(body).hexdigest(), built.lessons_exported,
                   built.lessons_total)  # fmt: skip


class Exporter:
    """The per-process state of the endpoint: settings, source engine, limiter, verified
    tokens, the budget of document bytes in flight."""

    def __init__(self, settings: Settings, secret: str) -> None:
        self.settings = settings
        self.secret = secret
        self.tokens = VerifiedTokens(secret)
        self.budget = ByteBudget(settings.http_bytes_in_flight)
        ensure_audit_log(settings.audit_log_path)  # no export that cannot be recorded
        timeouts = SourceTimeouts(
            pool=settings.database_pool_timeout,
            connect=settings.database_connect_timeout,
            statement=settings.database_statement_timeout,
        )
        pool: dict[str, Any] = {
            "ping_after_idle": PING_AFTER_IDLE_SECONDS,
            # No overflow: the pool is the bound on documents being made at once (README).
            "pool_size": settings.database_pool_size,
            "max_overflow": 0,
        }
        # `engine` reads in worker threads: every request on SQLite, the family downloads on
        # PostgreSQL. On PostgreSQL the single-learner routes read through `async_engine`, and
        # wait for the database on the event loop instead (`decide_async`). A pool opens
        # connections only as they are first needed.
        self.engine: Engine = create_source_engine(settings.source_url, timeouts=timeouts, **pool)
        self.async_engine: AsyncEngine | None = None
        if is_postgresql(settings.source_url):
            self.async_engine = create_async_source_engine(
                settings.source_url, timeouts=timeouts, **pool
            )
        self.limiter = RateLimiter(settings.rate_limit_path, settings.exports_per_minute)
        self.health = HealthCheck(settings.source_url)

    async def close(self) -> None:
        """Release the source connections, the health check's and the rate limit's store."""
        self.engine.dispose()
        if self.async_engine is not None:
            await self.async_engine.dispose()
        self.health.close()
        self.limiter.close()

    def decide(
        self,
        user_id: int,
        param: LearnerParam,
        export_date: datetime,
        render: Render = encode_document,
    ) -> Outcome:
        """Authorize a request whose token named `user_id` and, if allowed, build its document
        and render it (the JSON encoder, or the readable page's renderer).

        Blocking (database reads, building, encoding): run it in a worker thread. One snapshot
        covers the account checks and the learner's rows, so what was authorized is what is
        exported (`_export`). While this worker's last refusal of the requester by the rate
        limit lasts, only the accounts are read: a client over its limit costs no read of a
        learner's rows (after the first refusal by each worker).
        """
        learner_id = param.value
        if learner_id is not None and self.limiter.has_room(user_id):
            return self._export(user_id, param, export_date, render, admit=True)
        with snapshot(self.engine) as conn:
            users = read_users(conn, _asked(user_id, param))
        refusal = self._refusal(_accounts(users), user_id, param)
        if refusal is not None:
            return refusal
        # Admitted after all: `has_room` is a hint, and the shared window had room.
        return self._export(user_id, param, export_date, render, admit=False)

    async def decide_async(
        self,
        user_id: int,
        param: LearnerParam,
        export_date: datetime,
        render: Render = encode_document,
    ) -> Outcome:
        """`decide` on PostgreSQL, on the event loop: the same reads, checks and answers.

        The database is waited for without a thread; the thread hop and the wake-ups it costs
        were a third of a typical export's time. The document is built and encoded on the loop
        too (handing the 1,000-lesson learner's to a thread, where it held the GIL anyway, cost
        more than it spared); only a readable page of more than INLINE_LESSONS lessons is
        rendered in a worker thread, so that the loop is never held for long.
        """
        assert self.async_engine is not None
        learner_id = param.value
        if learner_id is not None and self.limiter.has_room(user_id):
            return await self._export_async(user_id, param, export_date, render, admit=True)
        async with async_snapshot(self.async_engine) as conn:
            users = await conn.run_sync(read_users, _asked(user_id, param))
        refusal = await self._refusal_async(_accounts(users), user_id, param)
        if refusal is not None:
            return refusal
        return await self._export_async(user_id, param, export_date, render, admit=False)

    def _export(
        self,
        user_id: int,
        param: LearnerParam,
        export_date: datetime,
        render: Render,
        *,
        admit: bool,
    ) -> Outcome:
        """Read the accounts and the learner's rows in one snapshot (`read_request`: on
        PostgreSQL one round trip), decide, and build: the answer to a request for a valid id.
        `admit`: count it in the rate limit (False when it was counted already).

        The learner's rows are guarded in SQL by the rule `_refusal` applies here, which alone
        decides: what it refuses is refused whatever the database found, and a database that
        refuses what it allows is a fault (500), never an export. The document is built
        and encoded before the source connection goes back to the pool, so the pool's size
        (`database_pool_size`, no overflow) bounds how many documents a worker is making at
        once (README, "Memory").
        """
        assert param.value is not None
        with source_connection(self.engine) as conn:
            read = read_request(conn, user_id, param.value, lesson_limit=LESSON_CAP)
            refusal = self._refusal(_accounts(read.users), user_id, param, admit=admit)
            if refusal is not None:
                return refusal
            encoded = _encoded(_allowed(read), user_id, export_date, render)
        return Outcome(200, user_id, param.value, encoded=encoded)

    async def _export_async(
        self,
        user_id: int,
        param: LearnerParam,
        export_date: datetime,
        render: Render,
        *,
        admit: bool,
    ) -> Outcome:
        """`_export` on the event loop (`decide_async`): the document is made before the
        connection goes back to the pool, as there."""
        assert param.value is not None and self.async_engine is not None
        async with async_source_connection(self.async_engine) as conn:
            read = await read_request_async(conn, user_id, param.value, lesson_limit=LESSON_CAP)
            refusal = await self._refusal_async(_accounts(read.users), user_id, param, admit=admit)
            if refusal is not None:
                return refusal
            learner = _allowed(read)
            if render is encode_document or len(learner.lessons) <= INLINE_LESSONS:
                encoded = _encoded(learner, user_id, export_date, render)
            else:
                encoded = await run_in_threadpool(_encoded, learner, user_id, export_date, render)
        return Outcome(200, user_id, param.value, encoded=encoded)

    def _refusal(
        self,
        accounts: dict[int, Account],
        user_id: int,
        param: LearnerParam,
        *,
        admit: bool = True,
        wait: bool = True,
    ) -> Outcome | None:
        """The answer to a request this server does not serve, or None to serve it. `admit`:
        count the request in the rate limit (after the role, before the rest). `wait` False:
        raise `RateLimitBusy` rather than wait for the rate limit's store (`_refusal_async`)."""
        requester = accounts.get(user_id)
        if requester is None:  # a valid token for a user who no longer exists
            return Outcome(401, None, param.value, UNAUTHORIZED)
        if requester.role not in EXPORTING_ROLES:
            return Outcome(403, user_id, param.value, FORBIDDEN)
        # After the role (a LEARNER always hears 403), before the rest: every request of a PARENT
        # or ADMIN counts, so probing ids costs as much as exporting.
        if admit:
            try:
                retry_after = self.limiter.admit(user_id, wait=wait)
            except RateLimitUnavailable as exc:
                log.error("rate limit: %s", exc)
                return _unavailable(user_id, param.value)
            if retry_after is not None:
                return Outcome(
                    429, user_id, param.value, TOO_MANY_REQUESTS, retry_after=retry_after
                )
        if param.value is None:
            return Outcome(400, user_id, None, param.problem)
        target = accounts.get(param.value)
        learner = target if target is not None and target.role == "LEARNER" else None
        if requester.role == "PARENT" and (learner is None or learner.parent_id != user_id):
            return Outcome(403, user_id, param.value, FORBIDDEN)  # existence never leaks
        if learner is None:
            return Outcome(404, user_id, param.value, LEARNER_NOT_FOUND)
        return None

    async def _refusal_async(
        self, accounts: dict[int, Account], user_id: int, param: LearnerParam, *, admit: bool = True
    ) -> Outcome | None:
        """`_refusal` on the event loop. The rate limit's decision waits for its store while
        another worker writes it (SQLite sleeps meanwhile): then the decision is made again in a
        worker thread, so that the loop never sleeps there."""
        try:
            return self._refusal(accounts, user_id, param, admit=admit, wait=False)
        except RateLimitBusy:
            return await run_in_threadpool(self._refusal, accounts, user_id, param, admit=admit)

    def audit(self, record: AuditRecord) -> bool:
        """Append `record` to the audit log; False when it could not be written (logged)."""
        return write_audit(self.settings.audit_log_path, record)


def _asked(user_id: int, param: LearnerParam) -> set[int]:
    """The accounts a request names: the requester's, and the learner's if given."""
    return {user_id} if param.value is None else {user_id, param.value}


def _allowed(read: RequestRows) -> LearnerRows:
    """The learner's rows of a request this server allows: the database must have allowed it
    too (`read_request`'s guard), or the server has a fault."""
    if read.learner is None:
        raise VerdictMismatch("the database refused an export this server allows")
    return read.learner


def _encoded(
    learner: LearnerRows, user_id: int, export_date: datetime, render: Render
) -> EncodedDocument:
    built = build_document(learner, export_date=export_date, exported_by=user_id)
    return EncodedDocument.of(built, render)


class VerdictMismatch(Exception):
    """The database's verdict on a request (`queries.export_allowed`) differs from this server's:
    a fault of ours, answered as 500 and never as an export."""


def _accounts(users: dict[int, Any]) -> dict[int, Account]:
    return {user_id: account(row) for user_id, row in users.items()}


def _unavailable(user_id: int | None, learner_id: int | None) -> Outcome:
    return Outcome(503, user_id, learner_id, UNAVAILABLE, retry_after=UNAVAILABLE_RETRY_SECONDS)


# --- answering --------------------------------------------------------------------------------


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """`{"error": message}` as application/json, never cached."""
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def accepts_gzip(accept_encoding: str) -> bool:
    """True when the Accept-Encoding header lists gzip (or `*`) with a non-zero quality."""
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() not in {"gzip", "x-gzip", "*"}:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


@dataclass
class Transfer:
    """How far a document's bytes got: how many of them (before any content encoding) were
    handed to the server, and whether the last of them was."""

    size: int = 0
    complete: bool = False


async def streamed_body(body: bytes, *, gzip: bool, transfer: Transfer) -> AsyncIterator[bytes]:
    """`body` (gzip-encoded if asked) in pieces of STREAM_CHUNK_BYTES; `transfer` follows their
    progress."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if gzip else None
    view = memoryview(body)
    for start in range(0, len(body), STREAM_CHUNK_BYTES):
        chunk = bytes(view[start : start + STREAM_CHUNK_BYTES])
        transfer.size += len(chunk)
        yield chunk if compressor is None else compressor.compress(chunk)
    if compressor is not None:
        yield compressor.flush()
    transfer.complete = True


class AuditedStreamingResponse(StreamingResponse):
    """A StreamingResponse that calls `on_close` exactly once when it is over, whether the body
    was sent whole, broke off mid-way, or never started (the client left first).

    An exception after the first byte propagates: the server then closes the connection without
    the chunked body's last chunk, so the client sees a broken transfer, never a complete one.
    """

    def __init__(
        self, content: AsyncIterator[bytes], *, on_close: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class AuditedResponse(Response):
    """A document that fits in one piece (the typical one), sent as a plain response: its
    headers, then its body in one message (with Content-Length, not chunked), without the task
    a stream needs to watch for the client leaving. `transfer` counts the document's `size`
    (before any content encoding) and is complete once that message is handed to the server;
    `on_close` runs exactly once when it is over, as for AuditedStreamingResponse."""

    def __init__(
        self,
        body: bytes,
        *,
        size: int,
        transfer: Transfer,
        on_close: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(body, **kwargs)
        self._size = size
        self._transfer = transfer
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
            self._transfer.size, self._transfer.complete = self._size, True
        finally:
            self._on_close()


def document_response(
    exporter: Exporter, outcome: Outcome, request: Request, when: datetime
) -> Response:
    """The 200 answer: the document's bytes with the contract's headers, once they have a
    place in the worker's byte budget and their audit line (sha256 and size) has been written;
    503 when either cannot be had. A transfer that breaks off adds a `"complete": false` note
    with the bytes that went out. The budget's reservation is released when the transfer is
    over, however it ends."""
    cleared = _clear_for_sending(exporter, outcome, when)
    if isinstance(cleared, Response):
        return cleared
    encoded, transfer, transfer_over = cleared
    assert outcome.learner_id is not None
    size = len(encoded.body)
    gzip = accepts_gzip(request.headers.get("accept-encoding", ""))
    filename = document_filename(outcome.learner_id, when)
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
        "Vary": "Accept-Encoding",
    }
    if gzip:
        headers["Content-Encoding"] = "gzip"
    if size <= STREAM_CHUNK_BYTES:
        body = encoded.body if not gzip else _gzipped(encoded.body)
        return AuditedResponse(
            body, size=size, transfer=transfer, on_close=transfer_over,
            media_type="application/json", headers=headers,
        )  # fmt: skip
    return AuditedStreamingResponse(
        streamed_body(encoded.body, gzip=gzip, transfer=transfer),
        on_close=transfer_over,
        media_type="application/json",
        headers=headers,
    )


def _clear_for_sending(
    exporter: Exporter, outcome: Outcome, when: datetime
) -> tuple[EncodedDocument, Transfer, Callable[[], None]] | Response:
    """What a 200 needs before its first byte, the same for a document and a page: a place for its
    bytes in the worker's byte budget (memory stays bounded: 503, not a queue) and its audit line
    with their sha256 and size (fail closed: nothing is served that is not on record). Returns
    the 503 when either cannot be had; else the bytes, the transfer to count, and the function
    to run once the transfer is over, however it ends (it releases the budget and notes a
    transfer that broke off)."""
    encoded = outcome.encoded
    assert encoded is not None and outcome.learner_id is not None
    size = len(encoded.body)
    if not exporter.budget.reserve(size):
        log.warning("export refused: %d bytes already in flight", exporter.budget.held)
        return _answer_error(_unavailable(outcome.user_id, outcome.learner_id))
    served = AuditRecord(
        at=when, via="http", user_id=outcome.user_id, learner_id=outcome.learner_id, status=200,
        sha256=encoded.sha256, size=size,
        lessons_exported=encoded.lessons_exported, lessons_total=encoded.lessons_total,
    )  # fmt: skip
    if not exporter.audit(served):
        exporter.budget.release(size)
        return _answer_error(_unavailable(outcome.user_id, outcome.learner_id))
    transfer = Transfer()

    def transfer_over() -> None:
        exporter.budget.release(size)
        if not transfer.complete:
            exporter.audit(
                AuditRecord(
                    at=datetime.now(UTC), via="http", user_id=outcome.user_id,
                    learner_id=outcome.learner_id, status=200, sha256=encoded.sha256,
                    size=transfer.size, complete=False,
                )
            )  # fmt: skip

    return encoded, transfer, transfer_over


def _gzipped(body: bytes) -> bytes:
    """`body` gzip-encoded, as `streamed_body` encodes it."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


def _answer_error(outcome: Outcome) -> Response:
    """The JSON error answer of a refused or failed request."""
    headers = {}
    if outcome.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if outcome.retry_after is not None:
        headers["Retry-After"] = str(outcome.retry_after)
    assert outcome.error is not None
    return error_response(outcome.status, outcome.error, headers)


# --- the application --------------------------------------------------------------------------

_ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {"error": {"type": "string"}},
}


def _retry_after(description: str) -> dict[str, Any]:
    """The OpenAPI description of a `Retry-After` response header (whole seconds)."""
    return {
        "Retry-After": {"description": description, "schema": {"type": "integer", "minimum": 1}}
    }


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        **extra,
    }


_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The learner's document (contract §2): up to 256 KiB in one piece with "
        "Content-Length, bigger ones streamed (chunked); gzip-encoded when the client accepts it.",
        "headers": {
            "Content-Disposition": {
                "description": 'attachment; filename="learner-data-{learnerId}-{YYYY-MM-DD}.json" '
                "(UTC date of the export)",
                "schema": {"type": "string"},
            },
            "Cache-Control": {"description": "no-store", "schema": {"type": "string"}},
        },
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LearnerDocument"}}
        },
    },
    400: _error(
        "learnerId missing or empty (`learnerId is required`), not a plain positive decimal, out "
        "of the id range, or given more than once."
    ),
    401: _error(
        "No token, a malformed Authorization header, a bad signature, an algorithm other than "
        "HS256, an expired token, claims of the wrong type, or a user who does not exist.",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    403: _error(
        "The user is not a PARENT or an ADMIN, or is a PARENT asking for someone who is not "
        "their own child (whether or not that id exists)."
    ),
    404: _error("An ADMIN asked for an id that is not a LEARNER user (`Learner not found`)."),
    429: _error(
        "The user asked for more exports than the per-minute limit allows.",
        headers=_retry_after("Seconds until a request will be admitted."),
    ),
    503: _error(
        "Temporarily unavailable, worth a retry after Retry-After: the source database cannot be "
        "read right now (unreachable, timed out, no free connection), the export's audit line or "
        "the rate limit's store cannot be written (nothing is served that is not on record), or "
        "this worker already holds its budget of document bytes in flight "
        "(LEARNER_EXPORT_HTTP_BYTES_IN_FLIGHT). Past the connection cap, the HTTP server itself "
        "answers 503 in text/plain before the application.",
        headers=_retry_after("Seconds after which a retry may succeed."),
    ),
}

_LEARNER_ID_PARAMETER = {
    "name": "learnerId",
    "in": "query",
    "required": True,
    "description": "Id of the learner to export: a positive decimal integer, given once.",
    "schema": {"type": "string", "pattern": f"^[1-9][0-9]{{0,{len(str(MAX_LEARNER_ID)) - 1}}}$"},
    "example": "3",
}


def _document_components() -> dict[str, Any]:
    """The document's JSON Schema as OpenAPI components: `LearnerDocument` plus its `$defs`
    (renamed `LearnerDocument_<name>`, references rewritten to match)."""
    schema = dict(document_schema())
    definitions = schema.pop("$defs", {})
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    text = orjson.dumps(
        {"LearnerDocument": schema, **{f"LearnerDocument_{k}": v for k, v in definitions.items()}}
    )
    text = text.replace(b'"#/$defs/', b'"#/components/schemas/LearnerDocument_')
    components: dict[str, Any] = orjson.loads(text)
    return components


def create_app(settings: Settings, *, secret: str | None = None) -> FastAPI:
    """The application for `settings`; `secret` overrides `settings.jwt_secret` (demo mode).

    Raises `ConfigurationError` when there is no secret: the server never runs without one.
    """
    key = secret or (settings.jwt_secret.get_secret_value() if settings.jwt_secret else "")
    if not key.strip():
        raise ConfigurationError(
            "JWT_SECRET is not set: set it to the platform's token secret, or start the server "
            "with --demo to try it on the demo database"
        )
    if len(key.encode()) < MIN_SECRET_BYTES:
        # The platform's secret is what it is; say so once instead of PyJWT on every request.
        log.warning("JWT_SECRET is shorter than %d bytes", MIN_SECRET_BYTES)
        warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_malloc_arenas()  # before the worker threads exist: memory stays bounded (README)
        exporter = Exporter(settings, key)
        app.state.exporter = exporter
        try:
            yield
        finally:
            await exporter.close()

    app = FastAPI(
        title="learner-export",
        summary="Export a learner's data: the platform's GET /api/export, on demand.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry, which starts once any provider is configured in the
        # process (or FASTAPI_OTEL_AUTO_CONFIGURE=true): its spans carry request URLs (learner
        # ids) and its logs unhandled exceptions' messages and stack traces, which may quote a
        # child's data. Off, as the access log is; the audit log is the record of exports.
        # (Checking whether it is on also cost every request ~40 us.)
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    # No redirect from /api/export/ to /api/export: Starlette's would echo the Host header into
    # Location. Any other path is a JSON 404.
    app.router.redirect_slashes = False
    app.add_middleware(AuditMiddleware, log_path=settings.audit_log_path)
    _install_error_handlers(app)
    _add_routes(app)
    app.state.notice = _operator_notice(settings)
    _add_readable_routes(app)
    _document_openapi(app)
    return app


class ConfigurationError(Exception):
    """The server is not configured to run safely; the message says what to set."""


def _exporter(request: Request) -> Exporter:
    exporter: Exporter = request.app.state.exporter
    return exporter


_SECURITY_SCHEMES = {
    "HTTPBearer": {
        "type": "http",
        "description": "The platform's HS256 token: {userId: '<id>', role, exp}.",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    },
    "APIKeyCookie": {
        "type": "apiKey",
        "description": "The same token in the `token` cookie, for the web client's download tab.",
        "in": "cookie",
        "name": TOKEN_COOKIE,
    },
}
"""The two ways of sending the token (`bearer_token` reads them), for OpenAPI. Declared here,
not as FastAPI security dependencies: those would run on every request only to be ignored."""


def _add_routes(app: FastAPI) -> None:
    @app.get(
        EXPORT_PATH,
        summary="Export one learner's data",
        description="PARENT: their own children only. ADMIN: any learner. Up to 1,000 lessons.",
        operation_id="exportLearnerData",
        response_class=Response,
        responses=_EXPORT_RESPONSES,
        openapi_extra={
            "parameters": [_LEARNER_ID_PARAMETER],
            "security": [{name: []} for name in _SECURITY_SCHEMES],  # either one
        },
    )
    async def export_learner_data(request: Request) -> Response:
        exporter = _exporter(request)
        when = datetime.now(UTC)
        outcome = await _decide(exporter, request, when)
        trail = AuditTrail.of(request)
        trail.asked(outcome.user_id, outcome.learner_id)
        if outcome.status == 200:
            response = document_response(exporter, outcome, request, when)
            if response.status_code == 200:
                trail.written()  # document_response wrote the line before the first byte
            return response
        return _answer_error(outcome)

    @app.get(
        HEALTH_PATH,
        summary="Whether the server can read its source database",
        operation_id="healthz",
        responses={
            200: {"description": "The database answered a trivial read."},
            503: {"description": "The database cannot be reached or read."},
        },
    )
    async def healthz(request: Request) -> Response:
        reachable = await _exporter(request).health.reachable()
        body = {"status": "ok" if reachable else "unavailable", "database": reachable}
        return Response(
            orjson.dumps(body),
            status_code=200 if reachable else 503,
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )


async def _decide(
    exporter: Exporter, request: Request, when: datetime, render: Render = encode_document
) -> Outcome:
    param = learner_param(request.query_params.getlist("learnerId"))
    token = bearer_token(request)
    if token is None:
        return Outcome(401, None, param.value, UNAUTHORIZED)
    try:
        user_id = exporter.tokens.verify(token)
    except InvalidToken as exc:
        log.info("token refused: %s", exc)
        return Outcome(401, None, param.value, UNAUTHORIZED)
    try:
        if exporter.async_engine is not None:
            return await exporter.decide_async(user_id, param, when, render)
        return await run_in_threadpool(exporter.decide, user_id, param, when, render)
    except ExtractError as exc:  # messages name ids and SQLSTATEs, never row content
        log.warning("export for user %s failed: %s", user_id, exc)
        return _unavailable(user_id, param.value)
    except Exception as exc:  # a bug: answered and audited as 500; its text may quote data
        log.error("export for user %s failed: %s", user_id, _where(exc))
        return Outcome(500, user_id, param.value, INTERNAL_ERROR)


def _where(exc: BaseException) -> str:
    """An exception's class and the place it was raised, without its message (which may quote
    a row's content)."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{place}"


class AuditTrail:
    """The audit state of one request: who asked for whom, and whether its line is written.

    Kept in the ASGI scope's `state`, shared by the route and `AuditMiddleware`.
    """

    _KEY = "learner_export_audit"

    def __init__(self) -> None:
        self.user_id: int | None = None
        self.learner_id: int | None = None
        self.is_written = False

    @classmethod
    def of(cls, request: Request) -> AuditTrail:
        return cls.in_scope(request.scope)

    @classmethod
    def in_scope(cls, scope: Any) -> AuditTrail:
        state: dict[str, Any] = scope.setdefault("state", {})
        trail: AuditTrail = state.setdefault(cls._KEY, cls())
        return trail

    def asked(self, user_id: int | None, learner_id: int | None) -> None:
        self.user_id, self.learner_id = user_id, learner_id

    def written(self) -> None:
        self.is_written = True


class AuditMiddleware:
    """Writes the one audit line of every request that did not write its own (only a served
    export does): refusals, 404s and 405s, 503s, and any unexpected 500, with the final status.

    Pure ASGI, inside Starlette's ServerErrorMiddleware: an exception reaching it becomes the
    500 that ServerErrorMiddleware then answers.
    """

    def __init__(self, app: Any, *, log_path: Path) -> None:
        self.app = app
        self.log_path = log_path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUDITED_PATHS:
            await self.app(scope, receive, send)
            return
        when = datetime.now(UTC)
        trail = AuditTrail.in_scope(scope)

        def record(status: int) -> None:
            if not trail.is_written:
                trail.written()
                write_audit(
                    self.log_path,
                    AuditRecord(
                        at=when, via="http", user_id=trail.user_id,
                        learner_id=trail.learner_id, status=status,
                    ),
                )  # fmt: skip

        async def recording_first(message: Any) -> None:
            if message["type"] == "http.response.start":  # the line is there before the answer
                record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_first)
        finally:
            record(500)  # an exception before any answer: ServerErrorMiddleware answers 500


def write_audit(path: Path, record: AuditRecord) -> bool:
    """Append `record` to the audit log at `path`; False (and the failure logged, without
    personal data) when it could not be written."""
    try:
        append_audit(path, record)
    except LoadError as exc:
        log.error("audit log: %s", exc)
        return False
    return True


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, the framework's own included, as `{"error": ...}`; never a stack trace."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("request failed: %s", _where(exc))
        return error_response(500, INTERNAL_ERROR)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, server_error)


def _document_openapi(app: FastAPI) -> None:
    """Add the error body and the document's schema to the generated OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            components = schema.setdefault("components", {})
            components["securitySchemes"] = _SECURITY_SCHEMES
            schemas = components.setdefault("schemas", {})
            schemas["Error"] = _ERROR_BODY
            schemas.update(_document_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- the readable page and the family bundle (issue 13) ----------------------------------------

VIEW_PATH = "/api/export/view"
FAMILY_PATH = "/api/export/family"
PARENT_NOT_FOUND = "Parent not found"
NO_CHILDREN = "No children found"
PARENT_ID_REQUIRED = LEARNER_ID_REQUIRED.replace("learnerId", "parentId")


def _operator_notice(settings: Settings) -> OperatorNotice:
    """The operator's part of the Art. 15 notice; ConfigurationError when its file is bad."""
    try:
        return operator_notice(settings)
    except UserError as exc:
        raise ConfigurationError(str(exc)) from None


def page_response(exporter: Exporter, outcome: Outcome, when: datetime) -> Response:
    """The 200 answer of /api/export/view: the page, once it has a place in the worker's byte
    budget and its audit line (the page's sha256 and size) is written; 503 when either cannot
    be had, as for the document. The page's CSP is sent as a header too."""
    cleared = _clear_for_sending(exporter, outcome, when)
    if isinstance(cleared, Response):
        return cleared
    page, transfer, transfer_over = cleared
    assert outcome.learner_id is not None
    filename = page_filename(outcome.learner_id, when)
    return AuditedResponse(
        page.body, size=len(page.body), transfer=transfer, on_close=transfer_over,
        media_type=PAGE_MEDIA_TYPE, headers=_page_headers(filename),
    )  # fmt: skip


def _page_headers(filename: str) -> dict[str, str]:
    return {
        "Content-Disposition": f'inline; filename="{filename}"',
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


@dataclass(frozen=True, slots=True)
class FamilyOutcome:
    """What to answer a family request: its bundle (status 200) or an error."""

    status: int
    user_id: int | None
    error: str | None = None
    retry_after: int | None = None
    bundle: Bundle | None = None
    children: tuple[BuiltDocument, ...] = ()

    def as_outcome(self) -> Outcome:
        return Outcome(self.status, self.user_id, None, self.error, self.retry_after)


def parent_param(values: Sequence[str]) -> LearnerParam:
    """The `parentId` parameter, under the rules of `learnerId` (`learner_param`)."""
    parsed = learner_param(values)
    if parsed.problem is None:
        return parsed
    return LearnerParam(None, parsed.problem.replace("learnerId", "parentId"))


def decide_family(
    exporter: Exporter,
    notice: OperatorNotice,
    user_id: int,
    param: LearnerParam,
    export_date: datetime,
) -> FamilyOutcome:
    """Authorize a family request and build every child's document, in one snapshot.

    The checks of `Exporter.decide`, in the same order: 401, 403 (role), 429, then 400 (a
    malformed `parentId`; an ADMIN must give one), 403 (a PARENT naming another parent), 404
    (an ADMIN naming an id that is no PARENT, or a parent with no children). Blocking.
    """
    with snapshot(exporter.engine) as conn:
        accounts = read_accounts(conn, _asked(user_id, param))
        requester = accounts.get(user_id)
        if requester is None:
            return FamilyOutcome(401, None, UNAUTHORIZED)
        if requester.role not in EXPORTING_ROLES:
            return FamilyOutcome(403, user_id, FORBIDDEN)
        try:
            retry_after = exporter.limiter.admit(user_id)
        except RateLimitUnavailable as exc:
            log.error("rate limit: %s", exc)
            return FamilyOutcome(503, user_id, UNAVAILABLE, UNAVAILABLE_RETRY_SECONDS)
        if retry_after is not None:
            return FamilyOutcome(429, user_id, TOO_MANY_REQUESTS, retry_after)
        parent_id = param.value
        if param.problem is not None and not (
            requester.role == "PARENT" and param.problem == PARENT_ID_REQUIRED
        ):
            return FamilyOutcome(400, user_id, param.problem)
        if requester.role == "PARENT":
            if parent_id is not None and parent_id != user_id:
                return FamilyOutcome(403, user_id, FORBIDDEN)
            parent_id = user_id
        else:
            target = accounts.get(parent_id) if parent_id is not None else None
            if target is None or target.role != "PARENT":
                return FamilyOutcome(404, user_id, PARENT_NOT_FOUND)
        assert parent_id is not None
        family = read_family(conn, parent_id, lesson_limit=LESSON_CAP)
    if not family:
        return FamilyOutcome(404, user_id, NO_CHILDREN)
    children = tuple(
        build_document(r, export_date=export_date, exported_by=user_id) for r in family
    )
    bundle = family_bundle(parent_id, children, notice, export_date=export_date)
    return FamilyOutcome(200, user_id, bundle=bundle, children=children)


def app_notice(request: Request) -> OperatorNotice:
    """The operator notice the application loaded at its creation (`create_app`)."""
    notice: OperatorNotice = request.app.state.notice
    return notice


def family_response(exporter: Exporter, outcome: FamilyOutcome, when: datetime) -> Response:
    """The 200 answer of /api/export/family: the zip, streamed member by member, once one
    audit line per child (its document's sha256 and size) is written; 503 when one cannot be.
    A transfer that breaks off adds a `"complete": false` note per child."""
    bundle = outcome.bundle
    assert bundle is not None
    documents = bundle.documents()
    for built, member in zip(outcome.children, documents, strict=True):
        served = AuditRecord(
            at=when, via="http", user_id=outcome.user_id, learner_id=built.learner_id,
            status=200, sha256=member.sha256, size=len(member.data),
            lessons_exported=built.lessons_exported, lessons_total=built.lessons_total,
        )  # fmt: skip
        if not exporter.audit(served):
            return _answer_error(_unavailable(outcome.user_id, None))
    transfer = Transfer()

    def body() -> Iterator[bytes]:  # a plain iterator: Starlette runs it in a worker thread
        for piece in iter_zip(((m.name, m.data) for m in bundle.members), modified=when):
            transfer.size += len(piece)
            yield piece
        transfer.complete = True

    def note_a_broken_transfer() -> None:
        if not transfer.complete:
            for built, member in zip(outcome.children, documents, strict=True):
                exporter.audit(
                    AuditRecord(
                        at=datetime.now(UTC), via="http", user_id=outcome.user_id,
                        learner_id=built.learner_id, status=200, sha256=member.sha256,
                        complete=False,
                    )
                )  # fmt: skip

    filename = family_filename(bundle.parent_id, when)
    return AuditedStreamingResponse(
        _async_pieces(body()),
        on_close=note_a_broken_transfer,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


async def _async_pieces(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator's pieces, each computed in a worker thread (zip compression would
    hold up the event loop)."""
    from starlette.concurrency import iterate_in_threadpool

    async for piece in iterate_in_threadpool(pieces):
        yield piece


_VIEW_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{k: v for k, v in _EXPORT_RESPONSES.items() if k != 200},
    200: {
        "description": "The learner's readable page: one self-contained HTML file (no script, "
        "no request), rendered from the same document /api/export serves.",
        "headers": {
            "Content-Security-Policy": {"description": CSP, "schema": {"type": "string"}},
            "Cache-Control": {"description": "no-store", "schema": {"type": "string"}},
        },
        "content": {"text/html": {"schema": {"type": "string"}}},
    },
}

_PARENT_ID_PARAMETER = {
    **_LEARNER_ID_PARAMETER,
    "name": "parentId",
    "required": False,
    "description": "ADMIN: the parent whose children to export (required). PARENT: their own "
    "id or nothing.",
}

_FAMILY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{k: v for k, v in _EXPORT_RESPONSES.items() if k not in (200, 400, 403, 404)},
    200: {
        "description": "A zip: each child's document and page, notice.json, manifest.json.",
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    },
    400: _error("parentId malformed, out of range or repeated; an ADMIN gave none."),
    403: _error("The user is not a PARENT or an ADMIN, or is a PARENT naming another parent."),
    404: _error("An ADMIN named an id that is no PARENT, or the parent has no children."),
}


def _add_readable_routes(app: FastAPI) -> None:
    """/api/export/view and /api/export/family: the checks, statuses, audit and rate limit of
    /api/export (same token, same order, one audit line per request, per child for a family)."""

    @app.get(
        VIEW_PATH,
        summary="One learner's data as a readable page",
        operation_id="viewLearnerData",
        response_class=Response,
        responses=_VIEW_RESPONSES,
        openapi_extra={
            "parameters": [_LEARNER_ID_PARAMETER],
            "security": [{name: []} for name in _SECURITY_SCHEMES],  # either one
        },
    )
    async def view_learner_data(request: Request) -> Response:
        exporter = _exporter(request)
        when = datetime.now(UTC)
        notice = app_notice(request)
        # Rendered from the built document inside the request's snapshot, as the JSON is encoded:
        # a renderer's bug is answered 500 by _decide, like any other.
        outcome = await _decide(exporter, request, when, lambda doc: page_bytes(doc, notice))
        trail = AuditTrail.of(request)
        trail.asked(outcome.user_id, outcome.learner_id)
        if outcome.status != 200:
            return _answer_error(outcome)
        response = page_response(exporter, outcome, when)
        if response.status_code == 200:
            trail.written()
        return response

    @app.get(
        FAMILY_PATH,
        summary="All of a family's children in one zip",
        operation_id="exportFamilyData",
        response_class=Response,
        responses=_FAMILY_RESPONSES,
        openapi_extra={
            "parameters": [_PARENT_ID_PARAMETER],
            "security": [{name: []} for name in _SECURITY_SCHEMES],  # either one
        },
    )
    async def export_family_data(request: Request) -> Response:
        exporter = _exporter(request)
        when = datetime.now(UTC)
        outcome = await _decide_family(exporter, request, when)
        trail = AuditTrail.of(request)
        trail.asked(outcome.user_id, None)
        if outcome.status != 200:
            return _answer_error(outcome.as_outcome())
        response = family_response(exporter, outcome, when)
        if response.status_code == 200:
            trail.written()  # one line per child, written by family_response
        return response


async def _decide_family(exporter: Exporter, request: Request, when: datetime) -> FamilyOutcome:
    param = parent_param(request.query_params.getlist("parentId"))
    token = bearer_token(request)
    if token is None:
        return FamilyOutcome(401, None, UNAUTHORIZED)
    try:
        user_id = exporter.tokens.verify(token)
    except InvalidToken as exc:
        log.info("token refused: %s", exc)
        return FamilyOutcome(401, None, UNAUTHORIZED)
    try:
        return await run_in_threadpool(
            decide_family, exporter, app_notice(request), user_id, param, when
        )
    except ExtractError as exc:
        log.warning("family export for user %s failed: %s", user_id, exc)
        return FamilyOutcome(503, user_id, UNAVAILABLE, UNAVAILABLE_RETRY_SECONDS)
    except Exception as exc:
        log.error("family export for user %s failed: %s", user_id, _where(exc))
        return FamilyOutcome(500, user_id, INTERNAL_ERROR)


def create_app_from_environment() -> FastAPI:
    """The application configured from the environment (uvicorn `--factory`, worker processes)."""
    return create_app(get_settings())


# --- running ----------------------------------------------------------------------------------


def serve_forever(args: argparse.Namespace, settings: Settings) -> None:
    """Check the options and configuration (`learner_export.serving.prepare`), then serve with
    uvicorn until interrupted. Raises `UserError` when the server cannot start safely."""
    _run_uvicorn(args, settings, prepare(args, settings))


def server_config(app: Any, settings: Settings, **options: Any) -> ServerConfig:
    """uvicorn's configuration for `app` with the server's bounds on slow and idle clients
    (`learner_export.http_server`): a request must arrive within `http_request_timeout`, an idle
    keep-alive connection is closed after `http_keep_alive_timeout`, and past
    `http_max_connections` connections or requests a worker answers 503."""
    return ServerConfig(
        app,
        request_timeout=settings.http_request_timeout,
        timeout_keep_alive=settings.http_keep_alive_timeout,
        limit_concurrency=settings.http_max_connections,
        **options,
    )


def _run_uvicorn(args: argparse.Namespace, settings: Settings, secret: str) -> None:
    import uvicorn

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "ssl_keyfile": args.ssl_keyfile,
        "ssl_certfile": args.ssl_certfile,
        # The access log would write request URLs (learner ids) and client addresses to stderr;
        # the audit log is the record of exports.
        "access_log": False,
        "server_header": False,
        "ws": "none",
    }
    if args.workers == 1:
        server = uvicorn.Server(
            server_config(create_app(settings, secret=secret), settings, **options)
        )
        server.run()
        if not server.started:
            sys.exit(STARTUP_FAILURE)  # as uvicorn.run does; uvicorn has logged why
        return
    if args.demo:
        # Worker processes build their settings from the environment: hand them the demo secret.
        os.environ["JWT_SECRET"] = secret
    _run_workers(
        "serve:create_app_from_environment", settings, workers=args.workers, options=options
    )


def _run_workers(
    factory: str, settings: Settings, *, workers: int, options: dict[str, Any]
) -> None:
    """What `uvicorn.run` does for several workers, but with TCP_NODELAY on the shared socket.

    uvicorn binds that socket without naming the TCP protocol, so asyncio does not turn Nagle's
    algorithm off on the connections it accepts (it does when uvicorn binds in-process, with one
    worker). Every response is two writes (headers, then body), so the body's last segment would
    wait for the client's delayed ACK: ~40 ms on a one-client request. Linux copies TCP_NODELAY
    from a listening socket to the connections it accepts.
    """
    import socket

    from uvicorn.supervisors import Multiprocess

    config = server_config(factory, settings, factory=True, workers=workers, **options)
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()


def main(argv: Sequence[str] | None = None) -> int:
    """`python serve.py [options]`: the same as `learner-export serve [options]`."""
    from pydantic import ValidationError

    parser = argparse.ArgumentParser(prog="serve.py", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve_forever(args, get_settings())
    except (UserError, ValidationError) as exc:
        print(f"serve.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
