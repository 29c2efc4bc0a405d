"""transform/source_tables.py: the analyst tables of the optional source tables (contract §1b)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import pyarrow as pa
import pytest

from extract.engine import create_source_engine, snapshot
from extract.reader import iter_optional_rows, optional_tables_present
from tests.analyst import KEY, RUN, demo_learners, personal_values
from tests.conftest import DemoSource
from transform.pseudonyms import pseudonym
from transform.source_tables import SourceTableRows
from transform.tables import TABLE_SCHEMAS, UNREADABLE_INTEGER, analyst_tables
from transform.values import MALFORMED_JSON, UNREADABLE_TIMESTAMP, Problem


def read_source_table(source: DemoSource, name: str) -> SourceTableRows:
    built = SourceTableRows(name, KEY)
    engine = create_source_engine(source.url)
    try:
        with snapshot(engine) as conn:
            assert optional_tables_present(conn) == {"quiz_answers": True, "concept_mastery": True}
            for row in iter_optional_rows(conn, name, source.rows.learner_ids):
                built.add(row)
    finally:
        engine.dispose()
    return built


def test_every_answer_of_the_demo_is_read_the_same_on_both_databases(
    demo_source: DemoSource,
) -> None:
    built = read_source_table(demo_source, "quiz_answers")
    table = built.take(RUN)
    assert table.schema.equals(TABLE_SCHEMAS["quiz_answers"], check_metadata=True)
    assert built.problems == []
    expected = sorted(
        (
            pseudonym(a["learner_id"], KEY),
            a["id"],
            a["lesson_id"],
            f"{a['lesson_id']}:{a['question_index']}",
            a["question_hash"],
            a["user_answer"],
            a["correct_answer"],
            a["is_correct"],
            a["concept_tags"],
            a["answered_at"].replace(microsecond=a["answered_at"].microsecond // 1000 * 1000),
        )
        for a in demo_source.rows.quiz_answers
    )
    rows = sorted(
        (
            r["learner_pseudonym"], r["answer_id"], r["lesson_id"], r["question_id"],
            r["question_hash"], r["user_answer"], r["correct_answer"], r["is_correct"],
            r["concept_tags"], r["answered_at"].replace(tzinfo=None),
        )
        for r in table.to_pylist()
    )  # fmt: skip
    assert rows == expected
    assert set(table.column("run_id").to_pylist()) == {RUN.run_id}


def test_question_ids_join_the_quiz_questions(sqlite_demo: DemoSource) -> None:
    answers = read_source_table(sqlite_demo, "quiz_answers").take(RUN)
    questions = analyst_tables(demo_learners(sqlite_demo), pseudonym_key=KEY, run=RUN)[
        "quiz_questions"
    ]
    by_id = {q["question_id"]: q for q in questions.to_pylist()}
    for answer in answers.to_pylist():
        question = by_id[answer["question_id"]]
        assert question["learner_pseudonym"] == answer["learner_pseudonym"]
        assert question["correct_index"] == answer["correct_answer"]


def test_concept_mastery_rows_are_read(demo_source: DemoSource) -> None:
    built = read_source_table(demo_source, "concept_mastery")
    table = built.take(RUN)
    assert built.problems == []
    assert table.num_rows == len(demo_source.rows.concept_mastery)
    levels = Counter(table.column("mastery_level").to_pylist())
    assert levels == Counter(m["mastery_level"] for m in demo_source.rows.concept_mastery)
    for column in table.column_names:
        assert table.column(column).null_count == 0, column


def test_no_question_text_and_no_personal_value_in_the_tables(demo_source: DemoSource) -> None:
    text = repr(read_source_table(demo_source, "quiz_answers").take(RUN).to_pylist())
    text += repr(read_source_table(demo_source, "concept_mastery").take(RUN).to_pylist())
    assert "question_text" not in text
    assert not any(a["question_text"] in text for a in demo_source.rows.quiz_answers[:50])
    for value in personal_values(demo_source.rows):
        assert value not in text


def answer_row(**values: Any) -> dict[str, Any]:
    row = {
        "id": "a-1", "learner_id": 3, "lesson_id": "l-1", "question_index": 2,
        "question_hash": "h", "user_answer": 1, "correct_answer": 1, "is_correct": 1,
        "concept_tags": '["Fractions"]', "answered_at": "2024-01-02 03:04:05.678999",
    }  # fmt: skip
    return row | values


def test_sqlite_values_of_any_form_are_read_or_reported() -> None:
    built = SourceTableRows("quiz_answers", KEY)
    built.add(answer_row())
    built.add(answer_row(id="a-2", question_index="two", concept_tags="[oops", answered_at="x"))
    first, second = built.take(RUN).to_pylist()
    assert first["question_id"] == "l-1:2" and first["concept_tags"] == ["Fractions"]
    assert first["answered_at"] == datetime.fromisoformat("2024-01-02T03:04:05.678+00:00")
    assert first["is_correct"] is True
    assert (second["question_index"], second["question_id"]) == (None, None)
    assert (second["concept_tags"], second["answered_at"]) == (None, None)
    assert built.problems == [
        Problem("quiz_answers", "question_index", "a-2", UNREADABLE_INTEGER),
        Problem("quiz_answers", "concept_tags", "a-2", MALFORMED_JSON),
        Problem("quiz_answers", "answered_at", "a-2", UNREADABLE_TIMESTAMP),
    ]


def test_rows_are_taken_once() -> None:
    built = SourceTableRows("quiz_answers", KEY)
    built.add(answer_row())
    assert built.take(RUN).num_rows == 1
    assert built.take(RUN).num_rows == 0


def test_a_short_key_or_an_unknown_table_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SourceTableRows("quiz_answers", b"short")
    with pytest.raises(KeyError):
        SourceTableRows("lessons", KEY)


def _answers_batch(**columns: pa.Array) -> pa.RecordBatch:
    """Two answers as Arrow's PostgreSQL driver reads them (`extract.arrow_read`)."""
    base = {
        "id": pa.array(["a-1", "a-2"]),
        "learner_id": pa.array([3, 4], pa.int32()),
        "lesson_id": pa.array(["l-1", "l-2"]),
        "question_index": pa.array([2, 0], pa.int32()),
        "question_hash": pa.array(["h", None]),
        "user_answer": pa.array([1, 3], pa.int32()),
        "correct_answer": pa.array([1, 2], pa.int32()),
        "is_correct": pa.array([True, None]),
        "concept_tags": pa.array([["Fractions"], None], pa.list_(pa.string())),
        "answered_at": pa.array([datetime(2024, 1, 2, 3, 4, 5, 678999), None], pa.timestamp("us")),
    }
    return pa.RecordBatch.from_pydict(base | columns)


def _as_python_rows(batch: pa.RecordBatch) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = [column.to_pylist() for column in batch.columns]
    return batch.schema.names, list(zip(*columns, strict=True))


@pytest.mark.parametrize(
    ("columns", "problems"),
    [
        ({}, 0),
        ({"user_answer": pa.array([None, 3], pa.int32())}, 1),  # NULL the rows report
        ({"learner_id": pa.array([3, 4], pa.int64())}, 0),
    ],
    ids=["regular", "a NULL the rows report", "bigint ids"],
)
def test_arrow_batches_give_the_rows_and_problems_of_python_values(
    columns: dict[str, pa.Array], problems: int
) -> None:
    batch = _answers_batch(**columns)
    arrow, python = SourceTableRows("quiz_answers", KEY), SourceTableRows("quiz_answers", KEY)
    assert arrow.accepts(batch.schema)
    arrow.add_arrow(batch)
    python.add_batch(*_as_python_rows(batch))
    assert arrow.take(RUN).equals(python.take(RUN), check_metadata=True)
    assert arrow.problems == python.problems
    assert len(arrow.problems) == problems


def test_arrow_batches_of_other_types_are_not_accepted() -> None:
    rows = SourceTableRows("quiz_answers", KEY)
    assert not rows.accepts(_answers_batch(question_index=pa.array([2, 0], pa.int16())).schema)
    assert not rows.accepts(_answers_batch(answered_at=pa.array([1, 2], pa.int64())).schema)
    assert not rows.accepts(_answers_batch().drop_columns(["question_hash"]).schema)
    mastery = SourceTableRows("concept_mastery", KEY)
    assert not mastery.accepts(_answers_batch().schema)
