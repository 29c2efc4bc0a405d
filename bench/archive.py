"""Throughput of the archive, against the naive export and against the database itself.

    .venv/bin/python bench/archive.py                   # 2,000 learners x ~100 lessons
    .venv/bin/python bench/archive.py --learners 200    # a quick run

Builds one demo database of N learners on SQLite and on a throwaway PostgreSQL (tests/pg.py),
then measures, each in a fresh process (so peak RSS is that method's own):

  (a) naive      the one-learner export (flows.chunk.export_one) called once per learner
  (b) archive    the archive_learners flow, documents only (--no-parquet), and with the Parquet
                 tables (the default), also at 4x the chunk size and on a quarter of the
                 learners, to show whether peak RSS grows with either
  (c) reference  the database building the same documents itself in one SQL statement
                 (PostgreSQL json_build_object/json_agg, SQLite json_object/json_group_array),
                 streamed to /dev/null

and prints learners/s, MB/s of JSON documents and peak RSS, with the ratios b/a and b/c for
each archive variant, and the Parquet rows/s of each table (its rows over the run's seconds).
The database has the platform's optional quiz_answers and concept_mastery tables (contract
§1b), one answer per question of every finished lesson, so every analyst table is written.
Figures only: nothing asserts a time. The Prefect API server the flow talks to runs in its own
process and is not counted in the flow's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC_VARIANTS = 400
EPOCH = datetime(2024, 1, 1, 8, 0, 0)


# --- a fast bulk generator -------------------------------------------------------------------


def _spec_pool(seed: int) -> list[str]:
    """Realistic lesson specs (the demo's generator), made once and reused: generating 200,000
    of them would take longer than the benchmark."""
    import orjson

    from learner_export.demo import _SUBJECTS, _Generator

    gen = _Generator(seed)
    pool = []
    for index in range(SPEC_VARIANTS):
        subject = sorted(_SUBJECTS)[index % len(_SUBJECTS)]
        topic = _SUBJECTS[subject][1][index % len(_SUBJECTS[subject][1])]
        pool.append(orjson.dumps(gen.spec(subject, topic, old_shape=index % 5 == 3)).decode())
    return pool


def bulk_rows(learners: int, lessons: int, seed: int) -> dict[str, Iterator[tuple[Any, ...]]]:
    """Rows for the four tables: user 1 is a parent, users 2..N+1 learners with about `lessons`
    lessons each (between half and one and a half times), a profile and a few achievements."""
    rng = random.Random(seed)
    pool = _spec_pool(seed)

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def moment(days: float) -> datetime:
        return EPOCH + timedelta(seconds=rng.uniform(0, days * 86_400))

    ids = range(2, learners + 2)

    def users() -> Iterator[tuple[Any, ...]]:
        yield (1, "parent@example.com", "parent-1", "Parent One", "PARENT", None, EPOCH)
        for i in ids:
            yield (i, f"l{i}@example.com", f"learner-{i}", f"Learner {i}", "LEARNER", 1, moment(30))

    def profiles() -> Iterator[tuple[Any, ...]]:
        graph = '{"nodes":[{"id":"Fractions","label":"Fractions","mastery":0.4}],"edges":[]}'
        for i in ids:
            yield (uid(), i, 1 + i % 8, graph, '["Math","Reading","Science"]',
                   '{"Math":{"averageScore":80,"lessonsCompleted":3}}', '["Art"]',
                   '["Fractions"]', moment(30))  # fmt: skip

    def lesson_rows() -> Iterator[tuple[Any, ...]]:
        for i in ids:
            for n in range(rng.randint(lessons // 2, lessons * 3 // 2)):
                created = moment(300)
                done = n % 5 != 0
                yield (uid(), i, uid() if n % 3 == 0 else None, f"custom-{n}",
                       "DONE" if done else "QUEUED", "Math", "STEM", "beginner",
                       "[]", pool[rng.randrange(len(pool))], rng.randrange(101) if done else None,
                       created, created + timedelta(minutes=20) if done else None)  # fmt: skip

    def achievement_rows() -> Iterator[tuple[Any, ...]]:
        for i in ids:
            for _ in range(rng.randrange(4)):
                payload = '{"type":"STREAK_7","title":"On Fire","icon":"🔥"}'
                yield (uid(), str(i), "STREAK_7", payload, moment(200))

    return {
        "users": users(),
        "learner_profiles": profiles(),
        "lessons": lesson_rows(),
        "achievements": achievement_rows(),
    }


def bulk_optional_rows(learners: int, seed: int) -> dict[str, Iterator[tuple[Any, ...]]]:
    """Rows for the optional tables, consistent in kind with `bulk_rows` (whose lessons they do
    not look up: the analyst tables do not join them): per learner about 80 finished lessons of
    ~7.5 questions answered, and a mastery row per concept."""
    rng = random.Random(seed + 1)

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    topics = ["Fractions", "Decimals", "Geometry", "Addition", "Multiplication"]

    def answers() -> Iterator[tuple[Any, ...]]:
        for i in range(2, learners + 2):
            for lesson in range(80):
                lesson_id = uid()
                for question in range(rng.randint(5, 10)):
                    right = rng.random() < 0.7
                    tags = f'["{topics[lesson % 5]}"]'
                    yield (uid(), i, lesson_id, question, f"Question {question + 1}",
                           f"{lesson % 400:064x}", 0 if right else 1, 0, right, tags,
                           EPOCH + timedelta(seconds=rng.uniform(0, 2e7)))  # fmt: skip

    def mastery() -> Iterator[tuple[Any, ...]]:
        for i in range(2, learners + 2):
            for topic in topics:
                total = rng.randint(50, 150)
                right = rng.randint(0, total)
                yield (uid(), i, topic, "Math", right, total, right * 100 // total, EPOCH,
                       right * 100 // total < 60, EPOCH)  # fmt: skip

    return {"quiz_answers": answers(), "concept_mastery": mastery()}


COLUMNS = {
    "users": ("id", "email", "username", "name", "role", "parent_id", "created_at"),
    "learner_profiles": (
        "id",
        "user_id",
        "grade_level",
        "graph",
        "subjects",
        "subject_performance",
        "recommended_subjects",
        "struggling_areas",
        "created_at",
    ),
    "lessons": (
        "id",
        "learner_id",
        "template_id",
        "module_id",
        "status",
        "subject",
        "category",
        "difficulty",
        "image_paths",
        "spec",
        "score",
        "created_at",
        "completed_at",
    ),
    "achievements": ("id", "learner_id", "type", "payload", "awarded_at"),
    "quiz_answers": (
        "id", "learner_id", "lesson_id", "question_index", "question_text", "question_hash",
        "user_answer", "correct_answer", "is_correct", "concept_tags", "answered_at",
    ),
    "concept_mastery": (
        "id", "learner_id", "concept_name", "subject", "correct_count", "total_count",
        "mastery_level", "last_tested", "needs_reinforcement", "created_at",
    ),
}  # fmt: skip


def build_sqlite(path: Path, learners: int, lessons: int, seed: int) -> str:
    import sqlite3

    import sqlalchemy as sa

    from extract.tables import metadata, optional_metadata

    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    optional_metadata.create_all(engine)
    engine.dispose()
    with sqlite3.connect(path) as db:
        tables = {**bulk_rows(learners, lessons, seed), **bulk_optional_rows(learners, seed)}
        for table, rows in tables.items():
            columns = COLUMNS[table]
            marks = ", ".join("?" for _ in columns)
            db.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                ((*r[:-1], r[-1]) for r in _sqlite_times(rows)),
            )
    return url


def _sqlite_times(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    for row in rows:
        yield tuple(v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in row)


def _pg_row(table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """`concept_tags` is `text[]` on PostgreSQL (JSON text in SQLite)."""
    if table != "quiz_answers":
        return row
    return (*row[:9], json.loads(row[9]), row[10])


def build_postgres(
    cluster: Any, learners: int, lessons: int, seed: int, *, name: str = "bench"
) -> str:
    import psycopg
    import sqlalchemy as sa

    from extract.tables import metadata, optional_metadata

    owner_url = cluster.create_database(name)
    engine = sa.create_engine(owner_url)
    metadata.create_all(engine)
    optional_metadata.create_all(engine)
    engine.dispose()
    with psycopg.connect(owner_url.replace("+psycopg", "")) as conn, conn.cursor() as cur:
        tables = {**bulk_rows(learners, lessons, seed), **bulk_optional_rows(learners, seed)}
        for table, rows in tables.items():
            with cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(_pg_row(table, row))
    # VACUUM as well as ANALYZE: freshly copied rows have no hint bits and no visibility map, so
    # the first method to read a page would pay for setting them, and autovacuum would soon
    # vacuum the new tables while some method is being timed. Every method then reads the
    # tables as a live database has them.
    with psycopg.connect(owner_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return str(cluster.grant_reader(name))


# --- the three ways, each measured in its own process ----------------------------------------


def measure_naive(url: str, out: Path) -> tuple[int, int]:
    from extract.engine import create_source_engine, snapshot
    from extract.reader import all_learner_ids
    from flows.chunk import ChunkJob, export_one

    engine = create_source_engine(url)
    with snapshot(engine) as conn:
        ids = all_learner_ids(conn)
    engine.dispose()
    job = ChunkJob(str(out), "naive", url, datetime.now(UTC), None, None, None, False, None)
    return len(ids), sum(export_one(job, i).bytes for i in ids)


def measure_archive(
    url: str, out: Path, *, parquet: bool, chunk_size: int | None, quarter: bool
) -> tuple[int, int, dict[str, int]]:
    from flows.archive import archive_learners
    from flows.options import DEFAULT_CHUNK_SIZE, ArchiveOptions, ArchiveSecrets

    learners = None
    if quarter:
        from extract.engine import create_source_engine, snapshot
        from extract.reader import all_learner_ids

        engine = create_source_engine(url)
        with snapshot(engine) as conn:
            ids = all_learner_ids(conn)
        engine.dispose()
        learners = ids[: len(ids) // 4]
    result = archive_learners(
        options=ArchiveOptions(
            dest=str(out),
            run_id="bench",
            parquet=parquet,
            learners=learners,
            chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
        ),
        secrets=ArchiveSecrets(
            source_url=url,  # type: ignore[arg-type]
            pseudonym_key="bench-pseudonym-key",  # type: ignore[arg-type]
        ),
    )
    return result.counts.files, result.counts.bytes, result.parquet_rows


REFERENCE_POSTGRES = """
SELECT json_build_object(
  'learner', json_build_object('id', u.id, 'username', u.username, 'email', u.email,
      'name', u.name, 'role', u.role, 'parentId', u.parent_id, 'createdAt', {ts_u}),
  'profile', (SELECT json_build_object('id', p.id, 'userId', p.user_id::text,
      'gradeLevel', p.grade_level,
      'graph', coalesce(p.graph, '{{"nodes": [], "edges": []}}'::json),
      'subjects', coalesce(p.subjects, '["Math", "Reading", "Science"]'::json),
      'subjectPerformance', coalesce(p.subject_performance, '{{}}'::json),
      'recommendedSubjects', coalesce(p.recommended_subjects, '[]'::json),
      'strugglingAreas', coalesce(p.struggling_areas, '[]'::json), 'createdAt', {ts_p})
    FROM learner_profiles p WHERE p.user_id = u.id
    ORDER BY p.created_at NULLS LAST, p.id COLLATE "C" LIMIT 1),
  'lessons', coalesce((SELECT json_agg(json_build_object('id', l.id, 'learnerId', l.learner_id,
      'moduleId', l.module_id, 'status', l.status, 'subject', l.subject,
      'category', l.category, 'difficulty', l.difficulty, 'score', l.score, 'spec', l.spec,
      'imagePaths', coalesce(l.image_paths, '[]'::json), 'templateId', l.template_id,
      'createdAt', {ts_l}, 'completedAt', {ts_c})
      ORDER BY l.created_at DESC NULLS LAST, l.id COLLATE "C")
    FROM (SELECT * FROM lessons WHERE learner_id = u.id
          ORDER BY created_at DESC NULLS LAST, id COLLATE "C" LIMIT 1000) l), '[]'::json),
  'achievements', coalesce((SELECT json_agg(json_build_object('id', a.id::text,
      'learnerId', a.learner_id, 'type', a.type, 'payload', a.payload, 'earnedAt', {ts_a})
      ORDER BY a.awarded_at DESC NULLS LAST, a.id::text COLLATE "C")
    FROM achievements a WHERE a.learner_id = u.id::text), '[]'::json),
  'exportDate', %(now)s::text, 'exportedBy', NULL)::text
FROM users u WHERE u.role = 'LEARNER' ORDER BY u.id
"""

REFERENCE_SQLITE = """
SELECT json_object(
  'learner', json_object('id', u.id, 'username', u.username, 'email', u.email,
      'name', u.name, 'role', u.role, 'parentId', u.parent_id, 'createdAt', {ts_u}),
  'profile', (SELECT json_object('id', p.id, 'userId', CAST(p.user_id AS TEXT),
      'gradeLevel', p.grade_level,
      'graph', json(coalesce(p.graph, '{{"nodes": [], "edges": []}}')),
      'subjects', json(coalesce(p.subjects, '["Math", "Reading", "Science"]')),
      'subjectPerformance', json(coalesce(p.subject_performance, '{{}}')),
      'recommendedSubjects', json(coalesce(p.recommended_subjects, '[]')),
      'strugglingAreas', json(coalesce(p.struggling_areas, '[]')), 'createdAt', {ts_p})
    FROM learner_profiles p WHERE p.user_id = u.id
    ORDER BY p.created_at NULLS LAST, p.id LIMIT 1),
  'lessons', (SELECT json_group_array(json_object('id', l.id, 'learnerId', l.learner_id,
      'moduleId', l.module_id, 'status', l.status, 'subject', l.subject,
      'category', l.category, 'difficulty', l.difficulty, 'score', l.score,
      'spec', json(l.spec), 'imagePaths', json(coalesce(l.image_paths, '[]')),
      'templateId', l.template_id, 'createdAt', {ts_l}, 'completedAt', {ts_c}))
    FROM (SELECT * FROM lessons WHERE learner_id = u.id
          ORDER BY created_at DESC NULLS LAST, id LIMIT 1000) l),
  'achievements', (SELECT json_group_array(json_object('id', a.id, 'learnerId', a.learner_id,
      'type', a.type, 'payload', json(a.payload), 'earnedAt', {ts_a}))
    FROM (SELECT * FROM achievements WHERE learner_id = CAST(u.id AS TEXT)
          ORDER BY awarded_at DESC NULLS LAST, id) a),
  'exportDate', :now, 'exportedBy', NULL)
FROM users u WHERE u.role = 'LEARNER' ORDER BY u.id
"""


def _timestamps(postgres: bool) -> dict[str, str]:
    columns = {"ts_u": "u.created_at", "ts_p": "p.created_at", "ts_l": "l.created_at",
               "ts_c": "l.completed_at", "ts_a": "a.awarded_at"}  # fmt: skip
    if postgres:
        pattern = '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\''
        return {k: f"to_char({c}, {pattern})" for k, c in columns.items()}
    return {k: f"strftime('%Y-%m-%dT%H:%M:%fZ', {c})" for k, c in columns.items()}


def measure_reference(url: str) -> tuple[int, int]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    count = size = 0
    with Path(os.devnull).open("wb") as sink:
        if url.startswith("sqlite"):
            import sqlite3

            sql = REFERENCE_SQLITE.format(**_timestamps(postgres=False))
            with sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True) as db:
                for (text,) in db.execute(sql, {"now": now}):
                    data = text.encode()
                    sink.write(data)
                    count, size = count + 1, size + len(data)
        else:
            import psycopg

            sql = REFERENCE_POSTGRES.format(**_timestamps(postgres=True))
            with (
                psycopg.connect(url.replace("+psycopg", "")) as conn,
                conn.cursor(name="reference") as cursor,  # server-side: streamed
            ):
                cursor.itersize = 200
                cursor.execute(sql, {"now": now})  # type: ignore[arg-type]
                for (text,) in cursor:
                    data = text.encode()
                    sink.write(data)
                    count, size = count + 1, size + len(data)
    return count, size


ARCHIVES = {
    # method: (parquet, chunk size (None: the default), a quarter of the learners)
    "archive": (False, None, False),
    "archive+parquet": (True, None, False),
    "+parquet chunk x4": (True, 4 * 200, False),
    "+parquet 1/4 lrn": (True, None, True),
}


def child(method: str, url: str) -> None:
    """Run one method and print its figures as one JSON line (the parent reads it). Modules are
    imported before the clock starts, so each figure is the work itself."""
    import flows.archive
    import flows.chunk  # noqa: F401

    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-out-") as out:
        started = time.perf_counter()
        if method == "naive":
            learners, size = measure_naive(url, Path(out))
        elif method in ARCHIVES:
            parquet, chunk_size, quarter = ARCHIVES[method]
            learners, size, rows = measure_archive(
                url, Path(out), parquet=parquet, chunk_size=chunk_size, quarter=quarter
            )
        else:
            learners, size = measure_reference(url)
        seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"learners": learners, "bytes": size, "seconds": seconds, "rss_mb": rss_mb}
    print(json.dumps({**figures, "rows": rows}))


def run_child(method: str, url: str, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", method, "--url", url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{method} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def report(kind: str, results: dict[str, dict[str, Any]]) -> None:
    print(f"\n{kind}")
    print(f"  {'method':<19}{'learners':>9}{'seconds':>9}{'learners/s':>12}{'MB/s JSON':>11}"
          f"{'peak RSS MB':>13}")  # fmt: skip
    for method, f in results.items():
        print(f"  {method:<19}{f['learners']:>9.0f}{f['seconds']:>9.2f}"
              f"{f['learners'] / f['seconds']:>12.1f}{f['bytes'] / 1e6 / f['seconds']:>11.1f}"
              f"{f['rss_mb']:>13.0f}")  # fmt: skip
    speed = {m: f["bytes"] / f["seconds"] for m, f in results.items()}
    for method in ARCHIVES:
        print(f"  {method:<19} b/a {speed[method] / speed['naive']:5.2f}   "
              f"b/c {speed[method] / speed['reference']:5.2f}")  # fmt: skip
    parquet = results["archive+parquet"]
    print("  Parquet rows/s per table (archive+parquet; rows over the run's seconds):")
    for table, rows in sorted(parquet["rows"].items()):
        print(f"    {table:<23}{rows:>11,} rows {rows / parquet['seconds']:>12,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=2_000)
    parser.add_argument("--lessons", type=int, default=100, help="average lessons per learner")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url)
        return

    from flows.server import local_server

    methods = ["naive", *ARCHIVES, "reference"]
    work = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    print(f"{args.learners} learners x ~{args.lessons} lessons; working in {work}", flush=True)
    sources = {}
    started = time.perf_counter()
    sources["SQLite"] = build_sqlite(work / "bench.sqlite3", args.learners, args.lessons, args.seed)
    print(f"built the SQLite database in {time.perf_counter() - started:.0f} s", flush=True)
    cluster = None
    if not args.no_postgres:
        from tests.pg import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        started = time.perf_counter()
        sources["PostgreSQL"] = build_postgres(cluster, args.learners, args.lessons, args.seed)
        print(f"built the PostgreSQL database in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        with local_server(work / "prefect") as api_url:
            env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "prefect")}
            env["PYTHONPATH"] = str(ROOT)
            for kind, url in sources.items():
                results = {m: run_child(m, url, env) for m in methods}
                report(kind, results)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
