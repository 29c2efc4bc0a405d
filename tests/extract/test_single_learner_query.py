"""One learner's capped lessons come from ORDER BY ... LIMIT; a chunk's from a window function.
Both must give the same rows in the same order."""

from __future__ import annotations

from extract.engine import create_source_engine, snapshot
from extract.reader import read_learner, read_learners
from tests.conftest import DemoSource


def test_single_learner_limit_matches_the_chunk_window(demo_source: DemoSource) -> None:
    learners = demo_source.rows.learner_ids
    engine = create_source_engine(demo_source.url)
    try:
        with snapshot(engine) as conn:
            chunk = read_learners(conn, learners, lesson_limit=7)
            for learner_id in learners:
                alone = read_learner(conn, learner_id, lesson_limit=7)
                assert [dict(r) for r in alone.lessons] == [
                    dict(r) for r in chunk[learner_id].lessons
                ]
                assert alone.lesson_total == chunk[learner_id].lesson_total
            big = read_learner(conn, learners[1], lesson_limit=1000)
    finally:
        engine.dispose()
    assert (len(big.lessons), big.lesson_total) == (1000, 1050)


def test_reading_leaves_the_connection_options_alone(demo_source: DemoSource) -> None:
    """Reading sets no option on the connection: SQLAlchemy 2's Connection.execution_options()
    sets them on the connection itself, so a yield_per there would make every later statement of
    the snapshot open a server-side cursor."""
    engine = create_source_engine(demo_source.url)
    try:
        with snapshot(engine) as conn:
            before = dict(conn.get_execution_options())
            read_learner(conn, 3, lesson_limit=1000)
            assert dict(conn.get_execution_options()) == before
            assert "yield_per" not in before
    finally:
        engine.dispose()
