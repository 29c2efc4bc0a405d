"""/api/export/view and /api/export/family over real HTTP: every status, the page's headers, the
bundle's members against /api/export byte for byte, and the audit lines (one per child)."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import sqlite3
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from load.audit import read_audit
from tests.conftest import DemoSource
from tests.serve.conftest import LiveServer, ServerPool
from transform.page_html import CSP

_TAIL = re.compile(rb',"exportDate":"[^"]*","exportedBy":(?:null|[0-9]+)\}\Z')


def _without_export_date(body: bytes) -> bytes:
    stripped, count = _TAIL.subn(b"}", body)
    assert count == 1
    return stripped


def _get(live: LiveServer, path: str, query: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return live.client.get(f"{path}?{query}" if query else path, headers=headers)


def _records(live: LiveServer, before: int, count: int) -> list[dict[str, Any]]:
    """The audit records after the first `before`, once there are `count` (a streamed answer's
    lines may land just after the client read its last byte: wait for lines, not for a time)."""
    for _ in range(3_000):
        records = read_audit(live.settings.audit_log_path)[before:]
        if len(records) >= count:
            return records
        time.sleep(0.01)
    pytest.fail(f"{count} audit lines expected")


def test_view_is_the_page_of_the_same_document(live: LiveServer) -> None:
    ids = live.ids
    before = len(read_audit(live.settings.audit_log_path))
    page = _get(live, "/api/export/view", f"learnerId={ids.child}", live.token(ids.parent))
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["content-disposition"].startswith(
        f'inline; filename="learner-data-{ids.child}-'
    )
    html = page.text
    assert f'content="{CSP.replace(chr(39), "&#x27;")}"' in html
    assert "<script" not in html.lower()
    # Rendered from the document /api/export serves: its lesson ids and scores are on the page.
    document = orjson.loads(
        _get(live, "/api/export", f"learnerId={ids.child}", live.token(ids.admin)).content
    )
    assert (
        f"You finished {sum(x['status'] == 'DONE' for x in document['lessons'])} lessons." in html
    )
    (record, *_) = _records(live, before, 1)
    assert (record["status"], record["userId"], record["learnerId"]) == (200, ids.parent, ids.child)
    assert record["sha256"] == hashlib.sha256(page.content).hexdigest()


def test_view_refuses_as_the_export_does(live: LiveServer) -> None:
    ids = live.ids
    cases = [
        ("", None, 401, "Unauthorized"),
        (f"learnerId={ids.child}", live.token(ids.child, "LEARNER"), 403, "Forbidden"),
        ("", live.token(ids.admin), 400, "learnerId is required"),
        (f"learnerId={ids.other_child}", live.token(ids.parent, "PARENT"), 403, "Forbidden"),
        (f"learnerId={ids.missing}", live.token(ids.admin), 404, "Learner not found"),
    ]
    before = len(read_audit(live.settings.audit_log_path))
    for query, token, status, error in cases:
        answer = _get(live, "/api/export/view", query, token)
        assert (answer.status_code, answer.json()) == (status, {"error": error})
    statuses = [r["status"] for r in _records(live, before, len(cases))]
    assert sorted(statuses) == sorted(status for _, _, status, _ in cases)


def test_the_family_zip_holds_each_childs_export(live: LiveServer) -> None:
    ids = live.ids
    before = len(read_audit(live.settings.audit_log_path))
    answer = _get(live, "/api/export/family", "", live.token(ids.parent, "PARENT"))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"].startswith('attachment; filename="family-data-1-')
    bundle = zipfile.ZipFile(io.BytesIO(answer.content))
    assert bundle.testzip() is None
    manifest = orjson.loads(bundle.read("manifest.json"))
    children = sorted(u["id"] for u in live.source.rows.users if u["parent_id"] == ids.parent)
    assert manifest["children"] == children
    for member in manifest["members"]:
        data = bundle.read(member["name"])
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (member["sha256"], member["bytes"])
    for child in children:
        (name,) = [
            n
            for n in bundle.namelist()
            if n.startswith(f"learner-data-{child}-") and n.endswith(".json")
        ]
        single = _get(live, "/api/export", f"learnerId={child}", live.token(ids.parent, "PARENT"))
        assert _without_export_date(bundle.read(name)) == _without_export_date(single.content)
        assert name.removesuffix(".json") + ".html" in bundle.namelist()
    notice = orjson.loads(bundle.read("notice.json"))
    assert notice["controller"] == "not configured by the operator"
    assert any(left["where"] == "users.password" for left in notice["leftOut"])
    # One line per child, written before the first byte (so before the single exports' lines).
    served = _records(live, before, len(children))[: len(children)]
    assert [(r["status"], r["userId"], r["learnerId"]) for r in served] == [
        (200, ids.parent, child) for child in children
    ]
    documents = {m["learnerId"]: m for m in manifest["members"] if m["name"].endswith(".json")}
    assert all(r["sha256"] == documents[r["learnerId"]]["sha256"] for r in served)


def test_family_refusals(live: LiveServer) -> None:
    ids = live.ids
    cases = [
        ("", None, 401, "Unauthorized"),
        ("", live.token(ids.child, "LEARNER"), 403, "Forbidden"),
        ("", live.token(ids.admin), 400, "parentId is required"),
        ("parentId=01", live.token(ids.admin), 400, None),
        ("parentId=1&parentId=1", live.token(ids.admin), 400, "parentId must be given only once"),
        (f"parentId={ids.other_parent}", live.token(ids.parent, "PARENT"), 403, "Forbidden"),
        (f"parentId={ids.child}", live.token(ids.admin), 404, "Parent not found"),
        (f"parentId={ids.missing}", live.token(ids.admin), 404, "Parent not found"),
    ]
    before = len(read_audit(live.settings.audit_log_path))
    for query, token, status, error in cases:
        answer = _get(live, "/api/export/family", query, token)
        assert answer.status_code == status, query
        body = answer.json()
        assert body == {"error": error} if error else "parentId" in body["error"]
    statuses = [r["status"] for r in _records(live, before, len(cases))]
    assert sorted(statuses) == sorted(status for _, _, status, _ in cases)


def test_a_parent_without_children_gets_404(
    server_pool: ServerPool, sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    copy = tmp_path / "demo.sqlite3"
    shutil.copyfile(sqlite_demo.url.removeprefix("sqlite:///"), copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("INSERT INTO users (id, role) VALUES (900, 'PARENT')")
    source = replace(sqlite_demo, url=f"sqlite:///{copy}", owner_url=f"sqlite:///{copy}")
    live = server_pool.get(source)
    for token, query in (
        (live.token(900, "PARENT"), ""),
        (live.token(live.ids.admin), "parentId=900"),
    ):
        answer = _get(live, "/api/export/family", query, token)
        assert (answer.status_code, answer.json()) == (404, {"error": "No children found"})


def test_family_rate_limit_counts_with_the_exports(
    server_pool: ServerPool, demo_source: DemoSource
) -> None:
    # A limit no other test uses: a server of its own, whose parent's allowance is all its own
    # (the pool keeps servers for the session, and their rate-limit stores with them).
    live = server_pool.get(demo_source, exports_per_minute=3)
    token = live.token(live.ids.parent, "PARENT")
    assert _get(live, "/api/export", f"learnerId={live.ids.child}", token).status_code == 200
    assert _get(live, "/api/export/view", f"learnerId={live.ids.child}", token).status_code == 200
    assert _get(live, "/api/export", f"learnerId={live.ids.child}", token).status_code == 200
    refused = _get(live, "/api/export/family", "", token)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
