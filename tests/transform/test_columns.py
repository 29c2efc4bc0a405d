"""transform/columns.py: whole columns converted by Arrow give what the row-by-row readers give,
or refuse (Irregular) so that the readers decide."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pytest

from tests.analyst import KEY, RUN, demo_learners
from tests.conftest import DemoSource
from transform import columns as col
from transform.pseudonyms import pseudonym
from transform.source_tables import SourceTableRows
from transform.tables import LearnerTableRows, as_text, int32_value
from transform.values import iso_timestamp

MOMENTS = [
    datetime(2024, 1, 2, 3, 4, 5, 678901),
    datetime(1969, 12, 31, 23, 59, 59, 999999),  # before the epoch: truncated toward the past
    datetime(1, 1, 1, 0, 0, 0, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(2024, 2, 29, 12, 0, 0),
    None,
]


def test_timestamps_are_the_documents_instants() -> None:
    expected = [iso_timestamp(moment) for moment in MOMENTS]
    got = col.timestamps(MOMENTS).to_pylist()
    assert [None if t is None else t.isoformat(timespec="milliseconds") for t in got] == [
        None if e is None else e.replace("Z", "+00:00") for e in expected
    ]
    assert col.timestamps([None, None]).type == pa.timestamp("ms", tz="UTC")


@pytest.mark.parametrize(
    "values",
    [
        ["2024-01-02 03:04:05"],  # SQLite's text
        [1704164645],  # an epoch number
        [datetime.fromisoformat("2024-01-02T03:04:05+02:00")],  # a zone
        [datetime(2024, 1, 2), "2024-01-02"],
    ],
)
def test_timestamps_in_any_other_form_are_left_to_the_readers(values: list[Any]) -> None:
    with pytest.raises(col.Irregular):
        col.timestamps(values)


def test_int32s_keep_exactly_what_int32_value_keeps() -> None:
    good = [0, -(2**31), 2**31 - 1, 7]
    assert col.int32s(good, nullable=False).to_pylist() == [int32_value(v) for v in good]
    assert col.int32s([1, None], nullable=True).to_pylist() == [1, None]
    assert col.int32s([None], nullable=True).type == pa.int32()
    assert col.int32s([], nullable=False).to_pylist() == []
    for odd in ([2**31], [-(2**31) - 1], [1, 2.0], [True], [1, "2"], [1, None], [2**70]):
        with pytest.raises(col.Irregular):
            col.int32s(odd, nullable=False)


def test_texts_are_str_or_left_to_as_text() -> None:
    assert col.texts(["a", None, "é"]).to_pylist() == [as_text(v) for v in ["a", None, "é"]]
    assert col.texts([None, None]).type == pa.string()
    for odd in ([1], [b"a"], ["a", 1]):
        with pytest.raises(col.Irregular):
            col.texts(odd)
    with pytest.raises(col.Irregular):
        col.texts(["a", None], nullable=False)


def test_flags_are_pythons_truth() -> None:
    for values in ([True, False, None], [1, 0, None, 5], [None]):
        assert col.flags(values).to_pylist() == [bool(v) for v in values]
    with pytest.raises(col.Irregular):
        col.flags(["yes"])


def test_text_lists_are_kept_and_json_text_is_left_to_the_readers() -> None:
    assert col.text_lists([["a", None], None, []]).to_pylist() == [["a", None], None, []]
    assert col.text_lists([[]]).type == pa.list_(pa.string())
    with pytest.raises(col.Irregular):
        col.text_lists(['["a"]'])


def test_pseudonyms_are_one_hmac_per_learner() -> None:
    asked: list[int] = []

    def named(learner_id: int) -> str:
        asked.append(learner_id)
        return pseudonym(learner_id, KEY)

    ids = [3, 3, 5, 3, 5, 8]
    assert col.pseudonyms(ids, named).to_pylist() == [pseudonym(i, KEY) for i in ids]
    assert sorted(asked) == [3, 5, 8]


def answer(**values: Any) -> tuple[Any, ...]:
    row = {
        "id": "a-1", "learner_id": 3, "lesson_id": "l-1", "question_index": 2,
        "question_hash": "h" * 64, "user_answer": 1, "correct_answer": 1, "is_correct": True,
        "concept_tags": ["Fractions"], "answered_at": datetime(2024, 1, 2, 3, 4, 5, 678901),
    } | values  # fmt: skip
    return tuple(row.values())


NAMES = ("id", "learner_id", "lesson_id", "question_index", "question_hash", "user_answer",
         "correct_answer", "is_correct", "concept_tags", "answered_at")  # fmt: skip


@pytest.mark.parametrize(
    "odd",
    [
        {},  # nothing odd: converted column by column
        {"question_index": "two"},
        {"answered_at": "2024-01-02 03:04:05.6789"},
        {"concept_tags": '["Fractions", 3]'},
        {"is_correct": 0, "user_answer": None},
        {"learner_id": "3"},
    ],
)
def test_a_batch_of_answers_gives_the_rows_and_problems_of_one_by_one(odd: dict[str, Any]) -> None:
    rows = [
        answer(),
        answer(**({"id": "a-2", "learner_id": 4} | odd)),
        answer(id="a-3", question_index=0),
    ]
    batched, one_by_one = SourceTableRows("quiz_answers", KEY), SourceTableRows("quiz_answers", KEY)
    one_by_one.add(dict(zip(NAMES, rows[0], strict=True)))
    batched.add(dict(zip(NAMES, rows[0], strict=True)))  # rows added singly stay in order
    batched.add_batch(NAMES, rows)
    batched.add_batch(NAMES, [])
    for row in rows:
        one_by_one.add(dict(zip(NAMES, row, strict=True)))
    assert batched.pending == 4
    assert batched.take(RUN).equals(one_by_one.take(RUN))
    assert batched.problems == one_by_one.problems


def test_the_postgresql_demo_is_converted_column_by_column(postgres_demo: DemoSource) -> None:
    built: list[int] = []

    class Counting(LearnerTableRows):
        def _lesson_table(self, *args: Any) -> pa.Table:
            table = super()._lesson_table(*args)
            built.append(table.num_rows)
            return table

    tables = Counting(KEY)
    for rows in demo_learners(postgres_demo):
        tables.add(rows)
    lessons = tables.take(RUN)["lessons"]
    assert sum(built) == lessons.num_rows > 0  # every batch: no row-by-row fallback
