"""Throughput of the analyst tables: build and write them for a demo database, chunk by chunk.

    .venv/bin/python bench/parquet.py [--learners 200] [--chunk 50]

Builds a SQLite demo database in a temporary directory, then reads it as the flows do (one
snapshot, `--chunk` learners at a time, every lesson), builds the tables of the learners' rows
(not the optional source tables; `bench/archive.py` measures the whole) with a throwaway
pseudonym key and writes one zstd part per table per chunk. Prints rows/s, MB/s (of stored spec
text read, and of Parquet written) and the peak Arrow memory. Nothing is kept.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from fsspec.implementations.local import LocalFileSystem

from extract.engine import create_source_engine, snapshot
from extract.reader import all_learner_ids, read_learners
from learner_export.demo import build_demo_database
from load.parquet import PARQUET_DIRECTORY, part_name, write_parquet_part
from transform.tables import RunStamp, analyst_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=50)
    args = parser.parse_args()
    key = secrets.token_bytes(32)
    run = RunStamp("bench-run", datetime.now(UTC))
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'demo.sqlite3'}"
        build_demo_database(url, learners=args.learners, seed=7, replace=True)
        dest = Path(scratch) / "dest" / "bench-run" / PARQUET_DIRECTORY
        rows: Counter[str] = Counter()
        written = 0
        spec_mb = 0.0
        read_s = build_s = write_s = 0.0
        engine = create_source_engine(url)
        try:
            with snapshot(engine) as conn:
                ids = all_learner_ids(conn)
                for index, start in enumerate(range(0, len(ids), args.chunk)):
                    began = time.perf_counter()
                    found = read_learners(conn, ids[start : start + args.chunk], lesson_limit=None)
                    read_done = time.perf_counter()
                    tables = analyst_tables(list(found.values()), pseudonym_key=key, run=run)
                    spec_mb += pc.sum(tables["lessons"]["spec_bytes"]).as_py() / 1e6
                    built = time.perf_counter()
                    for name, table in tables.items():
                        part = write_parquet_part(
                            LocalFileSystem(), str(dest / name), part_name(index), table
                        )
                        rows[name] += part.rows
                        written += part.bytes
                    read_s += read_done - began
                    build_s += built - read_done
                    write_s += time.perf_counter() - built
        finally:
            engine.dispose()
    total = sum(rows.values())
    both = build_s + write_s
    peak = (pa.default_memory_pool().max_memory() or 0) / 1e6
    print(f"learners {args.learners}, chunk {args.chunk}: rows {dict(rows)}")
    print(f"read          {read_s:7.2f} s")
    print(f"build         {build_s:7.2f} s {total / build_s:10,.0f} rows/s")
    print(f"write         {write_s:7.2f} s {total / write_s:10,.0f} rows/s")
    print(f"build + write {both:7.2f} s {total / both:10,.0f} rows/s")
    print(f"stored specs read  {spec_mb:7.1f} MB {spec_mb / both:7.1f} MB/s (build + write)")
    print(f"Parquet written    {written / 1e6:7.1f} MB {written / 1e6 / write_s:7.1f} MB/s (write)")
    print(f"peak Arrow memory  {peak:7.1f} MB")


if __name__ == "__main__":
    main()
