"""The one document builder: a learner's rows in, the contract §2 document out.

Every way of exporting (the CLI, the archival flows, the HTTP endpoint) calls `build_document`, and
`transform.encoding` turns its result into bytes, so the same rows always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from transform.records import LearnerRows, Row
from transform.values import (
    MALFORMED_JSON,
    UNREADABLE_TIMESTAMP,
    Problem,
    is_json_null,
    iso_timestamp,
    stored_json,
)

LESSON_CAP = 1_000
"""The seed page's limit on lessons in one document; the most recent are kept."""

Document = dict[str, Any]

# Values for NULL JSON columns of a profile (contract §2). Fresh objects for every document.
_PROFILE_DEFAULTS: dict[str, Callable[[], Any]] = {
    "graph": lambda: {"nodes": [], "edges": []},
    "subjects": lambda: ["Math", "Reading", "Science"],
    "subject_performance": dict,
    "recommended_subjects": list,
    "struggling_areas": list,
}


@dataclass(frozen=True, slots=True)
class BuiltDocument:
    """A document and what the export must report about it.

    `lessons_exported` <= LESSON_CAP; `truncated` is True exactly when the source holds more
    lessons than the document (`lessons_total > lessons_exported`). `problems` lists the stored
    values that were exported as null, in document order.
    """

    document: Document
    learner_id: int
    lessons_exported: int
    lessons_total: int
    problems: tuple[Problem, ...]

    @property
    def truncated(self) -> bool:
        return self.lessons_total > self.lessons_exported


def build_document(
    rows: LearnerRows, *, export_date: datetime, exported_by: int | None
) -> BuiltDocument:
    """The contract §2 document for `rows`.

    Keys are in contract order; `password` is never read, so never present; timestamps are UTC
    `toISOString()` text; at most LESSON_CAP lessons, the first ones of `rows.lessons` (which come
    in contract order). Never raises on stored data: unreadable values become null and are listed
    in `problems`.
    """
    values = _Values(checked=rows.json_checked)
    kept = rows.lessons[:LESSON_CAP]
    document: Document = {
        "learner": _learner(rows.user, values),
        "profile": None if rows.profile is None else _profile(rows.profile, values),
        "lessons": [_lesson(row, values) for row in kept],
        "achievements": [_achievement(row, values) for row in rows.achievements],
        "exportDate": iso_timestamp(export_date),
        "exportedBy": exported_by,
    }
    return BuiltDocument(
        document=document,
        learner_id=rows.learner_id,
        lessons_exported=len(kept),
        lessons_total=max(rows.lesson_total, len(kept)),
        problems=tuple(values.problems),
    )


def _learner(row: Row, values: _Values) -> Document:
    return {
        "id": row["id"],
        "username": row["username"],
        "email": row["email"],
        "name": row["name"],
        "role": row["role"],
        "parentId": row["parent_id"],
        "createdAt": values.timestamp(row, "users", "created_at"),
    }


def _profile(row: Row, values: _Values) -> Document:
    def json_or_default(column: str) -> Any:
        if is_json_null(row[column]):
            return _PROFILE_DEFAULTS[column]()
        return values.json(row, "learner_profiles", column)

    return {
        "id": str(row["id"]),
        "userId": str(row["user_id"]),
        "gradeLevel": row["grade_level"],
        "graph": json_or_default("graph"),
        "subjects": json_or_default("subjects"),
        "subjectPerformance": json_or_default("subject_performance"),
        "recommendedSubjects": json_or_default("recommended_subjects"),
        "strugglingAreas": json_or_default("struggling_areas"),
        "createdAt": values.timestamp(row, "learner_profiles", "created_at"),
    }


def _lesson(row: Row, values: _Values) -> Document:
    # The builder's hottest function (a document holds up to 1,000 lessons): no work here that
    # only a problem needs, such as the row id of its report.
    return {
        "id": row["id"],
        "learnerId": row["learner_id"],
        "moduleId": row["module_id"],
        "status": row["status"],
        "subject": row["subject"],
        "category": row["category"],
        "difficulty": row["difficulty"],
        "score": row["score"],
        "spec": values.json(row, "lessons", "spec"),
        "imagePaths": []
        if is_json_null(row["image_paths"])
        else values.json(row, "lessons", "image_paths"),
        "templateId": row["template_id"],
        "createdAt": values.timestamp(row, "lessons", "created_at"),
        "completedAt": values.timestamp(row, "lessons", "completed_at"),
    }


def _achievement(row: Row, values: _Values) -> Document:
    return {
        "id": str(row["id"]),
        "learnerId": str(row["learner_id"]),
        "type": row["type"],
        "payload": values.json(row, "achievements", "payload"),
        "earnedAt": values.timestamp(row, "achievements", "awarded_at"),
    }


class _Values:
    """Reads the stored values of one document's rows and collects the problems met on the way.

    Each method takes the row, its table and the column, so the row id a problem names is read
    only when there is a problem.
    """

    __slots__ = ("checked", "problems")

    def __init__(self, *, checked: bool) -> None:
        self.checked = checked
        self.problems: list[Problem] = []

    def json(self, row: Row, table: str, column: str) -> Any:
        stored = row[column]
        if self.checked and (type(stored) is bytes or type(stored) is str):
            return orjson.Fragment(stored)  # stored_json's answer, without its type tests
        try:
            return stored_json(stored, checked=self.checked)
        except ValueError:
            self.problems.append(Problem(table, column, str(row["id"]), MALFORMED_JSON))
            return None

    def timestamp(self, row: Row, table: str, column: str) -> str | None:
        try:
            return iso_timestamp(row[column])
        except (ValueError, OverflowError, OSError):
            self.problems.append(Problem(table, column, str(row["id"]), UNREADABLE_TIMESTAMP))
            return None
