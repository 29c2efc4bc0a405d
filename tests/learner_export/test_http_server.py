"""Slow, idle and malformed clients on a real socket: a request must arrive whole within the
deadline, a response is never cut by it, a request head is bounded, what cannot be parsed is a
JSON 400, and past the connection cap uvicorn answers 503."""

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


def test_past_the_connection_cap_the_answer_is_a_json_503(strict: LiveServer) -> None:
    idle = [_connect(strict) for _ in range(3)]
    try:
        connections = strict.server.server_state.connections
        for _ in range(2000):  # until the server has taken them on (every 5 ms, at most 10 s)
            if len(connections) >= 3:
                break
            time.sleep(0.005)
        with _connect(strict) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, headers, body = _whole_answer(extra)
    finally:
        for connection in idle:
            connection.close()
    assert status == 503 and headers["retry-after"] == "1"
    _refused_with((status, headers, body), 503, "Service unavailable")


def _whole_answer(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends until it closes the connection, as one answer (asserting
    that nothing follows it): status, headers (lower-case names), body."""
    received = bytearray()
    try:
        while piece := connection.recv(65536):
            received += piece
    except ConnectionResetError:
        pass  # the server closed with our unread bytes in its buffer: what came before counts
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    assert len(body) == int(headers["content-length"]), "one answer, then the connection closed"
    return int(status_line.split()[1]), headers, body


def _refused_with(answer: tuple[int, dict[str, str], bytes], status: int, error: str) -> None:
    code, headers, body = answer
    assert code == status
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert headers["connection"] == "close"
    assert orjson.loads(body) == {"error": error}


def test_a_head_over_16_kib_in_one_piece_is_431_in_json(strict: LiveServer) -> None:
    pad = "x" * (16 * 1024)
    with _connect(strict) as connection:
        connection.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {pad}\r\n\r\n".encode()
        )
        _refused_with(_whole_answer(connection), 431, "Request header fields too large")


def test_a_head_over_16_kib_in_pieces_is_431_before_it_ends(strict: LiveServer) -> None:
    """One header value that never ends, sent in small pieces: refused once 16 KiB are in,
    long before the request deadline, so the parser never buffers more."""
    with _connect(strict) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        try:
            for _ in range(32):  # 32 KiB, a piece at a time
                connection.sendall(b"x" * 1024)
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending
        _refused_with(_whole_answer(connection), 431, "Request header fields too large")


def test_a_head_just_under_16_kib_is_served(strict: LiveServer) -> None:
    pad = "x" * (15 * 1024)
    with _connect(strict) as connection:
        connection.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {pad}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        status, _, body = _whole_answer(connection)
    assert (status, body) == (200, b'{"status":"ok","database":true}')


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Name: 1\r\n\r\n",
        b"GET /healthz NOT-HTTP\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
    ids=["NUL in a header value", "space in a header name", "no HTTP version", "two lengths"],
)
def test_what_cannot_be_parsed_is_a_json_400(strict: LiveServer, request_bytes: bytes) -> None:
    with _connect(strict) as connection:
        connection.sendall(request_bytes)
        _refused_with(_whole_answer(connection), 400, "Invalid HTTP request")


def _answers(received: bytes) -> list[tuple[int, bytes]]:
    """The (status, body) of each answer in `received`, in order (Content-Length or chunked)."""
    answers = []
    rest = received
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        if headers.get("transfer-encoding") == "chunked":
            body = bytearray()
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                body += rest[:size]
                rest = rest[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers["content-length"])
            body, rest = bytearray(rest[:length]), rest[length:]
        answers.append((int(status_line.split()[1]), bytes(body)))
    return answers


def _received_until_closed(connection: socket.socket) -> bytes:
    received = bytearray()
    while piece := connection.recv(65536):
        received += piece
    return bytes(received)


def test_an_upgrade_request_is_answered_as_a_plain_one(strict: LiveServer) -> None:
    """No WebSocket here: the request is answered as a plain one; the parser reads nothing
    more on that connection, and the request deadline closes it (as uvicorn's own would)."""
    with _connect(strict) as connection:
        connection.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        answer = http.client.HTTPResponse(connection)
        answer.begin()
        assert (answer.status, answer.read()) == (200, b'{"status":"ok","database":true}')
        assert _closed_by_server(connection)


def test_pipelined_requests_are_answered_in_order(strict: LiveServer) -> None:
    token = make_token(SECRET, userId=str(strict.ids.admin), role="ADMIN")
    export = (
        f"GET /api/export?learnerId={strict.ids.child} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    health = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    last = export.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
    with _connect(strict) as connection:
        connection.sendall((export + health + last).encode())
        answers = _answers(_received_until_closed(connection))
    assert [status for status, _ in answers] == [200, 200, 200]
    assert orjson.loads(answers[0][1])["learner"]["id"] == strict.ids.child
    assert answers[1][1] == b'{"status":"ok","database":true}'
    first, last = (orjson.loads(answers[i][1]) for i in (0, 2))
    assert {**first, "exportDate": None} == {**last, "exportDate": None}


def test_garbage_after_a_pipelined_request_never_cuts_its_answer(strict: LiveServer) -> None:
    """The answer under way is sent whole, then the connection ends: no 400 written into it."""
    token = make_token(SECRET, userId=str(strict.ids.admin), role="ADMIN")
    with _connect(strict) as connection:
        connection.sendall(
            f"GET /api/export?learnerId={strict.ids.big} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\nGET /healthz NOT-HTTP\r\n\r\n".encode()
        )
        answers = _answers(_received_until_closed(connection))
    assert len(answers) == 1 and answers[0][0] == 200
    assert orjson.loads(answers[0][1])["learner"]["id"] == strict.ids.big


def test_the_server_settings_reach_uvicorn() -> None:
    from learner_export.http_server import GuardedProtocol, ServerConfig

    config = ServerConfig(lambda: None, request_timeout=2.5)
    config.load()
    assert config.http_protocol_class is GuardedProtocol
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
