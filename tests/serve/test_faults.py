"""The endpoint in a misbehaving world, over real HTTP: database trouble is 503 with Retry-After and
never a 500, a failure after the first byte aborts the connection, every request leaves one audit
line with its final status, an export whose line cannot be written is not served, and /healthz
answers whatever the exports' pool is doing."""

from __future__ import annotations

import argparse
import logging
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

import serve
from extract.request_read import RequestRows
from learner_export.arguments import UserError
from learner_export.serving import prepare
from learner_export.settings import Settings
from load.audit import read_audit
from tests.conftest import DemoSource
from tests.serve.conftest import SECRET, LiveServer, start_server

HEALTH_DEADLINE = 1.0
"""/healthz must answer within a second whatever the database does (the client gives up then)."""


@contextmanager
def own_server(source: DemoSource, tmp_path: Path, **settings: Any) -> Iterator[LiveServer]:
    """A server of this test's own (its own audit log and settings), stopped at the end."""
    configured = Settings(
        DATABASE_URL=source.url, JWT_SECRET=SECRET, data_dir=tmp_path / "data", **settings
    )
    live = start_server(configured, source)
    try:
        yield live
    finally:
        live.stop()


def _exporter(live: LiveServer) -> serve.Exporter:
    exporter: serve.Exporter = live.server.config.app.state.exporter
    return exporter


def _statuses(live: LiveServer) -> list[int]:
    return [record["status"] for record in read_audit(live.settings.audit_log_path)]


def _wait_until(condition: Callable[[], bool]) -> None:
    """Poll `condition` for up to 10 s (the server thread finishes a response after its client
    has read the last byte)."""
    for _ in range(1000):
        if condition():
            return
        time.sleep(0.01)
    assert condition()


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.json() == {"error": "Service unavailable"}
    assert response.headers["retry-after"] == "5"
    assert response.headers["cache-control"] == "no-store"


# --- database trouble --------------------------------------------------------------------------


def test_an_exhausted_pool_is_503_and_healthz_is_not_held(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    with own_server(sqlite_demo, tmp_path, database_pool_timeout=0.2) as live:
        engine = _exporter(live).engine
        pool = engine.pool
        assert isinstance(pool, sa.pool.QueuePool)
        with ExitStack() as held:
            for _ in range(pool.size() + pool._max_overflow):  # every connection, taken
                held.enter_context(engine.connect())
            response = live.export(f"learnerId={live.ids.child}", token=live.token(live.ids.admin))
            _assert_unavailable(response)
            health = live.client.get("/healthz", timeout=HEALTH_DEADLINE)
            assert health.status_code == 200  # its own connection, not the exports' pool
        assert _statuses(live) == [503]
        again = live.export(f"learnerId={live.ids.child}", token=live.token(live.ids.admin))
        assert again.status_code == 200


def test_a_database_that_accepts_but_never_answers(sqlite_demo: DemoSource, tmp_path: Path) -> None:
    """Exports wait out the connect timeout and get 503; health checks meanwhile answer 503
    within a second, many at once, without piling up."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"postgresql://nobody@127.0.0.1:{silent.getsockname()[1]}/platform"
        settings = Settings(
            DATABASE_URL=url, JWT_SECRET=SECRET, data_dir=tmp_path, database_connect_timeout=2
        )
        live = start_server(settings, sqlite_demo)
        try:
            with ThreadPoolExecutor(max_workers=12) as pool:
                exports = [
                    pool.submit(live.export, "learnerId=3", token=live.token(2)) for _ in range(4)
                ]
                checks = [
                    pool.submit(live.client.get, "/healthz", timeout=HEALTH_DEADLINE)
                    for _ in range(8)
                ]
                for check in checks:
                    assert check.result().status_code == 503
                    assert check.result().json() == {"status": "unavailable", "database": False}
                for export in exports:
                    _assert_unavailable(export.result())
            assert _statuses(live) == [503] * 4
        finally:
            live.stop()


@pytest.mark.postgres
def test_a_connection_cut_mid_request_is_503(
    postgres_demo: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a database restart does to a request in flight: its session ends under it (on
    PostgreSQL the endpoint reads through the asyncio engine, `read_request_async`)."""
    real_read_request = serve.read_request_async

    async def cut_then_read(conn: AsyncConnection, *args: Any, **kwargs: Any) -> Any:
        raw = await conn.get_raw_connection()
        pid = raw.driver_connection.info.backend_pid  # type: ignore[union-attr]
        owner = sa.create_engine(
            postgres_demo.owner_url.replace("postgresql:", "postgresql+psycopg:", 1)
        )
        with owner.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        owner.dispose()
        return await real_read_request(conn, *args, **kwargs)

    with own_server(postgres_demo, tmp_path) as live:
        monkeypatch.setattr(serve, "read_request_async", cut_then_read)
        response = live.export(f"learnerId={live.ids.child}", token=live.token(live.ids.admin))
        _assert_unavailable(response)
        monkeypatch.setattr(serve, "read_request_async", real_read_request)
        assert (
            live.export(f"learnerId={live.ids.child}", token=live.token(live.ids.admin)).status_code
            == 200
        )
        assert _statuses(live) == [503, 200]


# --- failures of our own -----------------------------------------------------------------------


def test_a_failure_after_the_first_byte_aborts_the_connection(
    sqlite_demo: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_body = serve.streamed_body

    async def breaks_after_one_piece(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        async for piece in real_body(*args, **kwargs):
            yield piece
            raise RuntimeError("the encoder broke")

    monkeypatch.setattr(serve, "streamed_body", breaks_after_one_piece)
    with own_server(sqlite_demo, tmp_path) as live:
        received = bytearray()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            live.client.stream(
                "GET",
                f"/api/export?learnerId={live.ids.big}",
                headers={"Authorization": f"Bearer {live.token(live.ids.admin)}"},
            ) as response,
        ):
            assert response.status_code == 200  # the headers had gone out
            for piece in response.iter_bytes():
                received += piece
        assert 0 < len(received) < 1_000_000  # some bytes, never the whole document
        served, broken = read_audit(live.settings.audit_log_path)
        assert (served["status"], "complete" in served) == (200, False)
        assert (broken["status"], broken["complete"], broken["sha256"]) == (
            200,
            False,
            served["sha256"],
        )
        assert broken["bytes"] < served["bytes"]
        _wait_until(lambda: _exporter(live).budget.held == 0)  # the broken one gave them back


def test_an_export_beyond_the_workers_byte_budget_is_503_until_bytes_are_given_back(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    with own_server(sqlite_demo, tmp_path, http_bytes_in_flight=1_000_000) as live:
        budget = _exporter(live).budget
        token = live.token(live.ids.admin)
        alone = live.export(f"learnerId={live.ids.big}", token=token)
        assert alone.status_code == 200 and len(alone.content) > 1_000_000  # alone, it is served
        _wait_until(lambda: budget.held == 0)
        assert budget.reserve(999_000)  # a transfer in flight holds nearly all of the budget
        refused = live.export(f"learnerId={live.ids.child}", token=token)
        _assert_unavailable(refused)
        budget.release(999_000)  # that transfer is over
        served = live.export(f"learnerId={live.ids.child}", token=token)
        assert served.status_code == 200
        assert served.content.startswith(b'{"learner":')
        _wait_until(lambda: budget.held == 0)  # given back once the server is done sending
        assert _statuses(live) == [200, 503, 200]


def test_an_unexpected_error_is_a_json_500_audited_and_logged_without_data(
    sqlite_demo: DemoSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_builder(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("Ada Lovelace <ada@example.org>")

    monkeypatch.setattr(serve, "build_document", broken_builder)
    with own_server(sqlite_demo, tmp_path) as live, caplog.at_level(logging.INFO):
        response = live.export(f"learnerId={live.ids.child}", token=live.token(live.ids.admin))
        assert response.status_code == 500
        assert response.json() == {"error": "Internal server error"}
        assert response.headers["cache-control"] == "no-store"
        (line,) = read_audit(live.settings.audit_log_path)
        assert (line["status"], line["userId"], line["learnerId"]) == (
            500,
            live.ids.admin,
            live.ids.child,
        )
    assert "ValueError" in caplog.text
    assert "Ada" not in caplog.text and "example.org" not in caplog.text


def test_a_database_verdict_unlike_ours_is_a_500_and_never_an_export(
    sqlite_demo: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`read_request`'s guard refusing what the server's own checks allow (a fault of ours,
    the two rules parted): no document, a 500, audited."""
    real_read_request = serve.read_request

    def refused_in_sql(*args: Any, **kwargs: Any) -> RequestRows:
        read = real_read_request(*args, **kwargs)
        return RequestRows(users=read.users, allowed=False, learner=None)

    monkeypatch.setattr(serve, "read_request", refused_in_sql)
    with own_server(sqlite_demo, tmp_path) as live:
        response = live.export(f"learnerId={live.ids.child}", token=live.token(live.ids.admin))
        assert response.status_code == 500
        assert response.json() == {"error": "Internal server error"}
        assert _statuses(live) == [500]


# --- the audit log -----------------------------------------------------------------------------


def test_an_export_whose_line_cannot_be_written_is_not_served(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    with own_server(sqlite_demo, tmp_path) as live:
        log = live.settings.audit_log_path
        log.unlink()
        log.mkdir()  # the log replaced by a directory after the server started
        token = live.token(live.ids.admin)
        _assert_unavailable(live.export(f"learnerId={live.ids.child}", token=token))
        assert live.export(f"learnerId={live.ids.child}").status_code == 401  # refusals stand
        log.rmdir()
        assert live.export(f"learnerId={live.ids.child}", token=token).status_code == 200
        assert _statuses(live) == [200]


def test_an_existing_log_is_made_private_at_start(sqlite_demo: DemoSource, tmp_path: Path) -> None:
    log = tmp_path / "data" / "audit.jsonl"
    log.parent.mkdir()
    log.write_bytes(b"")
    log.chmod(0o644)
    with own_server(sqlite_demo, tmp_path) as live:
        assert live.settings.audit_log_path == log
        assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_symbolic_link_at_the_log_path_stops_the_start(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes(b"")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    settings = Settings(
        DATABASE_URL=sqlite_demo.url, JWT_SECRET=SECRET, data_dir=tmp_path, audit_log=link
    )
    args = argparse.Namespace(workers=1, ssl_keyfile=None, ssl_certfile=None, demo=False)
    with pytest.raises(UserError, match=r"audit\.jsonl"):
        prepare(args, settings)


def test_every_request_to_the_application_leaves_one_line(live: LiveServer) -> None:
    """404s, 405s and the trailing-slash path too; the informational routes do not."""
    before = len(read_audit(live.settings.audit_log_path))
    answers = [
        live.client.get("/nowhere"),
        live.client.post("/api/export?learnerId=3"),
        live.client.get("/api/export/?learnerId=3", headers={"Host": "evil.example"}),
        live.client.get("/healthz"),
        live.client.get("/openapi.json"),
    ]
    assert [a.status_code for a in answers] == [404, 405, 404, 200, 200]
    for answer in answers[:3]:
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-store"
        assert "location" not in answer.headers
        assert set(orjson.loads(answer.content)) == {"error"}
    assert [r["status"] for r in read_audit(live.settings.audit_log_path)[before:]] == [
        404,
        405,
        404,
    ]
