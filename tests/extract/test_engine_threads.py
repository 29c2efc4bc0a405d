"""The source engine under many threads at once, as the HTTP server's worker threads use it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from extract.engine import create_source_engine, snapshot
from extract.reader import read_learner
from tests.conftest import DemoSource


def test_sqlite_engine_hands_each_connection_to_one_thread_at_a_time(
    sqlite_demo: DemoSource,
) -> None:
    engine = create_source_engine(sqlite_demo.url)
    try:
        # SingletonThreadPool (SQLAlchemy's choice for a bare "sqlite://" URL) closes other
        # threads' connections while they are in use: a segfault under a threaded server.
        assert isinstance(engine.pool, sa.pool.QueuePool)
    finally:
        engine.dispose()


def test_concurrent_snapshots_from_many_threads(demo_source: DemoSource) -> None:
    engine = create_source_engine(demo_source.url)

    def read(learner_id: int) -> int:
        with snapshot(engine) as conn:
            return len(read_learner(conn, learner_id, lesson_limit=50).lessons)

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            counts = list(pool.map(read, demo_source.rows.learner_ids[:3] * 16))
    finally:
        engine.dispose()
    assert len(counts) == 48
    assert counts[1::3] == [50] * 16  # the second learner has 1,050 lessons
