"""How the HTTP server treats slow and idle clients: uvicorn, plus a deadline on receiving each
request.

uvicorn bounds the idle time between two requests of a keep-alive connection
(`timeout_keep_alive`), the size of a request head (h11: 16 KiB) and, with `limit_concurrency`,
how many connections or requests a worker takes on before answering 503. It does not bound how
long a client may take to *send* a request: nothing is armed when a connection opens, and the
keep-alive timer is cancelled by the first byte that arrives, so a client that sends nothing,
or one header line every few seconds, holds its connection for ever (uvicorn issue #157: its
`--timeout-request-start` and `--timeout-request-complete` never landed). Behind a reverse proxy
that buffers requests this would not matter; the endpoint is meant to run without one too.

So the server keeps uvicorn (already in the lock, maintained, the only HTTP/1.1 stack used here)
and uses `RequestDeadlineProtocol`, uvicorn's own h11 protocol with one addition: a request must
have arrived whole, head and body, within `request_timeout` seconds of the connection opening or
of the previous response ending, or the connection is closed. Once a request is in, the deadline
is off: a long download to a slow reader is bounded by the client, not by this timer. The
protocol relies on three hooks of uvicorn's `H11Protocol` (`connection_made`, `data_received`,
`on_response_complete`); the tests of `tests/learner_export/test_http_server.py` run it on a
real socket, so an upgrade of uvicorn that moved them fails there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

PROTOCOL = "learner_export.http_server:RequestDeadlineProtocol"
"""The protocol as uvicorn's `http` option names it (a string survives being sent to workers)."""
DEFAULT_REQUEST_TIMEOUT = 10.0

log = logging.getLogger("learner_export.serve")

_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)
"""h11's states of the client side once its request is in (or the connection is over)."""


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration with `request_timeout`: seconds a client has to send a request."""

    def __init__(
        self, app: Any, *, request_timeout: float = DEFAULT_REQUEST_TIMEOUT, **options: Any
    ) -> None:
        super().__init__(app, http=PROTOCOL, **options)
        self.request_timeout = request_timeout


class RequestDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol; closes a connection whose request has not arrived whole within
    the configuration's `request_timeout` (counted from the connection's start, or from the end
    of its previous response)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timeout = float(
            getattr(self.config, "request_timeout", DEFAULT_REQUEST_TIMEOUT)
        )
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in _RECEIVED:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()  # waiting for the next request of this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

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
