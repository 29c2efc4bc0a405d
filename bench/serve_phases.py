#!/usr/bin/env python3
"""Where a typical export's milliseconds go, phase by phase, with and without the source's
indexes by learner.

    .venv/bin/python bench/serve_phases.py [--learners 200] [--requests 300] [--only sqlite]

It builds the demo database (`--learners` learners) on SQLite and on a throwaway PostgreSQL, each
twice: as the demo schema has it, and with the three indexes by learner dropped, as on the
platform's real database (`learner-export indexes`). For each, it runs the endpoint's own steps
for the typical learner (~28 lessons) `--requests` times, in the endpoint's order and with its
functions, and prints each phase's median in ms:

  token     the token checked (VerifiedTokens: the client sends the same token every time)
  checkout  a pooled connection (tested first only if it sat idle over a second)
  window    the rate limit's hint (`has_room`: this worker's last refusal, in memory)
  read      read_request: BEGIN, the accounts, the learner's profile, achievements and lessons,
            COMMIT; on PostgreSQL one round trip, so the reads cannot be timed apart, and, as the
            endpoint does there, on an event loop (read_request_async, the asyncio engine)
  limit     the rate limit's admission (its shared SQLite store, one write transaction)
  build     build_document
  encode    the document's bytes and their sha256, once (EncodedDocument)
  release   the connection back to the pool
  audit     the audit line appended
  stream    the body's pieces (no network)

then the same learner over HTTP from `serve.py` (1 worker, 1 client, keep-alive): the p50 minus
the phases' sum is what uvicorn, FastAPI, the thread hop (SQLite) and loopback cost. It asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _server import serve_py  # noqa: E402
from serve_latency import SECRET, fetch_all  # noqa: E402

import serve  # noqa: E402
from extract.engine import (  # noqa: E402
    SourceTimeouts,
    async_source_connection,
    create_async_source_engine,
    create_source_engine,
    is_postgresql,
    source_connection,
)
from extract.indexes import NEEDED_INDEXES  # noqa: E402
from extract.request_read import read_request, read_request_async  # noqa: E402
from learner_export.demo import build_demo_database, demo_rows  # noqa: E402
from learner_export.ratelimit import RateLimiter  # noqa: E402
from learner_export.tokens import VerifiedTokens, issue_token  # noqa: E402
from load.audit import AuditRecord, append_audit  # noqa: E402
from transform.document import LESSON_CAP, build_document  # noqa: E402

ADMIN = 2
TYPICAL_LESSONS = 28
PHASES = (
    "token", "checkout", "window", "read", "limit", "build", "encode", "release", "audit",
    "stream",
)  # fmt: skip


def typical_learner(learners: int) -> int:
    """The learner whose lesson count is closest to 28 (ties: the lower id)."""
    counts: dict[int, int] = {}
    for lesson in demo_rows(learners=learners, seed=7).lessons:
        counts[lesson["learner_id"]] = counts.get(lesson["learner_id"], 0) + 1
    return min(counts, key=lambda i: (abs(counts[i] - TYPICAL_LESSONS), i))


class _Phases:
    """The timed phases of one request (seconds, by name), and the steps both ways of reading
    share: after the read, the endpoint's steps are the same whether the read was awaited."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def timed(self, name: str, step: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = step()
        self.times[name] = time.perf_counter() - start
        return result

    async def awaited(self, name: str, step: Awaitable[Any]) -> Any:
        start = time.perf_counter()
        result = await step
        self.times[name] = time.perf_counter() - start
        return result

    def admit_and_make(
        self, limiter: RateLimiter, user: int, read: Any
    ) -> tuple[datetime, serve.EncodedDocument]:
        """limit, build and encode, as the endpoint runs them once the rows are read."""
        self.timed("limit", lambda: limiter.admit(user))
        when = datetime.now(UTC)
        built = self.timed(
            "build", lambda: build_document(read.learner, export_date=when, exported_by=user)
        )
        return when, self.timed("encode", lambda: serve.EncodedDocument.of(built))

    def audit(
        self, audit: Path, when: datetime, user: int, learner: int, encoded: serve.EncodedDocument
    ) -> None:
        record = AuditRecord(at=when, via="bench", user_id=user, learner_id=learner, status=200,
                             sha256=encoded.sha256, size=len(encoded.body))  # fmt: skip
        self.timed("audit", lambda: append_audit(audit, record))


def one_request(url_engine: Any, limiter: RateLimiter, tokens: VerifiedTokens, audit: Path,
                token: str, learner: int) -> dict[str, float]:  # fmt: skip
    """The endpoint's steps for one request, each timed (seconds)."""
    phases = _Phases()
    user = phases.timed("token", lambda: tokens.verify(token))
    context = source_connection(url_engine)
    conn = phases.timed("checkout", context.__enter__)
    try:
        phases.timed("window", lambda: limiter.has_room(user))
        read = phases.timed(
            "read", lambda: read_request(conn, user, learner, lesson_limit=LESSON_CAP)
        )
        when, encoded = phases.admit_and_make(limiter, user, read)
    except BaseException:
        context.__exit__(*sys.exc_info())
        raise
    phases.timed("release", lambda: context.__exit__(None, None, None))
    phases.audit(audit, when, user, learner, encoded)
    phases.timed("stream", lambda: _LOOP.run_until_complete(_drain(encoded.body)))
    return phases.times


async def one_request_async(
    engine: Any, limiter: RateLimiter, tokens: VerifiedTokens, audit: Path, token: str,
    learner: int,
) -> dict[str, float]:  # fmt: skip
    """`one_request` as the endpoint runs it on PostgreSQL: checkout, read and release awaited
    on the event loop (`Exporter.decide_async`), the rest as there."""
    phases = _Phases()
    user = phases.timed("token", lambda: tokens.verify(token))
    context = async_source_connection(engine)
    conn = await phases.awaited("checkout", context.__aenter__())
    try:
        phases.timed("window", lambda: limiter.has_room(user))
        read = await phases.awaited(
            "read", read_request_async(conn, user, learner, lesson_limit=LESSON_CAP)
        )
        when, encoded = phases.admit_and_make(limiter, user, read)
    except BaseException:
        await context.__aexit__(*sys.exc_info())
        raise
    await phases.awaited("release", context.__aexit__(None, None, None))
    phases.audit(audit, when, user, learner, encoded)
    await phases.awaited("stream", _drain(encoded.body))
    return phases.times


_LOOP = asyncio.new_event_loop()
"""The loop the body's pieces are drawn on (one for the run: a new loop costs more than they do)."""


async def _drain(body: bytes) -> int:
    transfer = serve.Transfer()
    return sum([len(piece) async for piece in serve.streamed_body(body, gzip=False,
                                                                  transfer=transfer)])  # fmt: skip


def phases(url: str, learner: int, requests: int, work: Path) -> dict[str, float]:
    """The median of each phase over `requests` requests (after a warm-up), in ms."""
    timeouts = SourceTimeouts(pool=5, connect=5, statement=15)
    limiter = RateLimiter(work / "rate.sqlite3", 10**9)
    tokens = VerifiedTokens(SECRET)
    token = issue_token(SECRET, ADMIN, "ADMIN", lifetime=3600)
    audit = work / "audit.jsonl"
    if is_postgresql(url):  # as the endpoint reads PostgreSQL: on the event loop
        async_engine = create_async_source_engine(
            url, timeouts=timeouts, ping_after_idle=serve.PING_AFTER_IDLE_SECONDS
        )

        async def run_all() -> list[dict[str, float]]:
            try:
                for _ in range(20):
                    await one_request_async(async_engine, limiter, tokens, audit, token, learner)
                return [
                    await one_request_async(async_engine, limiter, tokens, audit, token, learner)
                    for _ in range(requests)
                ]
            finally:
                await async_engine.dispose()

        try:
            runs = _LOOP.run_until_complete(run_all())
        finally:
            limiter.close()
        return {name: statistics.median(r[name] for r in runs) * 1000 for name in PHASES}
    engine = create_source_engine(
        url, timeouts=timeouts, ping_after_idle=serve.PING_AFTER_IDLE_SECONDS
    )
    try:
        for _ in range(20):
            one_request(engine, limiter, tokens, audit, token, learner)
        runs = [one_request(engine, limiter, tokens, audit, token, learner)
                for _ in range(requests)]  # fmt: skip
    finally:
        engine.dispose()
        limiter.close()
    return {name: statistics.median(r[name] for r in runs) * 1000 for name in PHASES}


def http_p50(url: str, learner: int, requests: int, data_dir: Path) -> float:
    with serve_py(url, workers=1, data_dir=data_dir, secret=SECRET) as started:
        token = issue_token(SECRET, ADMIN, "ADMIN", lifetime=3600)
        path = f"/api/export?learnerId={learner}"
        fetch_all(started.url, path, token, 20, False)
        latencies, _ = fetch_all(started.url, path, token, requests, False)
    return statistics.median(latencies) * 1000


def drop_indexes_sql() -> list[str]:
    return [f"DROP INDEX IF EXISTS {needed.name}" for needed in NEEDED_INDEXES]


@contextmanager
def sources(only: str | None, base: Path, learners: int) -> Iterator[list[tuple[str, str]]]:
    """(label, reader URL) of each source: with the demo's indexes and without them."""
    found: list[tuple[str, str]] = []
    if only in (None, "sqlite"):
        for label, drop in (("sqlite, indexed", False), ("sqlite, no indexes", True)):
            path = base / f"{'bare' if drop else 'demo'}.sqlite3"
            build_demo_database(f"sqlite:///{path}", learners=learners, seed=7, replace=True)
            if drop:
                with sqlite3.connect(path) as db:
                    for statement in drop_indexes_sql():
                        db.execute(statement)
                db.close()
            found.append((label, f"sqlite:///{path}"))
    cluster = None
    if only in (None, "postgresql"):
        import psycopg

        from tests.pg import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        for label, drop in (("postgresql, indexed", False), ("postgresql, no indexes", True)):
            name = "bare" if drop else "demo"
            owner = cluster.create_database(name)
            build_demo_database(owner, learners=learners, seed=7, replace=False)
            if drop:
                with psycopg.connect(owner.replace("+psycopg", ""), autocommit=True) as db:
                    for statement in drop_indexes_sql():
                        db.execute(statement)  # type: ignore[arg-type]
                    db.execute("VACUUM ANALYZE")
            found.append((label, cluster.grant_reader(name)))
    try:
        yield found
    finally:
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    learner = typical_learner(args.learners)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}; "
          f"{args.learners} learners, typical learner {learner}, {args.requests} requests; "
          "medians in ms", flush=True)  # fmt: skip
    print(f"{'source':<24}" + "".join(f"{p:>9}" for p in PHASES) + f"{'sum':>8}{'HTTP p50':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp:
        base = Path(tmp)
        with sources(args.only, base, args.learners) as found:
            rows_ms: dict[str, float] = {}
            for label, url in found:
                work = base / label.replace(", ", "-").replace(" ", "-")
                work.mkdir()
                medians = phases(url, learner, args.requests, work)
                total = sum(medians.values())
                http = http_p50(url, learner, args.requests, work / "server")
                rows_ms[label] = medians["read"]
                print(f"{label:<24}" + "".join(f"{medians[p]:>9.3f}" for p in PHASES)
                      + f"{total:>8.2f}{http:>10.2f}", flush=True)  # fmt: skip
            for kind in ("sqlite", "postgresql"):
                if f"{kind}, indexed" in rows_ms:
                    ratio = rows_ms[f"{kind}, no indexes"] / rows_ms[f"{kind}, indexed"]
                    print(f"{kind}: the read without the indexes / with: {ratio:.2f}")


if __name__ == "__main__":
    main()
