"""How the HTTP server treats slow, idle and malformed clients: uvicorn's httptools protocol,
plus a deadline on receiving each request, a bound on its head, and JSON for what it refuses.

uvicorn bounds the idle time between two requests of a keep-alive connection
(`timeout_keep_alive`) and, with `limit_concurrency`, how many connections or requests a worker
takes on before answering 503. It does not bound how long a client may take to *send* a request:
nothing is armed when a connection opens, and the keep-alive timer is cancelled by the first byte
that arrives, so a client that sends nothing, or one header line every few seconds, holds its
connection for ever (uvicorn issue #157: its `--timeout-request-start` and
`--timeout-request-complete` never landed). Behind a reverse proxy that buffers requests this
would not matter; the endpoint is meant to run without one too. Its httptools protocol (the
faster of its two: llhttp, Node's own parser, in C) does not bound a request's head either, where
its h11 protocol stopped at 16 KiB.

So the server keeps uvicorn (maintained, the only HTTP/1.1 stack used here) and uses
`GuardedProtocol`, uvicorn's httptools protocol with three additions:

* a request must have arrived whole, head and body, within `request_timeout` seconds of the
  connection opening or of the previous response ending, or the connection is closed. Once a
  request is in, the deadline is off: a long download to a slow reader is bounded by the client,
  not by this timer;
* a request head (request line and header fields) over HEAD_LIMIT_BYTES is answered 431, as Node
  answers it, and the connection closed: no more of it is kept than that, and one read;
* what the parser refuses (a malformed request line or header, a NUL in a header) is answered
  `400` with the application's error shape (`{"error": ...}`, no-store) instead of uvicorn's
  text/plain, and so is a request past the connection cap (`limit_concurrency`): `503` with
  `Retry-After`.

The protocol relies on uvicorn's `HttpToolsProtocol` (`connection_made`, `data_received`, which
it replaces, the parser callbacks, `on_response_complete`, `_start_asgi_task`, the `pipeline`
and `cycle` it keeps); the tests of `tests/learner_export/test_http_server.py` run it on a real
socket, so an upgrade of uvicorn that moved them fails there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

PROTOCOL = "learner_export.http_server:GuardedProtocol"
"""The protocol as uvicorn's `http` option names it (a string survives being sent to workers)."""
DEFAULT_REQUEST_TIMEOUT = 10.0
HEAD_LIMIT_BYTES = 16 * 1024
"""The largest request head taken: Node's default, and h11's (uvicorn's other protocol)."""

INVALID_REQUEST = "Invalid HTTP request"
HEAD_TOO_LARGE = "Request header fields too large"
OVER_CAPACITY = "Service unavailable"
OVER_CAPACITY_RETRY_SECONDS = 1
"""Past the connection cap: other connections end within seconds (the keep-alive timeout)."""

log = logging.getLogger("learner_export.serve")


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration with `request_timeout`: seconds a client has to send a request."""

    def __init__(
        self, app: Any, *, request_timeout: float = DEFAULT_REQUEST_TIMEOUT, **options: Any
    ) -> None:
        super().__init__(app, http=PROTOCOL, **options)
        self.request_timeout = request_timeout


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the head parsed so far is over HEAD_LIMIT_BYTES."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; closes a connection whose request has not arrived whole
    within the configuration's `request_timeout` (counted from the connection's start, or from
    the end of its previous response), answers 431 to a head over HEAD_LIMIT_BYTES, and answers
    what it cannot parse with a JSON 400.

    Invariant: while a request's head is being read, no more than HEAD_LIMIT_BYTES of it plus
    one read from the socket is held. Two counts enforce it: the head's size as parsed (its URL
    and header fields, checked at each; exact, and a head that came in one read is caught there),
    and the bytes received since the last message ended while the head is unfinished (a lower
    bound of the unparsed part the parser buffers; never more than the head itself, since bytes
    of an earlier request in the same read are counted before its end resets the count).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timeout = float(
            getattr(self.config, "request_timeout", DEFAULT_REQUEST_TIMEOUT)
        )
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_head = True
        self._received_in_head = 0
        self._head_size = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, with the head's bound and this class's answers to what is refused.
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._received_in_head += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol to upgrade to (`ws` is off): uvicorn's warning; the request was
            # dispatched as a plain one when its head was complete.
            self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(431, HEAD_TOO_LARGE)
            else:
                self._refuse(400, INVALID_REQUEST)
            return
        if self._reading_head and self._received_in_head > HEAD_LIMIT_BYTES:
            self._refuse(431, HEAD_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._received_in_head = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the request is in
        self._reading_head = True  # whatever comes next is the next request's head
        self._received_in_head = 0

    def on_response_complete(self) -> None:
        next_is_in = bool(self.pipeline)  # a pipelined request already whole starts now
        super().on_response_complete()
        if not next_is_in and not self.transport.is_closing():
            self._arm()  # waiting for the next request of this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # uvicorn hands a request past the connection cap to its own text/plain 503 app.
        super()._start_asgi_task(cycle, _over_capacity if app is service_unavailable else app)

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > HEAD_LIMIT_BYTES:
            raise _HeadTooLarge  # the parser stops here; `data_received` answers 431

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with `{"error": message}` (no-store) and close the connection: the
        request cannot be read, so neither can where the next one starts. If the answer to an
        earlier request of the connection (pipelined) is still being sent, it is not cut: it
        ends the connection instead, and the refused request gets no answer."""
        self._disarm()
        if self.transport.is_closing():
            return
        log.info("refused a request the server cannot take (%d)", status)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        body = orjson.dumps({"error": message})
        head = [STATUS_LINE[status]]
        head.extend(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers)
        head.append(
            b"content-type: application/json\r\ncache-control: no-store\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self._request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closed a connection whose request did not arrive in time")
            self.transport.close()


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's answer past the connection cap (`service_unavailable`) in the application's
    error shape: 503, `{"error": ...}`, no-store, a Retry-After, and the connection closed."""
    body = orjson.dumps({"error": OVER_CAPACITY})
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"retry-after", b"%d" % OVER_CAPACITY_RETRY_SECONDS),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
