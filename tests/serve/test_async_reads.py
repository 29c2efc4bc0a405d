"""On PostgreSQL the single-learner routes read on the event loop (`Exporter.decide_async`): the
JSON documents are made there without a worker thread, a big readable page in one, and the rate
limit's refusals still read only the accounts. Real uvicorn, real PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

import serve
from learner_export.settings import Settings
from load.audit import read_audit
from tests.conftest import DemoSource
from tests.serve.conftest import SECRET, selected_tables, start_server
from transform.schema import schema_errors

pytestmark = pytest.mark.postgres


def _lessons_of(source: DemoSource, learner: int) -> int:
    return sum(1 for lesson in source.rows.lessons if lesson["learner_id"] == learner)


def test_documents_are_made_on_the_loop_and_only_a_big_page_in_a_thread(
    postgres_demo: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON, typical or 1,000 lessons, takes no worker thread; a readable page of more than
    INLINE_LESSONS lessons is rendered in one (it would hold the loop for ~160 ms)."""
    settings = Settings(DATABASE_URL=postgres_demo.url, JWT_SECRET=SECRET, data_dir=tmp_path)
    live = start_server(settings, postgres_demo)
    hops: list[str] = []
    real = serve.run_in_threadpool

    async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(serve, "run_in_threadpool", counted)
    token = live.token(live.ids.admin)
    try:
        assert live.server.config.app.state.exporter.async_engine is not None
        assert _lessons_of(postgres_demo, live.ids.child) <= serve.INLINE_LESSONS
        assert _lessons_of(postgres_demo, live.ids.big) > serve.INLINE_LESSONS
        answers = [live.export(f"learnerId={learner}", token=token)
                   for learner in (live.ids.child, live.ids.big)]  # fmt: skip
        assert hops == []
        small_page = live.client.get(
            f"{serve.VIEW_PATH}?learnerId={live.ids.child}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert hops == []
        big_page = live.client.get(
            f"{serve.VIEW_PATH}?learnerId={live.ids.big}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert hops == ["_encoded"]
    finally:
        live.stop()
    for response, learner in zip(answers, (live.ids.child, live.ids.big), strict=True):
        assert response.status_code == 200
        document = orjson.loads(response.content)
        assert schema_errors(document) == [] and document["learner"]["id"] == learner
    for page in (small_page, big_page):
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_a_request_over_the_limit_reads_only_the_accounts(
    postgres_demo: DemoSource, tmp_path: Path
) -> None:
    """PostgreSQL's version of the SQLite test in test_serve.py: after the worker's first
    refusal, each 429 reads `users` alone (through SQLAlchemy, so its events see it; the
    pipelined reads of an export go past them)."""
    settings = Settings(
        DATABASE_URL=postgres_demo.url,
        JWT_SECRET=SECRET,
        data_dir=tmp_path,
        exports_per_minute=1,
    )
    live = start_server(settings, postgres_demo)
    try:
        engine = live.server.config.app.state.exporter.async_engine
        tables = selected_tables(engine.sync_engine)
        token = live.token(live.ids.admin)
        assert live.export(f"learnerId={live.ids.child}", token=token).status_code == 200
        assert live.export(f"learnerId={live.ids.child}", token=token).status_code == 429
        assert tables == []  # both read in one pipeline each
        for _ in range(3):
            tables.clear()
            assert live.export(f"learnerId={live.ids.child}", token=token).status_code == 429
            assert tables == ["users"]
    finally:
        live.stop()


def test_a_busy_rate_limit_store_never_holds_the_loop(
    postgres_demo: DemoSource, tmp_path: Path
) -> None:
    """Another process holding the rate limit's store (here for 1.5 s): the export's decision
    waits in a worker thread, not on the event loop, so the server answers `/healthz` meanwhile;
    then the export is served, counted and audited once."""
    settings = Settings(DATABASE_URL=postgres_demo.url, JWT_SECRET=SECRET, data_dir=tmp_path)
    live = start_server(settings, postgres_demo)
    token = live.token(live.ids.admin)
    try:
        assert live.export(f"learnerId={live.ids.child}", token=token).status_code == 200
        store = sqlite3.connect(settings.rate_limit_path, isolation_level=None,
                                check_same_thread=False)  # fmt: skip
        store.execute("BEGIN IMMEDIATE")
        release = threading.Timer(1.5, lambda: store.execute("ROLLBACK"))
        with ThreadPoolExecutor(max_workers=1) as pool:
            started = time.monotonic()
            release.start()
            pending = pool.submit(live.export, f"learnerId={live.ids.child}", token=token)
            time.sleep(0.3)  # the export is waiting for the store by now
            health = live.client.get("/healthz", timeout=5)
            health_took = time.monotonic() - started
            answer = pending.result(timeout=30)
        release.join()
        store.close()
    finally:
        live.stop()
    assert health.status_code == 200 and health_took < 1.2  # the lock lasts 1.5 s
    assert answer.status_code == 200
    assert orjson.loads(answer.content)["learner"]["id"] == live.ids.child
    records = read_audit(settings.audit_log_path)
    assert [r["status"] for r in records] == [200, 200]
    admitted = sqlite3.connect(settings.rate_limit_path).execute("SELECT count(*) FROM admitted")
    assert admitted.fetchone()[0] == 2
