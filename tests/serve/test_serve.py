"""The endpoint over real HTTP: success headers, the body against the CLI's file, gzip, streaming,
the audit log, the rate limit, /healthz, the framework's own errors and the OpenAPI document."""

from __future__ import annotations

import gzip
import hashlib
import re
import stat
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from learner_export.cli import main as cli_main
from learner_export.processes import free_port
from learner_export.settings import Settings
from load.audit import read_audit
from tests.conftest import DemoSource
from tests.serve.conftest import SECRET, LiveServer, ServerPool, selected_tables, start_server
from transform.schema import schema_errors

_TAIL = re.compile(rb',"exportDate":"[^"]*","exportedBy":(?:null|[0-9]+)\}\Z')


def _without_export_fields(body: bytes) -> bytes:
    """The document's bytes with `exportDate` and `exportedBy` (always last) cut off."""
    stripped, count = _TAIL.subn(b"}", body)
    assert count == 1
    return stripped


def _export_day(document: bytes) -> str:
    """The UTC date (YYYY-MM-DD) of the document's own exportDate: what its file name must say,
    read from the export itself, so a run across midnight cannot make a test disagree with it."""
    export_date: str = orjson.loads(document)["exportDate"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", export_date)
    return export_date[:10]


AUDIT_POLLS = 3_000
"""How often `_audit_records` looks (every 10 ms): far more than a line ever takes to appear."""


def _audit_records(
    live: LiveServer, before: int, count: int, *, learner_id: int | None = None
) -> list[dict[str, Any]]:
    """The audit records after the first `before` (only those of `learner_id`, if given), once
    there are `count` of them. A streamed export's line is written when its transfer is over,
    which can be just after the client has read the last byte: wait for the lines, not for a
    time."""
    for _ in range(AUDIT_POLLS):
        records = [
            r
            for r in read_audit(live.settings.audit_log_path)[before:]
            if learner_id is None or r["learnerId"] == learner_id
        ]
        if len(records) >= count:
            return records
        time.sleep(0.01)
    pytest.fail(f"{count} audit lines expected, {len(records)} written")


@pytest.mark.parametrize("who", ["admin", "parent"])
def test_success_has_the_contract_headers(live: LiveServer, who: str) -> None:
    ids = live.ids
    response = live.export(f"learnerId={ids.child}", token=live.token(getattr(ids, who)))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="learner-data-{ids.child}-{_export_day(response.content)}.json"'
    )
    assert response.headers["cache-control"] == "no-store"
    document = orjson.loads(response.content)
    assert document["exportedBy"] == getattr(ids, who)
    assert document["learner"]["id"] == ids.child
    assert "password" not in document["learner"]
    assert schema_errors(document) == []


@pytest.mark.parametrize("learner", ["child", "big", "orphan"])
def test_body_is_the_cli_file_byte_for_byte(
    live: LiveServer, learner: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    learner_id = getattr(live.ids, learner)
    response = live.export(f"learnerId={learner_id}", token=live.token(live.ids.admin))
    assert response.status_code == 200
    code = cli_main(
        ["export", str(learner_id), "--out", str(tmp_path), "--database-url", live.source.url]
    )
    assert code == 0
    (written,) = tmp_path.iterdir()
    assert written.name == f"learner-data-{learner_id}-{_export_day(written.read_bytes())}.json"
    assert _without_export_fields(response.content) == _without_export_fields(written.read_bytes())


def test_the_big_learner_is_capped_and_streamed(live: LiveServer) -> None:
    token = live.token(live.ids.admin)
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    with live.client.stream(
        "GET", f"/api/export?learnerId={live.ids.big}", headers=headers
    ) as response:
        assert response.status_code == 200
        # Streamed: no length announced up front, the body arrives in several pieces.
        assert "content-length" not in response.headers
        assert response.headers["transfer-encoding"] == "chunked"
        pieces = list(response.iter_raw())
    assert len(pieces) > 1
    document = orjson.loads(b"".join(pieces))
    assert len(document["lessons"]) == 1000


def test_gzip_when_the_client_accepts_it(live: LiveServer) -> None:
    token = live.token(live.ids.admin)
    plain = live.export(
        f"learnerId={live.ids.big}", token=token, headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    with live.client.stream(
        "GET",
        f"/api/export?learnerId={live.ids.big}",
        headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"},
    ) as response:
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["vary"] == "Accept-Encoding"
        compressed = b"".join(response.iter_raw())
    assert len(compressed) < len(plain.content) / 2
    assert _without_export_fields(gzip.decompress(compressed)) == _without_export_fields(
        plain.content
    )


def test_gzip_refused_with_q_zero(live: LiveServer) -> None:
    response = live.export(
        f"learnerId={live.ids.child}",
        token=live.token(live.ids.admin),
        headers={"Accept-Encoding": "gzip;q=0, identity"},
    )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers


def test_every_attempt_is_audited(server_pool: ServerPool, demo_source: DemoSource) -> None:
    live = server_pool.get(demo_source, exports_per_minute=999_999)  # a server of its own
    log = live.settings.audit_log_path
    before = len(read_audit(log))
    served = live.export(f"learnerId={live.ids.child}", token=live.token(live.ids.parent))
    live.export(f"learnerId={live.ids.other_child}", token=live.token(live.ids.parent))
    live.export("learnerId=abc", token=live.token(live.ids.admin))
    live.export(f"learnerId={live.ids.child}")
    # One line per request; the 200's line may come after the next request's (see above).
    records = sorted(_audit_records(live, before, 4), key=lambda r: r["status"])
    assert [(r["status"], r["userId"], r["learnerId"]) for r in records] == [
        (200, live.ids.parent, live.ids.child),
        (400, live.ids.admin, None),
        (401, None, live.ids.child),
        (403, live.ids.parent, live.ids.other_child),
    ]
    first = records[0]
    assert first["sha256"] == hashlib.sha256(served.content).hexdigest()
    assert first["bytes"] == len(served.content)
    assert "complete" not in first  # written before the first byte; only a broken transfer notes it
    assert first["truncated"] is False
    assert all("sha256" not in r for r in records[1:])
    assert len(read_audit(log)) == before + 4
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # Ids, statuses and counts only: none of the demo people's names or addresses.
    text = log.read_text()
    for user in live.source.rows.users:
        for key in ("username", "email", "name"):
            if user[key]:
                assert user[key] not in text


def test_truncation_is_recorded_in_the_audit_log(live: LiveServer) -> None:
    before = len(read_audit(live.settings.audit_log_path))
    live.export(f"learnerId={live.ids.big}", token=live.token(live.ids.admin))
    (record,) = _audit_records(live, before, 1, learner_id=live.ids.big)
    assert (record["learnerId"], record["lessonsExported"], record["lessonsTotal"]) == (
        live.ids.big,
        1000,
        1050,
    )
    assert record["truncated"] is True


def test_rate_limit_answers_429_with_retry_after(
    server_pool: ServerPool, demo_source: DemoSource
) -> None:
    live = server_pool.get(demo_source, exports_per_minute=2)
    before = len(read_audit(live.settings.audit_log_path))
    token = live.token(live.ids.admin)
    statuses = [live.export(f"learnerId={live.ids.child}", token=token) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    refused = statuses[-1]
    assert orjson.loads(refused.content) == {"error": "Too many requests"}
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Per user: the parent still has their own allowance.
    other = live.export(f"learnerId={live.ids.child}", token=live.token(live.ids.parent))
    assert other.status_code == 200
    records = _audit_records(live, before, 4)
    assert sorted((r["status"], r["userId"]) for r in records) == sorted(
        [(200, live.ids.admin), (200, live.ids.admin), (429, live.ids.admin),
         (200, live.ids.parent)]
    )  # fmt: skip


def test_over_the_limit_a_learner_still_hears_403_and_refusals_count(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    settings = Settings(
        DATABASE_URL=sqlite_demo.url, JWT_SECRET=SECRET, data_dir=tmp_path, exports_per_minute=2
    )
    live = start_server(settings, sqlite_demo)
    try:
        ids = live.ids
        learner = live.token(ids.child, role="LEARNER")
        assert [live.export(f"learnerId={ids.child}", token=learner).status_code
                for _ in range(4)] == [403] * 4  # fmt: skip
        parent = live.token(ids.parent, role="PARENT")
        # A parent probing another family's child is refused, and each probe counts.
        assert live.export(f"learnerId={ids.other_child}", token=parent).status_code == 403
        assert live.export("learnerId=abc", token=parent).status_code == 400
        over = live.export(f"learnerId={ids.child}", token=parent)
        assert over.status_code == 429
        assert orjson.loads(over.content) == {"error": "Too many requests"}
        assert [r["status"] for r in read_audit(settings.audit_log_path)] == [
            403, 403, 403, 403, 403, 400, 429,
        ]  # fmt: skip
    finally:
        live.stop()


def test_a_request_over_the_limit_reads_no_row_of_the_learner(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    """Once this worker has refused the requester, only the accounts are read before each
    429 until its Retry-After is over."""
    settings = Settings(
        DATABASE_URL=sqlite_demo.url, JWT_SECRET=SECRET, data_dir=tmp_path, exports_per_minute=1
    )
    live = start_server(settings, sqlite_demo)
    try:
        tables = selected_tables(live.server.config.app.state.exporter.engine)
        token = live.token(live.ids.admin)
        assert live.export(f"learnerId={live.ids.big}", token=token).status_code == 200
        assert sorted(tables) == ["achievements", "learner_profiles", "lessons", "users"]
        tables.clear()
        assert live.export(f"learnerId={live.ids.big}", token=token).status_code == 429
        assert len(tables) == 4  # the first refusal: read in full, then refused
        for _ in range(3):
            tables.clear()
            assert live.export(f"learnerId={live.ids.big}", token=token).status_code == 429
            assert tables == ["users"]
    finally:
        live.stop()


def test_a_place_that_opens_after_the_window_was_seen_full_is_served(
    sqlite_demo: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`has_room` is a hint: admitted after it said no, the request is read in full and
    served, and counted once."""
    settings = Settings(
        DATABASE_URL=sqlite_demo.url, JWT_SECRET=SECRET, data_dir=tmp_path, exports_per_minute=2
    )
    live = start_server(settings, sqlite_demo)
    try:
        exporter = live.server.config.app.state.exporter
        monkeypatch.setattr(exporter.limiter, "has_room", lambda _user_id: False)
        tables = selected_tables(exporter.engine)
        token = live.token(live.ids.admin)
        response = live.export(f"learnerId={live.ids.child}", token=token)
        assert response.status_code == 200
        document = orjson.loads(response.content)
        assert schema_errors(document) == [] and document["learner"]["id"] == live.ids.child
        assert tables[0] == "users" and sorted(tables[1:]) == [
            "achievements", "learner_profiles", "lessons", "users",
        ]  # fmt: skip
        monkeypatch.undo()
        assert live.export(f"learnerId={live.ids.child}", token=token).status_code == 200
        assert live.export(f"learnerId={live.ids.child}", token=token).status_code == 429
    finally:
        live.stop()


def test_healthz_reports_a_reachable_database(live: LiveServer) -> None:
    response = live.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": True}


def test_unreachable_database_is_503_not_500(sqlite_demo: DemoSource, tmp_path: Path) -> None:
    settings = Settings(
        DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/nothing",
        JWT_SECRET=SECRET,
        data_dir=tmp_path,
    )
    live = start_server(settings, sqlite_demo)
    try:
        health = live.client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "database": False}
        response = live.export("learnerId=3", token=live.token(2))
        assert response.status_code == 503
        assert response.json() == {"error": "Service unavailable"}
        assert response.headers["retry-after"] == "5"
        assert read_audit(settings.audit_log_path)[-1]["status"] == 503
    finally:
        live.stop()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("POST", "/api/export?learnerId=3", 405), ("GET", "/docs", 404)],
)
def test_framework_errors_are_json_too(
    live: LiveServer, method: str, path: str, status: int
) -> None:
    response = live.client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}


def test_openapi_describes_the_endpoint(live: LiveServer) -> None:
    spec = live.client.get("/openapi.json").json()
    operation = spec["paths"]["/api/export"]["get"]
    (parameter,) = operation["parameters"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == (
        "learnerId",
        "query",
        True,
    )
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "429", "503"}
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    unavailable = operation["responses"]["503"]
    assert "Retry-After" in unavailable["headers"]
    for cause in ("database", "audit line", "rate limit", "bytes in flight"):
        assert cause in unavailable["description"]
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    assert {"in": "cookie", "name": "token"}.items() <= next(
        s for s in schemes.values() if s["type"] == "apiKey"
    ).items()
    assert len(operation["security"]) == 2  # either scheme
    assert "LearnerDocument" in spec["components"]["schemas"]
    assert "#/$defs/" not in orjson.dumps(spec).decode()


def test_an_export_reads_each_table_once(sqlite_demo: DemoSource, tmp_path: Path) -> None:
    """SQLite: every statement goes through SQLAlchemy's events, lessons included."""
    settings = Settings(DATABASE_URL=sqlite_demo.url, JWT_SECRET=SECRET, data_dir=tmp_path)
    live = start_server(settings, sqlite_demo)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    try:
        engine = live.server.config.app.state.exporter.engine
        sa.event.listen(engine, "before_cursor_execute", record)
        response = live.export(f"learnerId={live.ids.big}", token=live.token(live.ids.admin))
        assert response.status_code == 200
    finally:
        live.stop()
    # The table each statement reads (the first FROM; the others are the guard's `users`).
    read = [re.findall(r"\bFROM\s+(\w+)", s)[0] for s in statements]
    assert sorted(read) == ["achievements", "learner_profiles", "lessons", "users"]
