"""Does the archive scale linearly? 20,000 learners against 2,000, with and without the indexes.

    flock /tmp/bench.lock .venv/bin/python bench/scale.py                 # 20,000 and 2,000
    .venv/bin/python bench/scale.py --learners 2000 --small 500          # a quick run
    .venv/bin/python bench/scale.py --only-small --dest s3://bucket/bench  # 2,000 to a store

Builds two databases on a throwaway PostgreSQL (tests/pg.py) with bench/archive.py's generator:
`--small` learners (default 2,000) and `--learners` (default 20,000), each ~`--lessons` lessons
per learner and the optional quiz_answers and concept_mastery tables. Then, once with the demo
schema's indexes and once after dropping the three by learner (`extract.indexes`, as on the
platform), it runs the archive_learners flow with Parquet on (the default), each run in a fresh
process (its peak RSS is its own), into `--dest` (default: a local temporary directory):

  small      the small database, uninterrupted
  large      the large database, uninterrupted
  large kill the large database again, the process killed with SIGKILL once half of its chunks
             are recorded, then the same run resumed (the figures are the resumed process's)

and prints learners/s, MB/s of documents, peak RSS, the large/small ratio of learners/s, how the
run read the source (the run's summary), and whether each snapshot is identical to the indexed
uninterrupted run of the same database: every run of a database uses one run id and one export
time (the flow's clock is fixed in the child), so equal manifests, timings aside, mean equal
bytes (the manifest holds every file's SHA-256), and each resumed snapshot is verified against its
manifest (`learner-export verify`). Snapshots are removed as soon as they are compared. Figures
only: nothing asserts a time. Run it alone (flock): every figure is a share of two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

EXPORT_TIME = datetime(2026, 12, 1, 3, 0, 0, 500000, tzinfo=UTC)
"""The export time of every run: runs of one database write the same bytes."""
TIMINGS = ("finished_at", "duration_seconds", "seconds")
POLL_SECONDS = 0.5


# --- the child: one archive run -------------------------------------------------------------


def child(url: str, dest: str, run_id: str) -> None:
    """Run the flow once and print its figures as one JSON line."""
    import flows.archive
    from flows.archive import archive_learners
    from flows.options import ArchiveOptions, ArchiveSecrets

    class FixedClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            return EXPORT_TIME

    vars(flows.archive)["datetime"] = FixedClock  # the flow's `datetime.now(UTC)`
    started = time.perf_counter()
    result = archive_learners(
        options=ArchiveOptions(dest=dest, run_id=run_id),
        secrets=ArchiveSecrets(
            source_url=url,  # type: ignore[arg-type]
            pseudonym_key="bench-pseudonym-key",  # type: ignore[arg-type]
        ),
    )
    seconds = time.perf_counter() - started
    figures = {
        "learners": result.counts.files,
        "bytes": result.counts.bytes,
        "seconds": seconds,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "read": result.read,
        "failed": result.counts.failed,
    }
    print(json.dumps(figures))


# --- the parent -----------------------------------------------------------------------------


def _command(url: str, dest: str, run_id: str) -> list[str]:
    return [sys.executable, __file__, "--child", "--url", url, "--dest", dest, "--run-id", run_id]


def run_child(url: str, dest: str, run_id: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        _command(url, dest, run_id), env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"run {run_id} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def killed_and_resumed(
    url: str, dest: str, run_id: str, chunks: int, env: dict[str, str]
) -> dict[str, Any]:
    """Start the run, SIGKILL it once half of its chunks have a part record, run it again."""
    from load.destination import open_destination

    destination = open_destination(dest)
    parts = f"{destination.incomplete_dir(run_id)}/parts"
    process = subprocess.Popen(
        _command(url, dest, run_id), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    recorded = 0
    while process.poll() is None:
        recorded = len(destination.fs.find(parts)) if destination.fs.isdir(parts) else 0
        if recorded >= chunks // 2:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(POLL_SECONDS)
    if process.wait() != -signal.SIGKILL:
        assert process.stderr is not None
        error = process.stderr.read().decode(errors="replace")
        sys.exit(f"run {run_id} ended before it was killed:\n{error[-3000:]}")
    figures = run_child(url, dest, run_id, env)
    figures["killed_after"] = recorded
    figures["verified"] = _verified(dest, run_id)
    return figures


def _verified(dest: str, run_id: str) -> str:
    from learner_export.verify import verify_snapshot
    from load.destination import open_destination

    destination = open_destination(dest)
    report = verify_snapshot(destination.fs, f"{destination.root.rstrip('/')}/{run_id}", None)
    return "ok" if not report.problems else f"{len(report.problems)} problems"


def manifest_digest(dest: str, run_id: str) -> str:
    """SHA-256 of the run's manifest without its timings (it lists every file's SHA-256)."""
    from load.destination import open_destination

    destination = open_destination(dest)
    with destination.fs.open(f"{destination.root.rstrip('/')}/{run_id}/manifest.json") as f:
        manifest = orjson.loads(f.read())
    for key in TIMINGS:
        manifest.pop(key, None)
    return hashlib.sha256(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)).hexdigest()


def remove_run(dest: str, run_id: str) -> None:
    from load.destination import INCOMPLETE_DIR, open_destination

    destination = open_destination(dest)
    root = destination.root.rstrip("/")
    for path in (f"{root}/{run_id}", f"{root}/{INCOMPLETE_DIR}"):
        if destination.fs.exists(path):
            destination.fs.rm(path, recursive=True)


def drop_indexes(owner_url: str) -> None:
    import psycopg

    from extract.indexes import NEEDED_INDEXES

    with psycopg.connect(owner_url.replace("+psycopg", ""), autocommit=True) as db:
        for needed in NEEDED_INDEXES:
            db.execute(f"DROP INDEX {needed.name}")  # type: ignore[arg-type]


def build(cluster: Any, name: str, learners: int, lessons: int, seed: int) -> tuple[str, str]:
    """A database of `learners` (bench/archive.py's generator); its reader and owner URLs."""
    from archive import build_postgres  # bench/archive.py

    started = time.perf_counter()
    reader = build_postgres(cluster, learners, lessons, seed, name=name)
    print(
        f"built {name}: {learners:,} learners in {time.perf_counter() - started:.0f} s", flush=True
    )
    return reader, cluster.url(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--lessons", type=int, default=100, help="average lessons per learner")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--dest", help="destination directory or URL (default: a temporary one)")
    parser.add_argument("--only-small", action="store_true", help="the small database only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.url, args.dest, args.run_id)
        return

    from flows.options import DEFAULT_CHUNK_SIZE
    from flows.server import local_server
    from tests.pg import PostgresCluster

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    dest = args.dest or str(work / "dest")
    sizes = (
        {"small": args.small} if args.only_small else {"small": args.small, "large": args.learners}
    )
    print(f"{' and '.join(f'{n:,}' for n in sizes.values())} learners x ~{args.lessons} lessons, "
          f"Parquet on, chunks of {DEFAULT_CHUNK_SIZE}; to {dest}; load {os.getloadavg()[0]:.1f}",
          flush=True)  # fmt: skip
    cluster = PostgresCluster()
    cluster.start()
    rows: list[tuple[str, str, dict[str, Any]]] = []
    try:
        sources = {
            size: build(cluster, f"scale_{size}", n, args.lessons, args.seed)
            for size, n in sizes.items()
        }
        with local_server(work / "prefect") as api_url:
            env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "prefect")}
            env["PYTHONPATH"] = str(ROOT)
            reference: dict[str, str] = {}
            for way in ("indexed", "no indexes"):
                if way == "no indexes":
                    for _, owner in sources.values():
                        drop_indexes(owner)
                for size, (url, _) in sources.items():
                    runs = [("", False)] + ([(" kill", True)] if size == "large" else [])
                    for suffix, kill in runs:
                        run_id = f"scale-{size}"
                        chunks = -(-sizes[size] // DEFAULT_CHUNK_SIZE)
                        if kill:
                            figures = killed_and_resumed(url, dest, run_id, chunks, env)
                        else:
                            figures = run_child(url, dest, run_id, env)
                        digest = manifest_digest(dest, run_id)
                        reference.setdefault(size, digest)
                        figures["identical"] = digest == reference[size]
                        figures["load"] = os.getloadavg()[0]
                        remove_run(dest, run_id)
                        rows.append((way, size + suffix, figures))
                        print(f"  {way}, {size}{suffix}: {json.dumps(figures)}", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(rows)


def report(rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    print(f"\n  {'source':<12}{'run':<12}{'learners':>9}{'seconds':>9}{'learners/s':>11}"
          f"{'MB/s':>7}{'RSS MB':>8}{'vs small':>9}  identical  read")  # fmt: skip
    small: dict[str, float] = {}
    for way, run, f in rows:
        rate = f["learners"] / f["seconds"]
        if run == "small":
            small[way] = rate
        ratio = f"{rate / small[way]:.2f}" if run == "large" and way in small else ""
        shown = "" if "killed_after" in f else f"{rate:.1f}"
        same = "yes" if f["identical"] else "NO"
        if "killed_after" in f:
            same += f" (killed at {f['killed_after']} chunks, verify {f['verified']})"
        print(f"  {way:<12}{run:<12}{f['learners']:>9}{f['seconds']:>9.1f}{shown:>11}"
              f"{'' if 'killed_after' in f else format(f['bytes'] / 1e6 / f['seconds'], '.1f'):>7}{f['rss_mb']:>8.0f}{ratio:>9}  {same}  "
              f"{f['read']}")  # fmt: skip
    total = sum(f["bytes"] for way, run, f in rows if run == "large" and way == "indexed")
    if total:
        print(f"  documents of the large run: {total / 1e9:.2f} GB")
    print("  (kill rows: the resumed process's seconds and peak RSS, for the chunks it had left)")


if __name__ == "__main__":
    main()
