"""The analyst report of a 2,000-learner snapshot: seconds and peak RSS of `learner-export report`.

    flock /tmp/bench.lock .venv/bin/python bench/report.py                  # 2,000 learners
    flock /tmp/bench.lock .venv/bin/python bench/report.py --learners 200   # a quick run
    flock /tmp/bench.lock .venv/bin/python bench/report.py --snapshot /tmp/bench-report-*/snapshots/bench

Builds bench/archive.py's SQLite database (2,000 learners x ~100 lessons, with the optional
quiz_answers and concept_mastery tables), archives it with Parquet through the archive's recipe
(no Prefect), then runs, each in a fresh process, `--repeat` times:

  (a) the baseline: reading the columns the report reads from every Parquet part, each part
      checked against the manifest as the report checks it (`load.snapshot_tables`), and nothing
      else: the floor any report over these tables pays;
  (b) `learner-export report SNAPSHOT --out FILE`: the whole command, interpreter start included.

It prints each one's wall seconds and peak RSS (the process's maximum resident set, from wait4),
the medians, and the ratio b/a of the medians, all measured in this one run. The issue asks for
(b) under a minute on this machine, with bounded memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent


def archive(url: str, dest: Path) -> Path:
    """Archive every learner of `url` with Parquet into `dest/bench/`; the snapshot."""
    import logging
    from datetime import UTC, datetime

    from flows.archive_steps import archive_run
    from flows.chunk import ChunkJob
    from load.manifest import RunParameters

    now = datetime.now(UTC)
    parameters = RunParameters(
        learners="all", chunk_size=200, compress=None, encrypt=False, exported_by=None,
        parquet=True,
    )  # fmt: skip
    job = ChunkJob(
        destination_url=str(dest), run_id="bench", source_url=url, export_date=now,
        exported_by=None, compress=None, encryption_key=None, parquet=True,
        pseudonym_key="bench-only pseudonym key, 32 bytes",
    )  # fmt: skip
    archive_run(
        job, parameters, now=now, tolerate_failures=False, audit_log=None, keep=None,
        log=logging.getLogger("bench"),
    )  # fmt: skip
    return dest / "bench"


def build(args: argparse.Namespace, work: Path) -> Path:
    """bench/archive.py's SQLite database, archived with Parquet: the snapshot."""
    from bench.archive import build_sqlite

    print(f"{args.learners} learners x ~{args.lessons} lessons; working in {work}", flush=True)
    started = time.perf_counter()
    url = build_sqlite(work / "bench.sqlite3", args.learners, args.lessons, args.seed)
    print(f"built the SQLite database in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    snapshot = archive(url, work / "snapshots")
    print(f"archived it in {time.perf_counter() - started:.0f} s", flush=True)
    return snapshot


def read_tables(snapshot: str) -> None:
    """The baseline (a): the report's columns of every table, each part checked."""
    from load.destination import open_snapshot
    from load.snapshot_files import read_manifest
    from load.snapshot_tables import read_table
    from transform.analyst_schema import TABLE_SCHEMAS
    from transform.report_figures import TABLE_COLUMNS

    fs, directory = open_snapshot(snapshot)
    manifest = read_manifest(fs, directory, snapshot)
    rows = 0
    for name, columns in TABLE_COLUMNS.items():
        table = read_table(fs, directory, manifest, name, columns, TABLE_SCHEMAS[name])
        rows += 0 if table is None else table.num_rows
    print(f"read {rows} rows", file=sys.stderr)


def measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of `command` in a fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[:3]} failed with status {process.returncode}")
    return seconds, usage.ru_maxrss / 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=2_000)
    parser.add_argument("--lessons", type=int, default=100, help="average lessons per learner")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--snapshot", type=Path, help="measure this snapshot (one this script built) instead"
    )
    parser.add_argument("--read-tables", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_tables:
        read_tables(args.read_tables)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    if args.snapshot:
        snapshot = args.snapshot.resolve()
        print(f"measuring {snapshot}; working in {work}", flush=True)
    else:
        snapshot = build(args, work)
    parquet_mb = sum(p.stat().st_size for p in snapshot.glob("parquet/*/*.parquet")) / 1e6
    documents = sum(1 for _ in snapshot.glob("learner-data-*"))
    print(f"{documents} documents; Parquet tables {parquet_mb:.1f} MB", flush=True)
    commands = {
        "(a) read the report's columns": [
            sys.executable, str(Path(__file__).resolve()), "--read-tables", str(snapshot),
        ],
        "(b) learner-export report": [
            str(BIN / "learner-export"), "report", str(snapshot), "--out", str(work / "r.html"),
        ],
    }  # fmt: skip
    medians = {}
    for label, command in commands.items():
        runs = [measured(command) for _ in range(args.repeat)]
        for seconds, rss in runs:
            print(f"{label}: {seconds:.2f} s, peak RSS {rss:.0f} MB", flush=True)
        medians[label] = (
            statistics.median(s for s, _ in runs),
            statistics.median(r for _, r in runs),
        )
    (a_s, a_rss), (b_s, b_rss) = medians.values()
    page = (work / "r.html").stat().st_size / 1e3
    print(f"\nload average: {os.getloadavg()[0]:.1f}; the report page: {page:.0f} KB")
    print(f"median (a) read: {a_s:.2f} s, peak RSS {a_rss:.0f} MB")
    print(f"median (b) report: {b_s:.2f} s, peak RSS {b_rss:.0f} MB")
    print(f"b/a: {b_s / a_s:.2f}x the seconds, {b_rss / a_rss:.2f}x the peak RSS")


if __name__ == "__main__":
    main()
