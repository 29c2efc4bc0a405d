"""The analyst tables: a chunk of learners' rows in, four Arrow tables of declared schema out.

A sibling of the document, not built from it: the tables keep every lesson (no 1,000 cap) and
name learners only by keyed pseudonym (`transform.pseudonyms`). No column holds a name, email,
username, password, user id or parent id; the parent link is dropped altogether, since even a
pseudonymized parent would tell which children are siblings.

Every table is built with its module-level schema (never an inferred one), so a chunk whose column
is all null keeps the declared type, and an empty chunk gives empty tables of the same schemas.
Timestamps are UTC with millisecond precision, truncated exactly as in the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from transform.pseudonyms import check_key, pseudonym
from transform.quiz import spec_questions, spec_title, text_items
from transform.records import LearnerRows, Row
from transform.values import (
    MALFORMED_JSON,
    UNREADABLE_TIMESTAMP,
    Problem,
    is_json_null,
    iso_timestamp,
)

UNREADABLE_INTEGER = "unreadable integer"

SCHEMA_VERSION = "1"
"""Written into every file's schema metadata; raised when a column changes meaning or type."""

_TIMESTAMP = pa.timestamp("ms", tz="UTC")
# The item field is named `element`, as the Parquet spec names it, so the schema read back from a
# file is exactly the declared one.
_TEXT_LIST = pa.list_(pa.field("element", pa.string(), nullable=True))
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _metadata(table: str) -> dict[str, str]:
    return {"learner_export.table": table, "learner_export.schema_version": SCHEMA_VERSION}


LEARNERS_SCHEMA = pa.schema(
    [
        pa.field("learner_pseudonym", pa.string(), nullable=False),
        pa.field("grade_level", pa.int32(), nullable=True),  # null: no profile
        pa.field("has_profile", pa.bool_(), nullable=False),
        pa.field("subjects", _TEXT_LIST, nullable=True),  # null: none stored, or not a list
        pa.field("recommended_subjects", _TEXT_LIST, nullable=True),
        pa.field("struggling_areas", _TEXT_LIST, nullable=True),
        pa.field("created_at", _TIMESTAMP, nullable=True),  # the account's creation
        pa.field("lessons_total", pa.int32(), nullable=False),
        pa.field("lessons_done", pa.int32(), nullable=False),
        pa.field("questions_total", pa.int32(), nullable=False),
        pa.field("achievements_total", pa.int32(), nullable=False),
    ],
    metadata=_metadata("learners"),
)
"""One row per learner of the chunk."""

LESSONS_SCHEMA = pa.schema(
    [
        pa.field("learner_pseudonym", pa.string(), nullable=False),
        pa.field("lesson_id", pa.string(), nullable=False),
        pa.field("module_id", pa.string(), nullable=True),
        pa.field("template_id", pa.string(), nullable=True),
        pa.field("status", pa.string(), nullable=True),
        pa.field("subject", pa.string(), nullable=True),
        pa.field("category", pa.string(), nullable=True),
        pa.field("difficulty", pa.string(), nullable=True),
        pa.field("score", pa.int32(), nullable=True),
        pa.field("created_at", _TIMESTAMP, nullable=True),
        pa.field("completed_at", _TIMESTAMP, nullable=True),
        pa.field("has_spec", pa.bool_(), nullable=False),  # a readable, non-null spec
        pa.field("spec_malformed", pa.bool_(), nullable=False),
        pa.field("spec_bytes", pa.int64(), nullable=True),  # size of the stored text; null: NULL
        pa.field("spec_title", pa.string(), nullable=True),
        pa.field("question_count", pa.int32(), nullable=False),  # its rows in quiz_questions
        pa.field("image_count", pa.int32(), nullable=True),  # null: image_paths unreadable
    ],
    metadata=_metadata("lessons"),
)
"""One row per lesson, every lesson of every learner of the chunk, in `LearnerRows` order."""

QUIZ_QUESTIONS_SCHEMA = pa.schema(
    [
        pa.field("learner_pseudonym", pa.string(), nullable=False),
        pa.field("lesson_id", pa.string(), nullable=False),
        pa.field("question_index", pa.int32(), nullable=False),
        pa.field("subject", pa.string(), nullable=True),
        pa.field("question", pa.string(), nullable=True),
        pa.field("option_count", pa.int32(), nullable=True),
        pa.field("options", _TEXT_LIST, nullable=True),
        pa.field("options_key", pa.string(), nullable=True),  # "options", or the older "choices"
        pa.field("correct_index", pa.int32(), nullable=True),
        pa.field("correct_option", pa.string(), nullable=True),
        pa.field("explanation", pa.string(), nullable=True),
    ],
    metadata=_metadata("quiz_questions"),
)
"""One row per entry of a lesson spec's `questions` list (see `transform.quiz.QuizQuestion`)."""

ACHIEVEMENTS_SCHEMA = pa.schema(
    [
        pa.field("learner_pseudonym", pa.string(), nullable=False),
        pa.field("achievement_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=True),
        pa.field("earned_at", _TIMESTAMP, nullable=True),
        pa.field("title", pa.string(), nullable=True),  # from the payload, when it has one
        pa.field("icon", pa.string(), nullable=True),
    ],
    metadata=_metadata("achievements"),
)
"""One row per achievement, in `LearnerRows` order."""

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "learners": LEARNERS_SCHEMA,
    "lessons": LESSONS_SCHEMA,
    "quiz_questions": QUIZ_QUESTIONS_SCHEMA,
    "achievements": ACHIEVEMENTS_SCHEMA,
}
"""The analyst tables by name, in the order they are built; the names are directory names."""


@dataclass(frozen=True, slots=True)
class BuiltTables:
    """The tables of one chunk and what the export must report about them.

    `tables` has exactly the keys of TABLE_SCHEMAS, each table of exactly that schema. `problems`
    lists the stored values that were read as null (malformed JSON, unreadable timestamps or
    integers), in the order met; they name tables, columns and row ids, never values.
    """

    tables: dict[str, pa.Table]
    problems: tuple[Problem, ...]


def analyst_tables(rows: Sequence[LearnerRows], *, pseudonym_key: bytes) -> dict[str, pa.Table]:
    """The four analyst tables of a chunk of learners; see `build_analyst_tables`."""
    return build_analyst_tables(rows, pseudonym_key=pseudonym_key).tables


def build_analyst_tables(rows: Sequence[LearnerRows], *, pseudonym_key: bytes) -> BuiltTables:
    """The four analyst tables of a chunk of learners, and the problems met building them.

    Every lesson is kept: `rows` must be read with `lesson_limit=None`, and a learner whose
    lessons were capped is a ValueError (the tables would silently lack lessons). So is a key
    shorter than `transform.pseudonyms.MIN_KEY_BYTES`. Stored data never raises: unreadable
    values become null and are listed in `problems`; specs of any shape are read as far as they go.
    """
    check_key(pseudonym_key)
    builder = _Builder(pseudonym_key)
    for learner in rows:
        builder.add(learner)
    return BuiltTables(
        tables={
            name: pa.Table.from_pylist(builder.rows[name], schema=schema)
            for name, schema in TABLE_SCHEMAS.items()
        },
        problems=tuple(builder.problems),
    )


class _Builder:
    """Accumulates one chunk's table rows (dicts keyed by column name) and problems."""

    __slots__ = ("key", "problems", "rows")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.problems: list[Problem] = []
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_SCHEMAS}

    def add(self, learner: LearnerRows) -> None:
        if len(learner.lessons) < learner.lesson_total:
            raise ValueError(
                f"learner {learner.learner_id}: {len(learner.lessons)} of {learner.lesson_total} "
                "lessons were read; the analyst tables need every lesson (lesson_limit=None)"
            )
        who = pseudonym(learner.learner_id, self.key)
        questions_total = 0
        for lesson in learner.lessons:
            questions_total += self._lesson(who, lesson)
        for achievement in learner.achievements:
            self._achievement(who, achievement)
        self.rows["learners"].append(
            {
                "learner_pseudonym": who,
                **self._profile(learner.profile),
                "created_at": self._timestamp(learner.user, "users", "created_at"),
                "lessons_total": len(learner.lessons),
                "lessons_done": sum(1 for row in learner.lessons if row["status"] == "DONE"),
                "questions_total": questions_total,
                "achievements_total": len(learner.achievements),
            }
        )

    def _profile(self, profile: Row | None) -> dict[str, Any]:
        if profile is None:
            return {"has_profile": False}

        def text_list(column: str) -> list[str | None] | None:
            return text_items(self._json(profile, "learner_profiles", column)[0])

        return {
            "grade_level": self._int32(profile, "learner_profiles", "grade_level"),
            "has_profile": True,
            "subjects": text_list("subjects"),
            "recommended_subjects": text_list("recommended_subjects"),
            "struggling_areas": text_list("struggling_areas"),
        }

    def _lesson(self, who: str, lesson: Row) -> int:
        """Adds the lesson and its questions; returns how many questions."""
        spec, readable = self._json(lesson, "lessons", "spec")
        questions = spec_questions(spec)
        lesson_id = str(lesson["id"])
        subject = _text(lesson["subject"])
        self.rows["lessons"].append(
            {
                "learner_pseudonym": who,
                "lesson_id": lesson_id,
                "module_id": _text(lesson["module_id"]),
                "template_id": _text(lesson["template_id"]),
                "status": _text(lesson["status"]),
                "subject": subject,
                "category": _text(lesson["category"]),
                "difficulty": _text(lesson["difficulty"]),
                "score": self._int32(lesson, "lessons", "score"),
                "created_at": self._timestamp(lesson, "lessons", "created_at"),
                "completed_at": self._timestamp(lesson, "lessons", "completed_at"),
                "has_spec": spec is not None,
                "spec_malformed": not readable,
                "spec_bytes": _text_bytes(lesson["spec"]),
                "spec_title": spec_title(spec),
                "question_count": len(questions),
                "image_count": self._image_count(lesson),
            }
        )
        self.rows["quiz_questions"].extend(
            {
                "learner_pseudonym": who,
                "lesson_id": lesson_id,
                "question_index": question.index,
                "subject": subject,
                "question": question.question,
                "option_count": None if question.options is None else len(question.options),
                "options": question.options,
                "options_key": question.options_key,
                "correct_index": question.correct_index,
                "correct_option": question.correct_option,
                "explanation": question.explanation,
            }
            for question in questions
        )
        return len(questions)

    def _image_count(self, lesson: Row) -> int | None:
        if is_json_null(lesson["image_paths"]):
            return 0  # as in the document, where NULL image paths are []
        paths, _ = self._json(lesson, "lessons", "image_paths")
        return len(paths) if isinstance(paths, list) else None

    def _achievement(self, who: str, achievement: Row) -> None:
        payload, _ = self._json(achievement, "achievements", "payload")
        if not isinstance(payload, dict):
            payload = {}
        self.rows["achievements"].append(
            {
                "learner_pseudonym": who,
                "achievement_id": str(achievement["id"]),
                "type": _text(achievement["type"]),
                "earned_at": self._timestamp(achievement, "achievements", "awarded_at"),
                "title": _payload_text(payload, "title"),
                "icon": _payload_text(payload, "icon"),
            }
        )

    def _json(self, row: Row, table: str, column: str) -> tuple[Any, bool]:
        """The parsed JSON of `row[column]` (None for SQL NULL) and whether it could be read."""
        stored = row[column]
        try:
            return _parse_json(stored), True
        except ValueError:
            self.problems.append(Problem(table, column, str(row["id"]), MALFORMED_JSON))
            return None, False

    def _timestamp(self, row: Row, table: str, column: str) -> datetime | None:
        # Through the document's own formatter, so both outputs truncate the same way.
        try:
            text = iso_timestamp(row[column])
        except (ValueError, OverflowError, OSError):
            self.problems.append(Problem(table, column, str(row["id"]), UNREADABLE_TIMESTAMP))
            return None
        return None if text is None else datetime.fromisoformat(text)

    def _int32(self, row: Row, table: str, column: str) -> int | None:
        value = row[column]
        if value is None:
            return None
        if type(value) is int and _INT32_MIN <= value <= _INT32_MAX:
            return value
        self.problems.append(Problem(table, column, str(row["id"]), UNREADABLE_INTEGER))
        return None


def _parse_json(stored: Any) -> Any:
    """Stored JSON (text, bytes, or the number SQLite made of numeric text) parsed; None for NULL.
    Raises ValueError when it is not valid JSON."""
    if stored is None:
        return None
    if isinstance(stored, str | bytes | bytearray | memoryview):
        return orjson.loads(stored)  # JSONDecodeError is a ValueError; bytes must be UTF-8
    if type(stored) in (int, float):
        return stored
    raise ValueError(f"not JSON text: {type(stored).__name__}")


def _text_bytes(stored: Any) -> int | None:
    """How many bytes the stored JSON text takes (UTF-8); None for SQL NULL."""
    if stored is None:
        return None
    if isinstance(stored, str):
        return len(stored.encode("utf-8", "surrogatepass"))
    if isinstance(stored, bytes | bytearray | memoryview):
        return len(bytes(stored))
    return len(str(stored))


def _text(value: Any) -> str | None:
    """A text column's value as text, whatever the driver made of it (a number SQLite stored in
    a TEXT column is written as its digits, a UUID in its canonical form)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _payload_text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None
