"""The inverse of `transform.document`: a decoded document in, rows for the four tables out.

Pure: no I/O, no clock, no database. `restore_rows` refuses (raises `DocumentRefused`) any document
it cannot turn back into rows faithfully, so a caller writes either all of a learner or nothing.

How each value goes back (see contract §2 for the way out):

* JSON values are written as compact JSON text (`orjson.dumps`), the form the platform stores
  (`JSON.stringify`) and the exporter passes through verbatim, so a second export of the restored
  rows gives the same bytes. `is_canonical` tells whether that holds for a given file.
* Timestamps `2024-01-15T10:30:00.123Z` become naive UTC datetimes (the columns have no time zone
  and mean UTC); exports dropped the digits below the millisecond, so they stay dropped.
* `profile.userId` and `achievements[].learnerId` are text in the document; `users.id` and
  `learner_profiles.user_id` are integers, `achievements.learner_id` is text.
* Profile JSON columns that were NULL in the source were exported as their defaults, and are
  written back as those defaults; a second export cannot tell the difference. A `null` where an
  export writes defaults (the value was unreadable in the source) is written as NULL and listed
  in `RestoreRows.nulled_defaults`, since the next export will show the default there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from transform.schema import schema_errors

INT_COLUMN_MAX = 2**31 - 1
"""`integer` columns (ids, grade level, score) are 32-bit in PostgreSQL."""

LEARNER_ROLE = "LEARNER"

Row = dict[str, Any]


class DocumentRefused(ValueError):
    """The document cannot be restored faithfully. `reasons` name JSON pointers and rules, never
    values (they may be personal)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = tuple(reasons)
        shown = "; ".join(self.reasons[:5])
        more = f" (and {len(self.reasons) - 5} more)" if len(self.reasons) > 5 else ""
        super().__init__(f"{shown}{more}")


@dataclass(frozen=True, slots=True)
class RestoreRows:
    """One learner's rows, ready for `load.database.insert_rows`.

    Invariants: `user` is the learner's `users` row with role LEARNER and no `password` key;
    `profile.user_id`, every `lessons[].learner_id` and (as text) every
    `achievements[].learner_id` equal `learner_id`; ids are unique within each table; JSON columns
    hold JSON text or None (SQL NULL); timestamps are naive UTC datetimes or None.
    `nulled_defaults` lists the JSON pointers of values that were `null` in the document where an
    export turns SQL NULL into a default (profile JSON, `imagePaths`): they are written as NULL, so
    a second export shows the default there instead of `null`.
    """

    learner_id: int
    parent_id: int | None
    user: Row
    profile: Row | None
    lessons: list[Row]
    achievements: list[Row]
    nulled_defaults: tuple[str, ...] = ()


def restore_rows(document: Any) -> RestoreRows:
    """The rows of `document` (decoded JSON), or `DocumentRefused` listing every reason it cannot be
    restored: it fails the JSON Schema, its parts name different learners, an id repeats, a
    timestamp is not a real moment, or an integer does not fit its column."""
    errors = schema_errors(document)
    if errors:
        raise DocumentRefused([f"fails the document schema at {line}" for line in errors])
    checks = _Checks()
    learner = document["learner"]
    learner_id: int = learner["id"]
    checks.integer("/learner/id", learner_id)
    checks.integer("/learner/parentId", learner["parentId"])
    if learner["role"] != LEARNER_ROLE:
        checks.fail("/learner/role: is not LEARNER (only learners are exported)")
    user: Row = {
        "id": learner_id,
        "username": learner["username"],
        "email": learner["email"],
        "name": learner["name"],
        "role": LEARNER_ROLE,
        "parent_id": learner["parentId"],
        "created_at": checks.timestamp("/learner/createdAt", learner["createdAt"]),
    }
    nulled: list[str] = []
    profile = None
    if document["profile"] is not None:
        profile = _profile(document["profile"], learner_id, checks, nulled)
    lessons = [
        _lesson(lesson, f"/lessons/{index}", learner_id, checks, nulled)
        for index, lesson in enumerate(document["lessons"])
    ]
    achievements = [
        _achievement(achievement, f"/achievements/{index}", learner_id, checks)
        for index, achievement in enumerate(document["achievements"])
    ]
    checks.unique("/lessons", [row["id"] for row in lessons])
    checks.unique("/achievements", [row["id"] for row in achievements])
    checks.raise_if_any()
    return RestoreRows(
        learner_id=learner_id,
        parent_id=learner["parentId"],
        user=user,
        profile=profile,
        lessons=lessons,
        achievements=achievements,
        nulled_defaults=tuple(nulled),
    )


def is_canonical(data: bytes, document: Any) -> bool:
    """True when `data` is exactly the compact orjson encoding of `document` (trailing whitespace
    aside). Then every stored JSON value in it was compact JSON text, so writing each one back with
    `orjson.dumps` reproduces it byte for byte; otherwise (a pretty-printed file, stored JSON with
    spaces or `1e3`-style numbers) the values are kept but their spelling is normalised."""
    return orjson.dumps(document) == data.rstrip(b" \t\r\n")


_PROFILE_JSON = (
    ("graph", "graph"),
    ("subjects", "subjects"),
    ("subjectPerformance", "subject_performance"),
    ("recommendedSubjects", "recommended_subjects"),
    ("strugglingAreas", "struggling_areas"),
)


def _profile(
    profile: Mapping[str, Any], learner_id: int, checks: _Checks, nulled: list[str]
) -> Row:
    if profile["userId"] != str(learner_id):
        checks.fail("/profile/userId: names a different learner than /learner/id")
    checks.integer("/profile/gradeLevel", profile["gradeLevel"])
    row: Row = {
        "id": profile["id"],
        "user_id": learner_id,
        "grade_level": profile["gradeLevel"],
    }
    for key, column in _PROFILE_JSON:
        if profile[key] is None:
            nulled.append(f"/profile/{key}")
        row[column] = json_text(profile[key])
    row["created_at"] = checks.timestamp("/profile/createdAt", profile["createdAt"])
    return row


def _lesson(
    lesson: Mapping[str, Any], where: str, learner_id: int, checks: _Checks, nulled: list[str]
) -> Row:
    if lesson["learnerId"] != learner_id:
        checks.fail(f"{where}/learnerId: names a different learner than /learner/id")
    checks.integer(f"{where}/score", lesson["score"])
    if lesson["imagePaths"] is None:
        nulled.append(f"{where}/imagePaths")
    return {
        "id": lesson["id"],
        "learner_id": learner_id,
        "template_id": lesson["templateId"],
        "module_id": lesson["moduleId"],
        "status": lesson["status"],
        "subject": lesson["subject"],
        "category": lesson["category"],
        "difficulty": lesson["difficulty"],
        "image_paths": json_text(lesson["imagePaths"]),
        "spec": json_text(lesson["spec"]),
        "score": lesson["score"],
        "created_at": checks.timestamp(f"{where}/createdAt", lesson["createdAt"]),
        "completed_at": checks.timestamp(f"{where}/completedAt", lesson["completedAt"]),
    }


def _achievement(
    achievement: Mapping[str, Any], where: str, learner_id: int, checks: _Checks
) -> Row:
    if achievement["learnerId"] != str(learner_id):
        checks.fail(f"{where}/learnerId: names a different learner than /learner/id")
    return {
        "id": achievement["id"],
        "learner_id": str(learner_id),
        "type": achievement["type"],
        "payload": json_text(achievement["payload"]),
        "awarded_at": checks.timestamp(f"{where}/earnedAt", achievement["earnedAt"]),
    }


def json_text(value: Any) -> str | None:
    """A JSON value as the compact text a JSON column stores; None (SQL NULL) for `null`."""
    if value is None:
        return None
    return orjson.dumps(value).decode()


def naive_utc(timestamp: str) -> datetime:
    """`2024-01-15T10:30:00.123Z` as the naive UTC datetime a `timestamp` column holds.

    Raises ValueError for text that is not a real moment (the schema checks only the shape).
    """
    if not timestamp.endswith("Z"):
        raise ValueError("not a UTC timestamp")
    return datetime.fromisoformat(timestamp[:-1])


class _Checks:
    """Collects every reason a document cannot be restored, so the refusal lists them all."""

    __slots__ = ("reasons",)

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def fail(self, reason: str) -> None:
        self.reasons.append(reason)

    def integer(self, pointer: str, value: int | None) -> None:
        if value is not None and not -INT_COLUMN_MAX - 1 <= value <= INT_COLUMN_MAX:
            self.fail(f"{pointer}: does not fit a 32-bit integer column")

    def timestamp(self, pointer: str, value: str | None) -> datetime | None:
        if value is None:
            return None
        try:
            return naive_utc(value)
        except ValueError:
            self.fail(f"{pointer}: is not a real date and time")
            return None

    def unique(self, pointer: str, ids: Sequence[str]) -> None:
        if len(set(ids)) != len(ids):
            self.fail(f"{pointer}: the same id appears more than once")

    def raise_if_any(self) -> None:
        if self.reasons:
            raise DocumentRefused(self.reasons)
