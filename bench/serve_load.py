#!/usr/bin/env python3
"""Load and faults against a real server on loopback, with checks; exit status 1 if one fails.

    .venv/bin/python bench/serve_load.py                                   # the full run
    .venv/bin/python bench/serve_load.py --clients 6 --idle 4 --requests 60 --pause 1   # CI's

It builds the demo database on a throwaway PostgreSQL cluster (the test suite's), starts
`python serve.py --workers N` against it, and then, all at once: `--clients` clients, each on
its own keep-alive connection, ask for `--requests` exports in all, one in five for the
1,000-lesson learner (5.8 MB) and the others for the typical one (~28 lessons); `--idle`
connections are opened and held, sending nothing (each is reopened when the server cuts it);
and the database is paused (SIGSTOP of every server process) for `--pause` seconds once a
quarter of the requests are answered, then restarted (`pg_ctl restart -m fast`) at 60 %.

Before that load, the memory stage: for each count in `--stalled` (default 8, 32, 128), that
many clients ask for the 1,000-lesson learner at once and then read nothing (a 4 KiB receive
buffer, so the server cannot hand the document to the kernel and be done); once every one has
its answer's head, each worker's RSS is read, then they all hang up. A worker holds the bytes of
at most LEARNER_EXPORT_HTTP_BYTES_IN_FLIGHT of such transfers and answers the others 503, so its
memory stops growing with the number of stalled clients.

It prints the answers by status, p50/p95/p99 latency, each worker's RSS at each stalled count and
its peak RSS (VmHWM), and checks: no 5xx other than 503; no transfer of the load broken; every
200 body the complete document (the same bytes as the learner's reference export, apart from
exportDate and exportedBy); one audit line per answered request; each worker's RSS, at every
stalled count and at its peak, within the documented bound (`memory_bound_mb`); the most stalled
clients got 503s (the budget was reached). Bounded: loopback only, every request with a 120 s
timeout, the run with `--deadline`.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import re
import select
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from _server import serve_py  # noqa: E402

from learner_export.demo import build_demo_database, demo_rows  # noqa: E402
from learner_export.tokens import issue_token  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402

SECRET = "load-secret-" + "0123456789abcdef" * 3
ADMIN = 2
BIG_LEARNER = 4
TYPICAL_LESSONS = 28
BIG_EVERY = 5
"""One request in five is for the 1,000-lesson learner."""
BYTES_IN_FLIGHT_MB = 32
"""The worker's budget of document bytes in flight in this run (LEARNER_EXPORT_HTTP_BYTES_IN_FLIGHT;
smaller than the 64 MiB default so the default run reaches it with a handful of big exports)."""
POOL_CONNECTIONS = 4
"""The source pool of a worker (LEARNER_EXPORT_DATABASE_POOL_SIZE, no overflow): how many
documents it makes at once."""
MAKING_FACTOR = 3
"""A document being made holds its rows, its objects and its bytes at once: RSS grows by 8.4 MiB
(SQLite) and 7.3 MiB (PostgreSQL) per 1,000-lesson document so held, 2.4 and 2.1 times its 3.5 MiB
of JSON (measured by holding 15 of them in one process); 3 leaves room for the allocator."""
STALLED_RECEIVE_BUFFER = 4096
_TAIL = re.compile(rb',"exportDate":"[^"]*","exportedBy":(?:null|[0-9]+)\}\Z')


def memory_bound_mb(idle_mb: float, big_bytes: int) -> float:
    """The documented bound of a worker's RSS (README, "When things go wrong"): its RSS when idle
    after the first exports, plus twice its budget of bytes in flight (a transfer's unsent bytes
    may also sit in a copy: the piece being sent and the transport's buffer), plus the documents
    its pool's connections can be making at once."""
    return idle_mb + 2 * BYTES_IN_FLIGHT_MB + POOL_CONNECTIONS * MAKING_FACTOR * big_bytes / 2**20


def typical_learner() -> int:
    """The demo learner whose lesson count is closest to 28 (ties: the lower id)."""
    counts = Counter(lesson["learner_id"] for lesson in demo_rows().lessons)
    return int(min(counts, key=lambda i: (abs(counts[i] - TYPICAL_LESSONS), i)))


def comparable(body: bytes) -> bytes:
    """The document without its exportDate and exportedBy (the only bytes that may differ)."""
    stripped, count = _TAIL.subn(b"}", body)
    if count != 1:
        raise ValueError("not a whole document: its last keys are missing")
    return stripped


@dataclass
class Tally:
    """What the clients saw; appended to under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    broken: Counter[str] = field(default_factory=Counter)
    wrong_bodies: int = 0
    answered: int = 0


class Clients:
    """`count` client threads sharing `requests` tickets; each ticket is one GET."""

    def __init__(self, url: str, token: str, learners: dict[int, bytes], requests: int) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.token = token
        self.learners = learners
        self.tickets = itertools.count()
        self.requests = requests
        self.tally = Tally()

    def run(self, count: int) -> None:
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _client(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        big, typical = self.learners
        headers = {"Authorization": f"Bearer {self.token}", "Accept-Encoding": "identity"}
        while (ticket := next(self.tickets)) < self.requests:
            learner = big if ticket % BIG_EVERY == 0 else typical
            start = time.perf_counter()
            try:
                connection.request("GET", f"/api/export?learnerId={learner}", headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with self.tally.lock:
                    self.tally.broken[type(exc).__name__] += 1
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
                continue
            elapsed = time.perf_counter() - start
            whole = True
            if response.status == 200:
                try:
                    whole = comparable(body) == self.learners[learner]
                except ValueError:
                    whole = False
            with self.tally.lock:
                self.tally.answered += 1
                self.tally.statuses[response.status] += 1
                self.tally.latencies.append(elapsed)
                self.tally.wrong_bodies += not whole
            if response.getheader("connection", "").lower() == "close":
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        connection.close()


class IdleConnections:
    """`count` connections that send nothing, reopened whenever the server closes one."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.address = (host, port)
        self.count = count
        self.cut = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self) -> IdleConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _hold(self) -> None:
        sockets = [socket.create_connection(self.address) for _ in range(self.count)]
        while not self._stop.is_set():
            readable, _, _ = select.select(sockets, [], [], 0.2)
            for sock in readable:
                try:
                    closed = sock.recv(1024) == b""
                except ConnectionResetError:
                    closed = True
                if closed:
                    self.cut += 1
                    sockets.remove(sock)
                    sock.close()
                    sockets.append(socket.create_connection(self.address))
        for sock in sockets:
            sock.close()


def faults(cluster: PostgresCluster, clients: Clients, pause: float, log: list[str]) -> None:
    """Pause the database at 25 % of the answers, restart it at 60 %."""
    total = clients.requests

    def wait_for(share: float) -> None:
        while clients.tally.answered + sum(clients.tally.broken.values()) < share * total:
            time.sleep(0.05)

    wait_for(0.25)
    pids = cluster.pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    log.append(f"paused the database ({len(pids)} processes) for {pause:g} s")
    try:
        time.sleep(pause)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_for(0.6)
    cluster.restart()
    log.append("restarted the database")


def rss_mb(parent: int, field: str = "VmRSS") -> dict[int, float]:
    """`field` (VmRSS: now, VmHWM: the peak) of each child process of `parent` (the workers),
    in MiB, by process id."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    sizes = {}
    for pid in (int(p) for p in children):
        if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            continue  # multiprocessing's helper, not a worker
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            sizes[pid] = int(match.group(1)) / 1024
    return sizes


def stalled(url: str, token: str, learner: int, count: int, parent: int
            ) -> tuple[Counter[int], dict[int, float]]:  # fmt: skip
    """`count` clients ask for `learner` at once and read nothing past their answer's head:
    the statuses they got, and each worker's RSS (MiB) while they all hold on. Then they hang
    up, which breaks every transfer still held."""
    host, port = url.removeprefix("http://").split(":")
    request = (f"GET /api/export?learnerId={learner} HTTP/1.1\r\nHost: {host}\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()  # fmt: skip
    sockets = []
    statuses: Counter[int] = Counter()
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            # A small window before connecting: the server's sends then wait on this client.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RECEIVE_BUFFER)
            sock.settimeout(120)
            sock.connect((host, int(port)))
            sock.sendall(request)
        for sock in sockets:
            head = b""
            while b"\r\n" not in head and (piece := sock.recv(64)):
                head += piece
            status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/1.1 ") else b"0"
            statuses[int(status)] += 1
        held = rss_mb(parent)
    finally:
        for sock in sockets:
            sock.close()
    return statuses, held


def _out_of_time(signum: int, frame: object) -> None:
    raise TimeoutError("the run took longer than --deadline")


def reference(url: str, token: str, learner: int) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    connection.request("GET", f"/api/export?learnerId={learner}", headers={
        "Authorization": f"Bearer {token}"})  # fmt: skip
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200:
        raise SystemExit(f"the reference export of learner {learner} answered {response.status}")
    return comparable(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--idle", type=int, default=100)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds the database is paused")
    parser.add_argument("--deadline", type=float, default=600, help="seconds the run may take")
    parser.add_argument("--stalled", default="8,32,128", help="stalled clients, stage by stage")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}; "
          f"{args.clients} clients, {args.idle} idle connections, {args.requests} requests, "
          f"{args.workers} workers", flush=True)  # fmt: skip
    signal.signal(signal.SIGALRM, _out_of_time)  # the run is bounded; cleanup still happens
    signal.alarm(int(args.deadline))
    token = issue_token(SECRET, ADMIN, "ADMIN", lifetime=3600)
    cluster = PostgresCluster()
    events: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        try:
            cluster.start()
            owner = cluster.create_database("load")
            build_demo_database(owner, learners=12, seed=7, replace=False)
            source = cluster.grant_reader("load")
            data_dir = Path(tmp) / "data"
            budget = {
                "LEARNER_EXPORT_HTTP_BYTES_IN_FLIGHT": str(BYTES_IN_FLIGHT_MB * 2**20),
                "LEARNER_EXPORT_DATABASE_POOL_SIZE": str(POOL_CONNECTIONS),
            }
            with serve_py(
                source, workers=args.workers, data_dir=data_dir, secret=SECRET,
                environment=budget,
            ) as started:  # fmt: skip
                url, pid = started.url, started.pid
                learners = {
                    learner: reference(url, token, learner)
                    for learner in (BIG_LEARNER, typical_learner())
                }
                idle_mb = rss_mb(pid)
                stages = [
                    (count, *stalled(url, token, BIG_LEARNER, count, pid))
                    for count in (int(c) for c in args.stalled.split(","))
                ]
                clients = Clients(url, token, learners, args.requests)
                host, port = url.removeprefix("http://").split(":")
                fault_thread = threading.Thread(
                    target=faults, args=(cluster, clients, args.pause, events), daemon=True
                )
                with IdleConnections(host, int(port), args.idle) as idle:
                    fault_thread.start()
                    clients.run(args.clients)
                fault_thread.join(timeout=60)
                peaks = rss_mb(pid, "VmHWM")
            audit = (data_dir / "audit.jsonl").read_bytes().splitlines()
        finally:
            cluster.stop()
    lines = [orjson.loads(line) for line in audit]
    notes = sum(1 for line in lines if line.get("complete") is False)
    # The reference exports and the stalled clients' requests are answered requests too.
    references = len(learners) + sum(count for count, _, _ in stages)
    big_bytes = len(learners[BIG_LEARNER])
    bound = {worker: memory_bound_mb(mb, big_bytes) for worker, mb in idle_mb.items()}
    tally = clients.tally
    for event in events:
        print(event)
    print(f"idle connections cut by the server: {idle.cut}")
    print("answers by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items())))
    print(f"broken transfers: {dict(tally.broken) or 0}")
    ms = sorted(x * 1000 for x in tally.latencies)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    print(f"latency p50 {q[49]:.1f} ms  p95 {q[94]:.1f} ms  p99 {q[98]:.1f} ms")
    print(f"memory bound per worker: idle RSS + 2 x {BYTES_IN_FLIGHT_MB} MiB in flight + "
          f"{POOL_CONNECTIONS} x {MAKING_FACTOR} x {big_bytes / 2**20:.1f} MiB being made = "
          + ", ".join(f"{bound[w]:.0f} MiB (idle {idle_mb[w]:.0f})" for w in idle_mb))  # fmt: skip
    for count, statuses, held in stages:
        print(f"{count:>4} stalled big exports: "
              + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
              + "; RSS per worker " + ", ".join(f"{mb:.0f}" for mb in held.values()) + " MiB")  # fmt: skip
    print("peak RSS per worker: " + ", ".join(f"{mb:.0f} MiB" for mb in peaks.values()))
    checks = {
        "no 5xx other than 503": all(s < 500 or s == 503 for s in tally.statuses),
        "no transfer broken": not tally.broken,
        "every 200 body the complete document": tally.wrong_bodies == 0,
        "one audit line per answered request": len(lines) - notes == tally.answered + references,
        "RSS per worker within its bound at every stalled count": all(
            mb <= bound.get(worker, 0) for _, _, held in stages for worker, mb in held.items()
        ),
        "peak RSS per worker within its bound": all(
            mb <= bound.get(worker, 0) for worker, mb in peaks.items()
        ),
        "the most stalled clients met the byte budget (503s)": not stages or stages[-1][1][503] > 0,
        "every request answered": tally.answered == args.requests,
    }
    for name, passed in checks.items():
        print(f"{'ok  ' if passed else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
