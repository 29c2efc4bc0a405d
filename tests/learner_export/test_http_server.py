"""Slow and idle clients on a real socket: a request must arrive whole within the deadline, a
response is never cut by it, and past the connection cap uvicorn answers 503."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import serve
from learner_export.settings import Settings
from tests.conftest import DemoSource
from tests.serve.conftest import SECRET, LiveServer, make_token, start_server

REQUEST_TIMEOUT = 1.0
GIVE_UP = 20.0
"""How long a test socket waits for anything: far beyond the deadline, so a server that never
closes the connection fails the test instead of hanging it."""


@pytest.fixture(scope="module")
def strict(
    sqlite_demo: DemoSource, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server with a one-second request deadline and room for three connections."""
    settings = Settings(
        DATABASE_URL=sqlite_demo.url,
        JWT_SECRET=SECRET,
        data_dir=tmp_path_factory.mktemp("strict"),
        http_request_timeout=REQUEST_TIMEOUT,
        http_max_connections=3,
    )
    live = start_server(settings, sqlite_demo)
    yield live
    live.stop()


def _connect(live: LiveServer) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=GIVE_UP)
    return connection


def _closed_by_server(connection: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset), False if it answered."""
    try:
        return connection.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_a_connection_that_sends_nothing_is_closed(strict: LiveServer) -> None:
    with _connect(strict) as connection:
        assert _closed_by_server(connection)


def test_a_client_trickling_its_headers_is_cut_off(strict: LiveServer) -> None:
    with _connect(strict) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        cut = False
        for number in range(int(GIVE_UP / 0.25)):
            try:
                connection.sendall(f"X-Slow-{number}: 1\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.25)
        assert cut or _closed_by_server(connection)


def test_a_request_in_time_is_answered_and_the_next_one_too(strict: LiveServer) -> None:
    with _connect(strict) as connection:
        for _ in range(2):  # keep-alive: the deadline is armed again after the first response
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = http.client.HTTPResponse(connection)
            answer.begin()
            assert (answer.status, answer.read()) == (200, b'{"status":"ok","database":true}')


def test_a_slow_reader_still_gets_the_whole_document(strict: LiveServer) -> None:
    """The deadline is for receiving a request: a long download outlives it."""
    token = make_token(SECRET, userId=str(strict.ids.admin), role="ADMIN")
    request = (
        f"GET /api/export?learnerId={strict.ids.big} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    with _connect(strict) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        connection.sendall(request.encode())
        time.sleep(REQUEST_TIMEOUT * 2)  # the server is still sending: ~6 MB, small buffers
        received = bytearray()
        while piece := connection.recv(65536):
            received += piece
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body.endswith(b"0\r\n\r\n")  # the chunked body's last chunk: the transfer is whole


def test_a_slow_answer_is_not_cut_by_the_deadline(
    strict: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is in: the time the application takes to answer is not the client's."""
    real_read_request = serve.read_request

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        time.sleep(REQUEST_TIMEOUT * 2)
        return real_read_request(*args, **kwargs)

    monkeypatch.setattr(serve, "read_request", slow_read)
    token = make_token(SECRET, userId=str(strict.ids.admin), role="ADMIN")
    with _connect(strict) as connection:
        connection.sendall(
            f"GET /api/export?learnerId={strict.ids.child} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        answer = http.client.HTTPResponse(connection)
        answer.begin()
        assert answer.status == 200
        assert orjson.loads(answer.read())["learner"]["id"] == strict.ids.child


def test_past_the_connection_cap_uvicorn_answers_503(strict: LiveServer) -> None:
    idle = [_connect(strict) for _ in range(3)]
    try:
        connections = strict.server.server_state.connections
        for _ in range(2000):  # until the server has taken them on (every 5 ms, at most 10 s)
            if len(connections) >= 3:
                break
            time.sleep(0.005)
        with _connect(strict) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert extra.recv(65536).startswith(b"HTTP/1.1 503 ")
    finally:
        for connection in idle:
            connection.close()


def test_the_server_settings_reach_uvicorn() -> None:
    from learner_export.http_server import RequestDeadlineProtocol, ServerConfig

    config = ServerConfig(lambda: None, request_timeout=2.5)
    config.load()
    assert config.http_protocol_class is RequestDeadlineProtocol
    assert config.request_timeout == 2.5


def test_the_server_runs_on_uvloop() -> None:
    """uvicorn picks uvloop when it is installed (a dependency: the README says the endpoint
    waits for PostgreSQL on it); a lock or install that lost it fails here."""
    import uvloop

    from learner_export.http_server import ServerConfig

    factory = ServerConfig(lambda: None).get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
