"""The analyst tables read from the platform's optional source tables (contract §1b):
`quiz_answers` and `concept_mastery` rows in, Arrow tables of their declared schemas out.

Never part of the document: these rows come from tables the document does not read. Learners are
named by the same keyed pseudonym as in every other table; `question_text` is not kept (it may
name a person, and `question_id` joins the question's row in `quiz_questions`). Unreadable stored
values become null and are listed as problems (table, column, row id; never the value).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa

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


class SourceTableRows:
    """The rows of one optional source table's analyst table (`quiz_answers` or
    `concept_mastery`), added one source row at a time and taken as Arrow tables."""

    __slots__ = ("_convert", "_pseudonyms", "key", "name", "problems", "rows")

    def __init__(self, name: str, key: bytes) -> None:
        check_key(key)
        converters: dict[str, Callable[[Row], dict[str, Any]]] = {
            "quiz_answers": self._answer,
            "concept_mastery": self._mastery,
        }
        self._convert = converters[name]
        self.name = name
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self.problems: list[Problem] = []
        self._pseudonyms: dict[int, str] = {}  # an HMAC per learner, not per answer

    def add(self, row: Row) -> None:
        self.rows.append(self._convert(row))

    def take(self, run: RunStamp) -> pa.Table:
        """The rows added since the last call, as a table of the declared schema."""
        table = stamped(to_table(self.rows, body_schema(self.name)), self.name, run)
        self.rows = []
        return table

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
        learner_id = int(row["learner_id"])
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
