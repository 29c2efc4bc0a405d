"""The documents-only chunk's lessons read: the window statement against the capped read.

    flock /tmp/bench.lock .venv/bin/python bench/lessons_read.py
    .venv/bin/python bench/lessons_read.py --learners 400 --chunk 200 --repeats 5

Builds bench/archive.py's database (`--learners` learners x ~100 lessons) on SQLite and on a
throwaway PostgreSQL (tests/pg.py), and reads the lessons of one chunk of `--chunk` learners,
capped at the documents' 1,000 per learner, `--repeats` times each way, in one snapshot, through
the source engine the archive uses:

  window   `extract.queries.lessons_query(..., limit_per_learner=1000)`: every lesson numbered
           by a window, the numbered rows sorted again (what a capped chunk read before)
  capped   `extract.reader._capped_lessons`: a count per learner from the index, then the plain
           ordered statement (what it reads now)

and prints the median seconds of each, their ratio, and whether both gave the same rows in the
same order. Figures only: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CAP = 1_000


def measure(url: str, ids: list[int], repeats: int) -> dict[str, Any]:
    from extract import queries
    from extract.engine import create_source_engine, snapshot
    from extract.reader import _capped_lessons, _stream

    engine = create_source_engine(url)
    ways = {
        "window": lambda conn: list(
            _stream(conn, queries.lessons_query(conn.dialect.name, ids, limit_per_learner=CAP))
        ),
        "capped": lambda conn: list(_capped_lessons(conn, ids, CAP)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    rows: dict[str, list[Any]] = {}
    try:
        with snapshot(engine) as conn:
            for _ in range(repeats):
                for name, read in ways.items():
                    started = time.perf_counter()
                    found = read(conn)
                    seconds[name].append(time.perf_counter() - started)
                    rows[name] = [(r["id"], r[queries.LESSON_TOTAL]) for r in found]
    finally:
        engine.dispose()
    return {
        "rows": len(rows["capped"]),
        "same": rows["window"] == rows["capped"],
        **{name: statistics.median(values) for name, values in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=400)
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--lessons", type=int, default=100, help="average lessons per learner")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    from archive import build_postgres, build_sqlite  # bench/archive.py

    ids = list(range(2, 2 + min(args.chunk, args.learners)))  # learners are users 2..N+1
    work = Path(tempfile.mkdtemp(prefix="bench-lessons-"))
    print(f"{args.learners} learners x ~{args.lessons} lessons; one chunk of {len(ids)}, "
          f"capped at {CAP}, {args.repeats} reads each way", flush=True)  # fmt: skip
    results = {"SQLite": measure(
        build_sqlite(work / "bench.sqlite3", args.learners, args.lessons, args.seed),
        ids, args.repeats,
    )}  # fmt: skip
    if not args.no_postgres:
        from tests.pg import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        try:
            url = build_postgres(cluster, args.learners, args.lessons, args.seed)
            results["PostgreSQL"] = measure(url, ids, args.repeats)
        finally:
            cluster.stop()
    print(f"\n  {'database':<12}{'rows':>8}{'window s':>10}{'capped s':>10}{'capped/window':>15}"
          "  same rows")  # fmt: skip
    for name, r in results.items():
        print(f"  {name:<12}{r['rows']:>8}{r['window']:>10.3f}{r['capped']:>10.3f}"
              f"{r['capped'] / r['window']:>15.2f}  {'yes' if r['same'] else 'NO'}")  # fmt: skip


if __name__ == "__main__":
    main()
