#!/usr/bin/env python3
"""Latency and throughput of GET /api/export against a running server.

    .venv/bin/python bench/serve_latency.py        # SQLite and PostgreSQL, 1 and 2 workers
    .venv/bin/python bench/serve_latency.py --only sqlite --workers 1
    .venv/bin/python bench/serve_latency.py --url http://127.0.0.1:8000 --token "$ADMIN_TOKEN" \\
        --big 4 --typical 9                                 # a server you started yourself

By default it builds the demo database (on SQLite, and on a throwaway PostgreSQL cluster when the
server binaries exist), starts `python serve.py` against each on a free loopback port, and
measures two learners: the demo's 1,000-lesson learner (id 4) and the demo learner whose lesson
count is closest to 28 (the platform's "typical" figure). Each is asked for by one client, then by
8 concurrent clients (keep-alive connections, no compression unless --gzip). It prints p50/p95/p99
latency and requests per second; it asserts nothing.

With `--baseline REV`, the server of that commit (`git archive`, run with this environment) is
measured first, in the same run, on the same databases, and each line of ours is followed by the
ratio of our p50 to the baseline's and of our requests/s to its. With `--paired` too, both servers
run at once and are measured side by side (1 client: in turns of 40 requests; 8 clients: in
alternating rounds), so that both see the same machine.

The bar (issue 14): the platform's own Node server, measured by the issue beside ours on the same
PostgreSQL data (it is not available here), at 1 client: a ~28-lesson learner (150 KB) 7-8 ms
p50, the 1,000-lesson learner (5.8 MB) 100-117 ms; at 8 clients 193 and 9 requests/s. The
target is a third of Node's p50 at 1 client: typical <= 2.5 ms, big <= 40 ms.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from _server import serve_py  # noqa: E402

from learner_export.demo import build_demo_database, demo_rows  # noqa: E402
from learner_export.tokens import issue_token  # noqa: E402

SECRET = "bench-secret-" + "0123456789abcdef" * 3
BIG_LEARNER = 4
TYPICAL_LESSONS = 28
TARGET_P50_MS = {"typical": 2.5, "1,000 lessons": 40.0}
"""A third of the Node server's p50 at 1 client (issue 14)."""


@dataclass(frozen=True)
class Result:
    label: str
    clients: int
    latencies: list[float]
    elapsed: float
    body_bytes: int

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.elapsed

    def line(self) -> str:
        ms = sorted(x * 1000 for x in self.latencies)
        q = statistics.quantiles(ms * 2 if len(ms) == 1 else ms, n=100, method="inclusive")
        return (
            f"{self.label:<40} {self.clients:>2} clients  {self.body_bytes / 1e6:6.2f} MB  "
            f"p50 {q[49]:7.2f} ms  p95 {q[94]:7.2f} ms  p99 {q[98]:7.2f} ms  "
            f"{self.per_second:7.1f} req/s"
        )


def typical_learner() -> int:
    """The demo learner whose lesson count is closest to 28 (ties: the lower id)."""
    rows = demo_rows()
    counts: dict[int, int] = {}
    for lesson in rows.lessons:
        counts[lesson["learner_id"]] = counts.get(lesson["learner_id"], 0) + 1
    return min(counts, key=lambda i: (abs(counts[i] - TYPICAL_LESSONS), i))


class Client:
    """One keep-alive connection to a server, sending GETs with the token."""

    def __init__(self, url: str, token: str, gzip: bool) -> None:
        parts = urlsplit(url)
        conn_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self.conn = conn_class(parts.hostname or "127.0.0.1", parts.port, timeout=120)
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Accept-Encoding": "gzip" if gzip else "identity",
        }

    def get(self, path: str) -> tuple[float, int]:
        """One GET of `path`: its latency (s) and body size; exits unless it answered 200."""
        start = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        latency = time.perf_counter() - start
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}: {body[:200]!r}")
        return latency, len(body)

    def close(self) -> None:
        self.conn.close()


def fetch_all(url: str, path: str, token: str, count: int, gzip: bool) -> tuple[list[float], int]:
    """`count` sequential GETs on one keep-alive connection; latencies and the last body size."""
    client = Client(url, token, gzip)
    latencies: list[float] = []
    size = 0
    try:
        for _ in range(count):
            latency, size = client.get(path)
            latencies.append(latency)
    finally:
        client.close()
    return latencies, size


def measure(
    url: str, learner: int, token: str, *, clients: int, requests: int, gzip: bool, label: str
) -> Result:
    path = f"/api/export?learnerId={learner}"
    fetch_all(url, path, token, 3, gzip)  # warm up: connections, caches, pools
    per_client = max(1, requests // clients)
    results: list[tuple[list[float], int]] = []
    lock = threading.Lock()

    errors: list[BaseException] = []

    def client() -> None:
        try:
            outcome = fetch_all(url, path, token, per_client, gzip)
        except BaseException as exc:  # reported below, after every thread has ended
            errors.append(exc)
            return
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{label}: a client failed: {errors[0]!r}")
    latencies = [x for lat, _ in results for x in lat]
    return Result(label, clients, latencies, elapsed, results[0][1])


@contextmanager
def sources(only: str | None, base: Path) -> Iterator[list[tuple[str, str]]]:
    """(kind, URL) of each demo database to measure; PostgreSQL via the test suite's cluster."""
    found: list[tuple[str, str]] = []
    if only in (None, "sqlite"):
        url = f"sqlite:///{base / 'demo.sqlite3'}"
        build_demo_database(url, learners=12, seed=7, replace=True)
        found.append(("sqlite", url))
    cluster = None
    if only in (None, "postgresql"):
        from tests.pg import PostgresCluster, PostgresUnavailable

        try:
            cluster = PostgresCluster()
            cluster.start()
            owner = cluster.create_database("bench")
            build_demo_database(owner, learners=12, seed=7, replace=False)
            found.append(("postgresql", cluster.grant_reader("bench")))
        except PostgresUnavailable as exc:
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
            cluster = None
    try:
        yield found
    finally:
        if cluster is not None:
            cluster.stop()


def run_suite(
    url: str,
    token: str,
    big: int,
    typical: int,
    args: argparse.Namespace,
    tag: str,
    baseline: dict[tuple[str, int], Result] | None = None,
) -> dict[tuple[str, int], Result]:
    """Measure both learners at 1 and 8 clients; print each line (and, given the `baseline`'s
    results, the ratios to them) and return the results by (learner name, clients)."""
    results = {}
    for learner, name, requests in (
        (big, "1,000 lessons", args.big_requests),
        (typical, "typical", args.typical_requests),
    ):
        for clients in (1, 8):
            result = measure(
                url, learner, token, clients=clients, requests=requests, gzip=args.gzip,
                label=f"{tag} {name} (id {learner})",
            )  # fmt: skip
            results[name, clients] = result
            print(result.line(), flush=True)
            if baseline is not None:
                before = baseline[name, clients]
                print(f"{'':<40} {'':>10}  p50 {result.p50_ms / before.p50_ms:.2f} x baseline, "
                      f"req/s {result.per_second / before.per_second:.2f} x baseline", flush=True)  # fmt: skip
            if clients == 1:
                target = TARGET_P50_MS[name]
                verdict = "met" if result.p50_ms <= target else "NOT met"
                print(f"{'':<40} {'':>10}  target p50 <= {target:g} ms: {verdict}", flush=True)
    return results


PAIRED_ROUNDS = 4
"""--paired, 8 clients: each server gets this many turns of a quarter of the requests."""
PAIRED_BLOCK = 40
"""--paired, 1 client: requests in a row to one server before the turn passes. Not one each:
a server that sat idle while the other answered has cold caches, and alternating request by
request measured that (both p50s higher than in turns, up to a third, and their ratio gone),
not the one client's steady keep-alive use the targets are about."""


def run_paired(
    urls: tuple[str, str],
    tags: tuple[str, str],
    token: str,
    big: int,
    typical: int,
    args: argparse.Namespace,
) -> None:
    """Both servers (baseline, this tree) measured side by side: at 1 client, in turns of
    PAIRED_BLOCK requests (ABBA), each over its own keep-alive connection; at 8 clients, in
    alternating rounds. Whatever the machine does meanwhile, both see it, so their ratio holds where the
    absolute figures drift (on this machine the p50 of one client moves by half between runs
    minutes apart). Prints the same lines as `run_suite`, then each ratio."""
    for learner, name, requests in (
        (big, "1,000 lessons", args.big_requests),
        (typical, "typical", args.typical_requests),
    ):
        path = f"/api/export?learnerId={learner}"
        for url in urls:
            fetch_all(url, path, token, 3, args.gzip)  # warm up, as `measure` does
        clients = [Client(url, token, args.gzip) for url in urls]
        latencies: tuple[list[float], list[float]] = ([], [])
        sizes = [0, 0]
        elapsed = [0.0, 0.0]
        try:
            for turn in range(2 * requests):
                block = turn // PAIRED_BLOCK
                which = block % 2 if (block // 2) % 2 == 0 else 1 - block % 2  # ABBA by block
                if turn % PAIRED_BLOCK == 0:
                    # Idle through the other's turns, the connection may have outlived the
                    # server's keep-alive timeout (5 s): a new one, made by this request.
                    clients[which].close()
                latency, sizes[which] = clients[which].get(path)
                latencies[which].append(latency)
                elapsed[which] += latency
        finally:
            for client in clients:
                client.close()
        one = [Result(f"{tags[i]} {name} (id {learner})", 1, latencies[i], elapsed[i], sizes[i])
               for i in (0, 1)]  # fmt: skip
        eight_latencies: tuple[list[float], list[float]] = ([], [])
        eight_elapsed = [0.0, 0.0]
        for _ in range(PAIRED_ROUNDS):
            for i, url in enumerate(urls):
                part = measure(url, learner, token, clients=8, gzip=args.gzip, label="",
                               requests=max(8, requests // PAIRED_ROUNDS))  # fmt: skip
                eight_latencies[i].extend(part.latencies)
                eight_elapsed[i] += part.elapsed
        eight = [Result(one[i].label, 8, eight_latencies[i], eight_elapsed[i], sizes[i])
                 for i in (0, 1)]  # fmt: skip
        for results in (one, eight):
            before, after = results
            print(before.line(), flush=True)
            print(after.line(), flush=True)
            print(f"{'':<40} {'':>10}  p50 {after.p50_ms / before.p50_ms:.2f} x baseline, "
                  f"req/s {after.per_second / before.per_second:.2f} x baseline", flush=True)  # fmt: skip
            if results is one:
                target = TARGET_P50_MS[name]
                for tag, result in zip(tags, results, strict=True):
                    verdict = "met" if result.p50_ms <= target else "NOT met"
                    print(f"{'':<40} {'':>10}  {tag.split(maxsplit=2)[2]}: target p50 <= "
                          f"{target:g} ms: {verdict}", flush=True)  # fmt: skip


def checkout(revision: str, into: Path) -> Path:
    """The tree of `revision` (this repository's), unpacked into `into`: the baseline server."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--token", help="with --url: an ADMIN token for it")
    parser.add_argument("--big", type=int, default=BIG_LEARNER, help="the 1,000-lesson learner")
    parser.add_argument("--typical", type=int, help="a typical learner (default: ~28 lessons)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="one database only")
    parser.add_argument("--workers", default="1,2", help="server workers to try (default 1,2)")
    parser.add_argument("--big-requests", type=int, default=80)
    parser.add_argument("--typical-requests", type=int, default=800)
    parser.add_argument("--gzip", action="store_true", help="ask for gzip (default: identity)")
    parser.add_argument("--baseline", metavar="REV", help="measure this commit's server first")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="with --baseline: run both servers at once and alternate between them",
    )
    args = parser.parse_args()
    if args.paired and not args.baseline:
        raise SystemExit("--paired needs --baseline")
    typical = args.typical or typical_learner()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}; "
          f"encoding: {'gzip' if args.gzip else 'identity'}", flush=True)  # fmt: skip
    if args.url:
        if not args.token:
            raise SystemExit("--url needs --token")
        run_suite(args.url, args.token, args.big, typical, args, "server")
        return
    token = issue_token(SECRET, 2, "ADMIN", lifetime=3600)
    with (
        tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp,
        sources(args.only, Path(tmp)) as found,
    ):
        old = None if args.baseline is None else checkout(args.baseline, Path(tmp) / "baseline")
        for kind, database_url in found:
            for workers in (int(w) for w in args.workers.split(",")):
                if args.paired:
                    assert old is not None
                    with (
                        serve_py(
                            database_url, workers=workers, secret=SECRET, root=old,
                            data_dir=Path(tmp) / f"old-{kind}-{workers}",
                        ) as up_old,
                        serve_py(
                            database_url, workers=workers, secret=SECRET,
                            data_dir=Path(tmp) / f"data-{kind}-{workers}",
                        ) as up_new,
                    ):  # fmt: skip
                        tags = (f"{kind:<10} w={workers} {args.baseline[:7]}",
                                f"{kind:<10} w={workers} this tree")  # fmt: skip
                        run_paired((up_old.url, up_new.url), tags, token, args.big, typical, args)
                    continue
                before = None
                if old is not None:
                    with serve_py(
                        database_url, workers=workers, data_dir=Path(tmp) / f"old-{kind}-{workers}",
                        secret=SECRET, root=old,
                    ) as up:  # fmt: skip
                        tag = f"{kind:<10} w={workers} {args.baseline[:7]}"
                        before = run_suite(up.url, token, args.big, typical, args, tag)
                data_dir = Path(tmp) / f"data-{kind}-{workers}"
                with serve_py(
                    database_url, workers=workers, data_dir=data_dir, secret=SECRET
                ) as up:
                    tag = f"{kind:<10} w={workers} this tree"
                    run_suite(up.url, token, args.big, typical, args, tag, before)


if __name__ == "__main__":
    main()
