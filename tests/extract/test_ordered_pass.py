"""extract.ordered_pass: one ordered pass per table, cut into chunks, gives every learner the
rows (and so the document bytes) that reading each chunk by index gives, on SQLite and
PostgreSQL, with and without the lesson cap; and the range statements read each table once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from extract.engine import create_source_engine, snapshot
from extract.ordered_pass import OrderedPass
from extract.queries import IdRange, achievements_query, text_id_key
from extract.reader import iter_learners
from extract.records import LearnerRows
from tests.conftest import DemoSource
from transform.document import LESSON_CAP, build_document
from transform.encoding import encode_document

EXPORT_DATE = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def _documents(learners: list[LearnerRows]) -> dict[int, bytes]:
    return {
        rows.learner_id: encode_document(
            build_document(rows, export_date=EXPORT_DATE, exported_by=None).document
        )
        for rows in learners
    }


def _chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


@pytest.mark.parametrize("lesson_limit", [LESSON_CAP, None, 2])
def test_a_pass_cut_into_chunks_gives_the_documents_of_reading_each_chunk_by_index(
    demo_source: DemoSource, lesson_limit: int | None
) -> None:
    learners = demo_source.rows.learner_ids
    others = [u["id"] for u in demo_source.rows.users if u["id"] not in learners]
    # Every user id and two that do not exist: the pass skips the rows of non-learners in range.
    ids = sorted({*learners, *others, max(learners) + 5, 0})
    engine = create_source_engine(demo_source.url)
    try:
        with snapshot(engine) as conn:
            by_index = [
                rows
                for chunk in _chunks(ids, 3)
                for rows in iter_learners(conn, chunk, lesson_limit=lesson_limit)
            ]
        with snapshot(engine) as conn, OrderedPass(conn, ids, lesson_limit=lesson_limit) as read:
            passed = [rows for chunk in _chunks(ids, 3) for rows in read.learners(chunk)]
    finally:
        engine.dispose()
    assert [r.learner_id for r in passed] == learners
    assert [r.lesson_total for r in passed] == [r.lesson_total for r in by_index]
    assert [len(r.achievements) for r in passed] == [len(r.achievements) for r in by_index]
    assert _documents(passed) == _documents(by_index)
    # The demo's learners have lessons and achievements: the comparison is not of empty lists.
    assert sum(len(r.lessons) for r in passed) > len(learners)
    assert sum(len(r.achievements) for r in passed) > 0


def test_chunks_must_come_in_ascending_order(sqlite_demo: DemoSource) -> None:
    ids = sqlite_demo.rows.learner_ids
    engine = create_source_engine(sqlite_demo.url)
    try:
        with snapshot(engine) as conn, OrderedPass(conn, ids, lesson_limit=None) as read:
            assert [r.learner_id for r in read.learners(ids[2:4])] == ids[2:4]
            with pytest.raises(ValueError, match="ascending"):
                list(read.learners(ids[:2]))
    finally:
        engine.dispose()
    with pytest.raises(ValueError):
        IdRange(5, 4)
    with pytest.raises(ValueError):
        IdRange(-1, 4)


def test_text_learner_ids_in_a_range_come_in_numeric_order() -> None:
    """`achievements.learner_id` is text: a range of ids reads the texts between its ends by
    `text_id_key` (length, then code point), in that order, which for the ids' own texts is
    their numeric order across digit counts. Other texts in between ("x", "09") can never
    equal an id's text: the pass steps over them."""
    engine = sa.create_engine("sqlite://")
    texts = ["9", "10", "99", "100", "101", "1000", "09", "x", "", "8", "11"]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE achievements (id TEXT PRIMARY KEY, learner_id TEXT NOT NULL, "
            "type TEXT, payload TEXT, awarded_at TIMESTAMP)"
        )
        for number, text in enumerate(texts):
            conn.exec_driver_sql(
                "INSERT INTO achievements VALUES (?, ?, 'T', NULL, NULL)", (f"a{number}", text)
            )
        found = [
            row.learner_id for row in conn.execute(achievements_query("sqlite", IdRange(9, 101)))
        ]
    assert found == ["9", "x", "09", "10", "11", "99", "100", "101"]
    assert found == sorted(found, key=text_id_key)
    ids = [text for text in found if text.isdigit() and str(int(text)) == text]
    assert ids == ["9", "10", "11", "99", "100", "101"]
