"""Does the archive scale linearly? 20,000 learners against 2,000, with and without the indexes.

    flock /tmp/bench.lock .venv/bin/python bench/scale.py                 # 20,000 and 2,000
    .venv/bin/python bench/scale.py --learners 2000 --small 500          # a quick run
    .venv/bin/python bench/scale.py --only-small --moto                  # 2,000 to moto's S3

Builds two databases on a throwaway PostgreSQL (tests/pg.py): `--small` learners (default 2,000,
~`--lessons` lessons each and the optional quiz_answers and concept_mastery tables) with
bench/archive.py's generator, and `--learners` (default 20,000) as a copy of it whose learners
are repeated in SQL with new ids and UUIDs (generating them in Python would take longer than the
benchmark): every learner of the large database has the rows of one of the small one's, laid
out on disk as in the small one (copy after copy), so a linear archive takes exactly ten times as
long for ten times the learners. Then, once with the demo schema's indexes and once after
dropping the three by learner (`extract.indexes`, as on the platform), it runs the
archive_learners flow with Parquet on (the default), each run in a fresh
process (its peak RSS is its own), into `--dest` (default: a local temporary directory; with
`--moto`, a bucket of a moto S3 server started for the run, tests/s3.py, found by the child
processes through the standard AWS variables as a real store would be):

  small      the small database, uninterrupted
  large      the large database, uninterrupted (left out with --kill-only)
  large kill the large database again, the process killed with SIGKILL once half of its chunks
             are recorded, then the same run resumed: its seconds are the killed process's up
             to the kill plus the resumed one's, its peak RSS the larger of the two

and prints learners/s, MB/s of documents, peak RSS, the ratio of learners/s to the small run's,
how the run read the source (the run's summary), each tenth of the run's chunks (seconds to
record it and the highest RSS the parent sampled meanwhile: the same seconds tenth after tenth
is a linear run, the same RSS a flat one; and the rate over tenths 2-10, the run's fixed start
left out, which weighs ten times more in the small run than in the large one), and whether each
snapshot is identical to the first run of the same database (indexed): every run of a database
uses one run id and one export time (the flow's clock is fixed in the child), so equal
manifests, timings aside, mean equal bytes (the manifest holds every file's SHA-256), and each
resumed snapshot is verified against its manifest (`learner-export verify`). Snapshots are
removed as soon as they are compared. Figures only: nothing asserts a time. Run it alone
(flock): every figure is a share of two cores.
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


Sample = tuple[float, int, float]
"""(seconds since the run started, chunks with a part record, the child's RSS in MB)."""


def follow(
    url: str, dest: str, run_id: str, env: dict[str, str], *, kill_at: int | None = None
) -> tuple[dict[str, Any] | None, list[Sample]]:
    """Run the child, sampling its progress and RSS every POLL_SECONDS; with `kill_at`, SIGKILL
    it once that many chunks have a part record. Its figures (None when killed) and samples."""
    from load.destination import open_destination

    destination = open_destination(dest)
    parts = f"{destination.incomplete_dir(run_id)}/parts"
    samples: list[Sample] = []
    # Files, not pipes: Prefect logs to stderr, and a full pipe nobody reads stops the child.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(_command(url, dest, run_id), env=env, stdout=out, stderr=err)
        while process.poll() is None:
            recorded = len(destination.fs.find(parts)) if destination.fs.isdir(parts) else 0
            killing = kill_at is not None and recorded >= kill_at
            # Before a kill, the peak so far (VmHWM): the killed process's share of the run's.
            rss = _status_mb(process.pid, "VmHWM" if killing else "VmRSS")
            samples.append((time.perf_counter() - started, recorded, rss))
            if killing:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(POLL_SECONDS)
        code = process.wait()
        if kill_at is not None and code == -signal.SIGKILL:
            return None, samples
        err.seek(0)
        if code != 0 or kill_at is not None:
            what = "failed" if code != 0 else "ended before it was killed"
            sys.exit(f"run {run_id} {what}:\n{err.read().decode(errors='replace')[-3000:]}")
        out.seek(0)
        figures: dict[str, Any] = json.loads(out.read().decode().strip().splitlines()[-1])
    return figures, samples


def run_child(url: str, dest: str, run_id: str, env: dict[str, str]) -> dict[str, Any]:
    figures, samples = follow(url, dest, run_id, env)
    assert figures is not None
    figures["samples"] = samples
    return figures


def killed_and_resumed(
    url: str, dest: str, run_id: str, chunks: int, env: dict[str, str]
) -> dict[str, Any]:
    """Start the run, SIGKILL it once half of its chunks have a part record, run it again. The
    figures are the whole run's: the killed process's seconds (start to kill) plus the resumed
    one's, and the larger of their peak RSS (the killed one's read from /proc just before)."""
    _, killed = follow(url, dest, run_id, env, kill_at=chunks // 2)
    killed_seconds, recorded, killed_rss = killed[-1]
    figures, resumed = follow(url, dest, run_id, env)
    assert figures is not None
    figures["resumed_seconds"] = figures["seconds"]
    figures["seconds"] += killed_seconds
    figures["rss_mb"] = max(figures["rss_mb"], killed_rss)
    figures["killed_after"] = recorded
    figures["samples"] = killed + [(killed_seconds + t, n, rss) for t, n, rss in resumed]
    figures["verified"] = _verified(dest, run_id)
    return figures


def tenths(samples: list[Sample], chunks: int) -> list[tuple[float, float]]:
    """Seconds each tenth of the run's chunks took to be recorded, and the highest RSS sampled
    while it was: a linear run spends the same time on every tenth, a flat one the same RSS.
    The first tenth includes the run's start (planning, the flow's registration). None for a
    run of fewer than ten chunks."""
    if chunks < 10:
        return []
    out: list[tuple[float, float]] = []
    previous = 0.0
    for k in range(1, 11):
        low, high = (k - 1) * chunks / 10, k * chunks / 10
        during = [s for s in samples if low <= s[1] < high or (k == 10 and s[1] >= high)]
        reached = next((t for t, n, _ in samples if n >= high), samples[-1][0] if samples else 0)
        out.append((reached - previous, max((rss for _, _, rss in during), default=0.0)))
        previous = reached
    return out


def _status_mb(pid: int, field: str) -> float:
    """A live process's VmRSS (now) or VmHWM (its peak so far) from /proc, in MB; 0 once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


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


REPLICAS = {
    # table: its columns as each copy k (1, 2, ...) of the small database's learners inserts
    # them: ids moved up by k x the small count, new UUIDs, every other value the same
    "users": "id + {shift}, 'l' || (id + {shift}) || '@example.com', 'learner-' || (id + {shift}), "
    "'Learner ' || (id + {shift}), role, parent_id, created_at",
    "learner_profiles": "gen_random_uuid()::text, user_id + {shift}, grade_level, graph, "
    "subjects, subject_performance, recommended_subjects, struggling_areas, created_at",
    "lessons": "gen_random_uuid()::text, learner_id + {shift}, template_id, module_id, status, "
    "subject, category, difficulty, image_paths, spec, score, created_at, completed_at",
    "achievements": "gen_random_uuid(), (learner_id::integer + {shift})::text, type, payload, "
    "awarded_at",
    "quiz_answers": "gen_random_uuid(), learner_id + {shift}, lesson_id, question_index, "
    "question_text, question_hash, user_answer, correct_answer, is_correct, concept_tags, "
    "answered_at",
    "concept_mastery": "gen_random_uuid(), learner_id + {shift}, concept_name, subject, "
    "correct_count, total_count, mastery_level, last_tested, needs_reinforcement, created_at",
}
"""What the large database adds to a copy of the small one, table by table."""


def build(cluster: Any, small: int, large: int, lessons: int, seed: int) -> dict[str, str]:
    """The small database (bench/archive.py's generator) and the large one: a copy of it with
    its learners repeated (large / small times, new ids and UUIDs, the same rows otherwise), so
    every learner of the large database is one of the small one's. Reader URLs by size."""
    import psycopg
    from archive import COLUMNS, build_postgres  # bench/archive.py

    started = time.perf_counter()
    urls = {"small": build_postgres(cluster, small, lessons, seed, name="scale_small")}
    print(f"built the {small:,}-learner database in {time.perf_counter() - started:.0f} s",
          flush=True)  # fmt: skip
    if large <= small:
        return urls
    started = time.perf_counter()
    admin = cluster.url("postgres").replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute('CREATE DATABASE "scale_large" TEMPLATE "scale_small"')
    with psycopg.connect(cluster.url("scale_large").replace("+psycopg", "")) as db:
        for table, columns in REPLICAS.items():
            # Copy after copy, each one the small table's rows in their physical order (a TID
            # range scan up to its last row): a copy's learners lie on their own pages as the
            # small database's do. One statement over a cross join interleaved the copies row
            # by row, so a chunk's rows spread over nine times the pages (pg_stats correlation
            # of lessons.learner_id 0.35 instead of 1.0) and the large run read a different
            # layout, not just more learners.
            last = db.execute(
                f"SELECT max(ctid)::text FROM {table}"  # type: ignore[arg-type]
            ).fetchone()
            where = " AND role = 'LEARNER'" if table == "users" else ""
            for k in range(1, large // small):
                db.execute(
                    f"INSERT INTO {table} ({', '.join(COLUMNS[table])}) "  # type: ignore[arg-type]
                    f"SELECT {columns.format(shift=k * small)} FROM {table} "
                    f"WHERE ctid <= %s::tid{where}",
                    last,
                )
        db.commit()
        db.autocommit = True
        db.execute("VACUUM ANALYZE")
    urls["large"] = str(cluster.grant_reader("scale_large"))
    print(f"built the {large:,}-learner database (copies of the small one's learners) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--lessons", type=int, default=100, help="average lessons per learner")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--dest", help="destination directory or URL (default: a temporary one)")
    parser.add_argument("--only-small", action="store_true", help="the small database only")
    parser.add_argument(
        "--moto",
        action="store_true",
        help="write to a bucket of a moto S3 server started for the run (moto keeps objects in "
        "memory: use with --only-small)",
    )
    parser.add_argument(
        "--kill-only",
        action="store_true",
        help="measure the large database only in the run killed and resumed (half the time)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child and args.learners % args.small:
        parser.error("--learners must be a multiple of --small")
    if args.child:
        child(args.url, args.dest, args.run_id)
        return

    from flows.options import DEFAULT_CHUNK_SIZE
    from flows.server import local_server
    from tests.pg import PostgresCluster

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    dest = args.dest or str(work / "dest")
    store = None
    if args.moto:
        from tests.s3 import S3Server

        store = S3Server()
        store.start()
        os.environ.update(store.environment())  # this process's checks and the children's runs
        dest = f"s3://{store.new_bucket()}/bench"
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
        large = 0 if args.only_small else args.learners
        urls = build(cluster, args.small, large, args.lessons, args.seed)
        sources = {size: (url, cluster.url(f"scale_{size}")) for size, url in urls.items()}
        with local_server(work / "prefect") as api_url:
            env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "prefect")}
            env["PYTHONPATH"] = str(ROOT)
            reference: dict[str, str] = {}
            # Warm-up, not shown: the first run of a process tree registers the flow with the
            # Prefect server and reads the small database into the page cache.
            run_child(sources["small"][0], dest, "warm-up", env)
            remove_run(dest, "warm-up")
            for way in ("indexed", "no indexes"):
                if way == "no indexes":
                    for _, owner in sources.values():
                        drop_indexes(owner)
                for size, (url, _) in sources.items():
                    runs = [("", False)] if size == "small" or not args.kill_only else []
                    runs += [(" kill", True)] if size == "large" else []
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
                        figures["tenths"] = tenths(figures.pop("samples"), chunks)
                        remove_run(dest, run_id)
                        rows.append((way, size + suffix, figures))
                        print(f"  {way}, {size}{suffix}: {json.dumps(figures)}", flush=True)
    finally:
        cluster.stop()
        if store is not None:
            store.stop()
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
        ratio = f"{rate / small[way]:.2f}" if run != "small" and way in small else ""
        shown = f"{rate:.1f}"
        same = "yes" if f["identical"] else "NO"
        if "killed_after" in f:
            same += (
                f" (killed at {f['killed_after']} chunks, resumed in "
                f"{f['resumed_seconds']:.0f} s, verify {f['verified']})"
            )
        print(f"  {way:<12}{run:<12}{f['learners']:>9}{f['seconds']:>9.1f}{shown:>11}"
              f"{f['bytes'] / 1e6 / f['seconds']:>7.1f}{f['rss_mb']:>8.0f}{ratio:>9}  {same}  "
              f"{f['read']}")  # fmt: skip
    print(
        "\n  each tenth of a run's chunks: seconds to record it / highest RSS sampled (MB);"
        "\n  steady: learners/s over tenths 2-10 (the run's start left out), and vs small's"
    )
    steady_small: dict[str, float] = {}
    for way, run, f in rows:
        if not f["tenths"]:
            continue
        # "-": no sample fell in that tenth (it was recorded within one poll of the one before)
        cells = " ".join(f"{t:.0f}/{rss:.0f}" if rss else f"{t:.0f}/-" for t, rss in f["tenths"])
        steady = 0.9 * f["learners"] / max(sum(t for t, _ in f["tenths"][1:]), 1e-9)
        if run == "small":
            steady_small[way] = steady
        versus = (
            f" ({steady / steady_small[way]:.2f})" if run != "small" and way in steady_small else ""
        )
        print(f"  {way:<12}{run:<12}{cells}  steady {steady:.1f}{versus}")
    total = max((f["bytes"] for way, run, f in rows if run.startswith("large")), default=0)
    if total:
        print(f"  documents of the large run: {total / 1e9:.2f} GB")
    print(
        "  (kill rows: the killed process's seconds up to the kill plus the resumed one's;"
        " the larger peak RSS of the two)"
    )


if __name__ == "__main__":
    main()
