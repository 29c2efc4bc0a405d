"""The analyst tables read from the platform's optional source tables (contract §1b):
`quiz_answers` and `concept_mastery` rows in, Arrow tables of their declared schemas out.

Never part of the document: these rows come from tables the document does not read. Learners are
named by the same keyed pseudonym as in every other table; `question_text` is not kept (it may
name a person, and `question_id` joins the question's row in `quiz_questions`). Unreadable stored
values become null and are listed as problems (table, column, row id; never the value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from transform import columns as col
from transform.pseudonyms import check_key, pseudonym
from transform.quiz import text_items
from transform.records import Row
from transform.tables import (
    UNREADABLE_INTEGER,
    RunStamp,
    as_text,
    body_schema,
    int32_value,
    parse_stored_json,
    question_id,
    stamped,
    to_table,
)
from transform.values import MALFORMED_JSON, UNREADABLE_TIMESTAMP, Problem, iso_timestamp


def _is_text(kind: pa.DataType) -> bool:
    return bool(kind == pa.string())


def _is_int32(kind: pa.DataType) -> bool:
    return bool(kind == pa.int32())


def _is_id(kind: pa.DataType) -> bool:
    return bool(kind in (pa.int32(), pa.int64()))


def _is_flag(kind: pa.DataType) -> bool:
    return bool(kind == pa.bool_())


def _is_timestamp(kind: pa.DataType) -> bool:
    return bool(kind == pa.timestamp("us"))  # PostgreSQL's `timestamp`: no zone


def _is_text_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) and kind.value_type == pa.string())


_ARROW_TYPES: dict[str, dict[str, Callable[[pa.DataType], bool]]] = {
    "quiz_answers": {
        "id": _is_text, "learner_id": _is_id, "lesson_id": _is_text,
        "question_index": _is_int32, "question_hash": _is_text, "user_answer": _is_int32,
        "correct_answer": _is_int32, "is_correct": _is_flag, "concept_tags": _is_text_list,
        "answered_at": _is_timestamp,
    },
    "concept_mastery": {
        "learner_id": _is_id, "concept_name": _is_text, "subject": _is_text,
        "correct_count": _is_int32, "total_count": _is_int32, "mastery_level": _is_int32,
        "last_tested": _is_timestamp, "needs_reinforcement": _is_flag, "created_at": _is_timestamp,
    },
}  # fmt: skip
"""The Arrow types `SourceTableRows.add_arrow` takes for each column: those of the contract's
SQL types (§1b) as Arrow's PostgreSQL driver reads them (uuid ids are read as text)."""


def _required(values: pa.Array) -> pa.Array:
    """A column whose NULLs the row readers report as problems: as it is, or Irregular."""
    if values.null_count:
        raise col.Irregular
    return values


class SourceTableRows:
    """The rows of one optional source table's analyst table (`quiz_answers` or
    `concept_mastery`), added a source row (`add`) or a batch of them (`add_batch`) at a time
    and taken as Arrow tables, in the order added."""

    __slots__ = ("_columns", "_convert", "_done", "_pseudonyms", "key", "name", "problems", "rows")

    def __init__(self, name: str, key: bytes) -> None:
        check_key(key)
        converters: dict[str, Callable[[Row], dict[str, Any]]] = {
            "quiz_answers": self._answer,
            "concept_mastery": self._mastery,
        }
        self._convert = converters[name]
        batch_converters: dict[
            str, Callable[[Mapping[str, Sequence[Any]]], dict[str, pa.Array]]
        ] = {
            "quiz_answers": self._answer_columns,
            "concept_mastery": self._mastery_columns,
        }
        self._columns = batch_converters[name]
        self._done: list[pa.Table] = []  # converted batches, in order, before `rows`
        self.name = name
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self.problems: list[Problem] = []
        self._pseudonyms: dict[int, str] = {}  # an HMAC per learner, not per answer

    @property
    def pending(self) -> int:
        """Rows added and not taken yet."""
        return len(self.rows) + sum(int(table.num_rows) for table in self._done)

    def add(self, row: Row) -> None:
        """Add one source row (keyed by column name), read value by value."""
        self.rows.append(self._convert(row))

    def add_batch(self, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Add source rows given as tuples of the columns `names`, converted column by column
        (`transform.columns`); a batch holding any value of another form is read row by row
        (`add`), so the rows and problems are those of `add` either way."""
        self._settle()
        if not rows:
            return
        by_name = dict(zip(names, zip(*rows, strict=True), strict=True))
        try:
            arrays = self._columns(by_name)
        except col.Irregular:
            for row in rows:
                self.add(dict(zip(names, row, strict=True)))
            return
        schema = body_schema(self.name)
        self._done.append(pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema))

    def accepts(self, schema: pa.Schema) -> bool:
        """Whether record batches of `schema` (the source table read into Arrow,
        `extract.arrow_read`) can be added with `add_arrow`: every column `add_batch` reads is
        there, of the type the contract's SQL type reads as."""
        wanted = _ARROW_TYPES[self.name]
        return all(
            schema.get_field_index(name) >= 0 and accepted(schema.field(name).type)
            for name, accepted in wanted.items()
        )

    def add_arrow(self, batch: pa.RecordBatch) -> None:
        """Add the rows of a record batch of a schema `accepts`, converted by Arrow alone. A
        batch holding a value the column converters leave to the row readers (a NULL where
        those report a problem) is added as `add_batch` adds the same values in Python, so the
        rows and problems are those of `add_batch` either way."""
        self._settle()
        if not batch.num_rows:
            return
        values = {name: batch.column(name) for name in batch.schema.names}
        try:
            arrays = self._arrow_columns(values)
        except col.Irregular:
            columns = [column.to_pylist() for column in batch.columns]
            self.add_batch(batch.schema.names, list(zip(*columns, strict=True)))
            return
        schema = body_schema(self.name)
        self._done.append(pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema))

    def take(self, run: RunStamp) -> pa.Table:
        """The rows added since the last call, as a table of the declared schema."""
        self._settle()
        done, self._done = self._done, []
        body = pa.concat_tables(done) if done else body_schema(self.name).empty_table()
        return stamped(body, self.name, run)

    def _settle(self) -> None:
        """Turn the rows added one by one into a table, after the batches before them."""
        if self.rows:
            self._done.append(to_table(self.rows, body_schema(self.name)))
            self.rows = []

    def _answer_columns(self, values: Mapping[str, Sequence[Any]]) -> dict[str, pa.Array]:
        """`_answer`'s columns for a batch, or Irregular."""
        answered_at = col.timestamps(values["answered_at"])  # SQLite's text: fails first
        lesson_id = col.texts(values["lesson_id"], nullable=False)
        index = col.int32s(values["question_index"], nullable=False)
        return {
            "learner_pseudonym": col.pseudonyms(values["learner_id"], self._pseudonym_of),
            "answer_id": col.texts(values["id"], nullable=False),
            "lesson_id": lesson_id,
            "question_id": col.question_ids(lesson_id, index),
            "question_index": index,
            "question_hash": col.texts(values["question_hash"]),
            "user_answer": col.int32s(values["user_answer"], nullable=False),
            "correct_answer": col.int32s(values["correct_answer"], nullable=False),
            "is_correct": col.flags(values["is_correct"]),
            "concept_tags": col.text_lists(values["concept_tags"]),
            "answered_at": answered_at,
        }

    def _mastery_columns(self, values: Mapping[str, Sequence[Any]]) -> dict[str, pa.Array]:
        """`_mastery`'s columns for a batch, or Irregular."""
        return {
            "learner_pseudonym": col.pseudonyms(values["learner_id"], self._pseudonym_of),
            "concept_name": col.texts(values["concept_name"]),
            "subject": col.texts(values["subject"]),
            **{
                name: col.int32s(values[name], nullable=False)
                for name in ("correct_count", "total_count", "mastery_level")
            },
            "last_tested": col.timestamps(values["last_tested"]),
            "needs_reinforcement": col.flags(values["needs_reinforcement"]),
            "created_at": col.timestamps(values["created_at"]),
        }

    def _arrow_columns(self, values: Mapping[str, pa.Array]) -> dict[str, pa.Array]:
        """`_answer_columns` or `_mastery_columns` for columns already in Arrow."""
        pseudonyms = col.pseudonyms(values["learner_id"], self._pseudonym_of)
        if self.name == "concept_mastery":
            return {
                "learner_pseudonym": pseudonyms,
                "concept_name": values["concept_name"],
                "subject": values["subject"],
                **{
                    name: _required(values[name])
                    for name in ("correct_count", "total_count", "mastery_level")
                },
                "last_tested": col.arrow_timestamps(values["last_tested"]),
                "needs_reinforcement": pc.fill_null(values["needs_reinforcement"], False),
                "created_at": col.arrow_timestamps(values["created_at"]),
            }
        lesson_id = _required(values["lesson_id"])
        index = _required(values["question_index"])
        return {
            "learner_pseudonym": pseudonyms,
            "answer_id": _required(values["id"]),
            "lesson_id": lesson_id,
            "question_id": col.question_ids(lesson_id, index),
            "question_index": index,
            "question_hash": values["question_hash"],
            "user_answer": _required(values["user_answer"]),
            "correct_answer": _required(values["correct_answer"]),
            "is_correct": pc.fill_null(values["is_correct"], False),
            "concept_tags": pc.cast(values["concept_tags"], pa.list_(pa.string())),
            "answered_at": col.arrow_timestamps(values["answered_at"]),
        }

    def _answer(self, row: Row) -> dict[str, Any]:
        lesson_id = str(row["lesson_id"])
        index = self._int(row, "question_index")
        return {
            "learner_pseudonym": self._pseudonym(row),
            "answer_id": str(row["id"]),
            "lesson_id": lesson_id,
            "question_id": None if index is None else question_id(lesson_id, index),
            "question_index": index,
            "question_hash": as_text(row["question_hash"]),
            "user_answer": self._int(row, "user_answer"),
            "correct_answer": self._int(row, "correct_answer"),
            "is_correct": bool(row["is_correct"]),
            "concept_tags": self._tags(row),
            "answered_at": self._timestamp(row, "answered_at"),
        }

    def _mastery(self, row: Row) -> dict[str, Any]:
        return {
            "learner_pseudonym": self._pseudonym(row),
            "concept_name": as_text(row["concept_name"]),
            "subject": as_text(row["subject"]),
            "correct_count": self._int(row, "correct_count"),
            "total_count": self._int(row, "total_count"),
            "mastery_level": self._int(row, "mastery_level"),
            "last_tested": self._timestamp(row, "last_tested"),
            "needs_reinforcement": bool(row["needs_reinforcement"]),
            "created_at": self._timestamp(row, "created_at"),
        }

    def _pseudonym(self, row: Row) -> str:
        return self._pseudonym_of(int(row["learner_id"]))

    def _pseudonym_of(self, learner_id: int) -> str:
        known = self._pseudonyms.get(learner_id)
        if known is None:
            known = self._pseudonyms[learner_id] = pseudonym(learner_id, self.key)
        return known

    def _int(self, row: Row, column: str) -> int | None:
        # NOT NULL integer columns, but SQLite stores whatever it was given: a value that is no
        # int32 is a problem and null, never a made-up number.
        value = int32_value(row[column])
        if value is None:
            self.problems.append(Problem(self.name, column, str(row["id"]), UNREADABLE_INTEGER))
        return value

    def _tags(self, row: Row) -> list[str | None] | None:
        stored = row["concept_tags"]
        if stored is None or isinstance(stored, list):  # PostgreSQL's text[] arrives as a list
            return stored
        try:
            return text_items(parse_stored_json(stored))  # JSON text in SQLite
        except ValueError:
            self.problems.append(Problem(self.name, "concept_tags", str(row["id"]), MALFORMED_JSON))
            return None

    def _timestamp(self, row: Row, column: str) -> datetime | None:
        try:
            text = iso_timestamp(row[column])
        except (ValueError, OverflowError, OSError):
            self.problems.append(Problem(self.name, column, str(row["id"]), UNREADABLE_TIMESTAMP))
            return None
        return None if text is None else datetime.fromisoformat(text)
