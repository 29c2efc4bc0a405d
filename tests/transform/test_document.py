"""transform.document: one test per rule of contract §2, on hand-made rows (and, for timestamps,
on rows read from a real SQLite file and a real PostgreSQL database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from extract.tables import metadata
from tests.factories import (
    EXPORT_DATE,
    achievement_row,
    learner_rows,
    lesson_row,
    profile_row,
    user_row,
)
from tests.restore_helpers import export_all
from transform.document import LESSON_CAP, BuiltDocument, build_document
from transform.encoding import encode_document
from transform.schema import schema_errors


def build(**kwargs: Any) -> BuiltDocument:
    exported_by = kwargs.pop("exported_by", 1)
    return build_document(learner_rows(**kwargs), export_date=EXPORT_DATE, exported_by=exported_by)


def decoded(built: BuiltDocument) -> dict[str, Any]:
    """The document as a consumer sees it, checked against the shipped JSON Schema."""
    document: dict[str, Any] = orjson.loads(encode_document(built.document))
    assert schema_errors(document) == []
    return document


def test_seed_example_round_trip() -> None:
    """The seed page's example, rebuilt from the rows it implies, field for field."""
    document = decoded(build())
    assert list(document) == [
        "learner",
        "profile",
        "lessons",
        "achievements",
        "exportDate",
        "exportedBy",
    ]
    assert document["learner"] == {
        "id": 3, "username": "alice-123456", "email": "alice@example.com", "name": "Alice",
        "role": "LEARNER", "parentId": 1, "createdAt": "2024-01-01T00:00:00.000Z",
    }  # fmt: skip
    assert document["profile"]["userId"] == "3"
    assert document["profile"]["subjectPerformance"] == {
        "Math": {"averageScore": 85, "lessonsCompleted": 12}
    }
    lesson = document["lessons"][0]
    assert list(lesson) == [
        "id", "learnerId", "moduleId", "status", "subject", "category", "difficulty", "score",
        "spec", "imagePaths", "templateId", "createdAt", "completedAt",
    ]  # fmt: skip
    assert lesson["learnerId"] == 3 and lesson["createdAt"] == "2024-01-15T10:30:00.000Z"
    assert document["achievements"] == [
        {"id": "ach_123456", "learnerId": "3", "type": "FIRST_PERFECT",
         "payload": {"type": "FIRST_PERFECT", "icon": "🌟"}, "earnedAt": "2024-01-15T10:30:00.000Z"}
    ]  # fmt: skip
    assert document["exportDate"] == "2024-01-15T12:00:00.123Z"
    assert document["exportedBy"] == 1


def test_password_is_never_present_even_when_the_row_has_one() -> None:
    built = build(user=user_row(password="$2b$10$secret-hash"))
    assert "password" not in built.document["learner"]
    assert b"secret-hash" not in encode_document(built.document)


def test_json_types_of_ids() -> None:
    document = decoded(build(user=user_row(id=42, parent_id=None),
                             profile=profile_row(user_id=42),
                             lessons=[lesson_row(learner_id=42)],
                             achievements=[achievement_row(learner_id="42")]))  # fmt: skip
    assert document["learner"]["id"] == 42 and document["learner"]["parentId"] is None
    assert document["profile"]["userId"] == "42"
    assert document["lessons"][0]["learnerId"] == 42
    assert document["achievements"][0]["learnerId"] == "42"


def test_no_profile_gives_null() -> None:
    assert decoded(build(profile=None))["profile"] is None


@pytest.mark.parametrize("null", [None, "null"])
def test_null_profile_json_columns_get_the_contract_defaults(null: str | None) -> None:
    columns = [
        "graph",
        "subjects",
        "subject_performance",
        "recommended_subjects",
        "struggling_areas",
    ]
    profile = decoded(build(profile=profile_row(**dict.fromkeys(columns, null))))["profile"]
    assert profile["graph"] == {"nodes": [], "edges": []}
    assert profile["subjects"] == ["Math", "Reading", "Science"]
    assert profile["subjectPerformance"] == {}
    assert profile["recommendedSubjects"] == []
    assert profile["strugglingAreas"] == []


def test_defaults_are_fresh_objects_per_document() -> None:
    first = build(profile=profile_row(graph=None)).document
    first["profile"]["graph"]["nodes"].append("mutated")
    second = build(profile=profile_row(graph=None)).document
    assert second["profile"]["graph"] == {"nodes": [], "edges": []}


def test_lesson_null_columns() -> None:
    lesson = decoded(build(lessons=[lesson_row(spec=None, image_paths=None, score=None)]))[
        "lessons"
    ][0]
    assert lesson["spec"] is None
    assert lesson["imagePaths"] == []
    assert lesson["score"] is None


def test_stored_json_is_exported_unchanged() -> None:
    spec = '{"z":1,"a":{"nested":[1,2.50,"x"]},"icon":"🌟"}'
    built = build(lessons=[lesson_row(spec=spec)])
    assert spec.encode() in encode_document(built.document)


def test_lessons_are_capped_at_1000_and_the_truncation_is_reported() -> None:
    lessons = [lesson_row(id=f"lesson-{i:05d}") for i in range(LESSON_CAP + 5)]
    built = build(lessons=lessons, lesson_total=LESSON_CAP + 5)
    assert built.lessons_exported == LESSON_CAP
    assert built.lessons_total == LESSON_CAP + 5
    assert built.truncated
    ids = [lesson["id"] for lesson in decoded(built)["lessons"]]
    assert ids == [f"lesson-{i:05d}" for i in range(LESSON_CAP)]  # the first ones, in order


def test_lessons_capped_at_read_time_still_report_the_source_total() -> None:
    built = build(lessons=[lesson_row()] * 3, lesson_total=2_000)
    assert (built.lessons_exported, built.lessons_total, built.truncated) == (3, 2_000, True)


def test_exactly_1000_lessons_is_not_truncated() -> None:
    built = build(lessons=[lesson_row()] * LESSON_CAP)
    assert not built.truncated and built.lessons_exported == LESSON_CAP


def test_malformed_json_is_null_and_reported_by_row_and_column() -> None:
    built = build(
        lessons=[lesson_row(id="L1", spec='{"broken": ', image_paths="[1,")],
        achievements=[achievement_row(id="A1", payload="{nope}")],
        profile=profile_row(id="P1", graph="{"),
    )
    document = decoded(built)
    assert document["lessons"][0]["spec"] is None
    assert document["lessons"][0]["imagePaths"] is None
    assert document["achievements"][0]["payload"] is None
    assert document["profile"]["graph"] is None  # malformed is not NULL: no default
    assert [str(p) for p in built.problems] == [
        "learner_profiles.graph of row P1: malformed JSON, exported as null",
        "lessons.spec of row L1: malformed JSON, exported as null",
        "lessons.image_paths of row L1: malformed JSON, exported as null",
        "achievements.payload of row A1: malformed JSON, exported as null",
    ]
    assert b"broken" not in "\n".join(map(str, built.problems)).encode()


def test_json_checked_by_the_database_is_not_parsed_again() -> None:
    """PostgreSQL's json type guarantees valid text; it is trusted and passed through."""
    built = build(lessons=[lesson_row(spec='{"big": [1, 2, 3]}')], json_checked=True)
    assert built.problems == ()
    assert b'"spec":{"big": [1, 2, 3]}' in encode_document(built.document)


def test_unreadable_timestamp_is_null_and_reported() -> None:
    built = build(lessons=[lesson_row(id="L9", created_at="not a time")])
    assert decoded(built)["lessons"][0]["createdAt"] is None
    assert [str(p) for p in built.problems] == [
        "lessons.created_at of row L9: unreadable timestamp, exported as null"
    ]


def test_timestamps_are_utc_milliseconds_truncated() -> None:
    built = build(lessons=[lesson_row(created_at=datetime(2024, 5, 6, 7, 8, 9, 999_999),
                                      completed_at="2024-05-06 07:30:00.000999")])  # fmt: skip
    lesson = decoded(built)["lessons"][0]
    assert lesson["createdAt"] == "2024-05-06T07:08:09.999Z"
    assert lesson["completedAt"] == "2024-05-06T07:30:00.000Z"


AFTER_TICK = "2024-12-31T23:59:59.000Z"  # stored 23:59:59.000999: rounding gives .001
BEFORE_NEW_YEAR = "2024-12-31T23:59:59.999Z"  # stored 23:59:59.999999: rounding gives 2025

# What each column of learner 3 holds, as each database stores it. SQLite holds whatever the
# application wrote: its own text form, ISO text with a zone, more than six digits, epoch seconds
# and epoch milliseconds (REAL). PostgreSQL's `timestamp` holds microseconds.
_STORED: dict[str, dict[str, Any]] = {
    "sqlite": {
        "user": "2024-12-31 23:59:59.999999",
        "profile": "2024-12-31T23:59:59.000999Z",
        "l1_created": "2025-01-01T05:29:59.999999+05:30",
        "l1_completed": 1_735_689_599.999999,
        "l2_created": "2024-12-31 23:59:59.0009999",
        "l2_completed": 1_735_689_599_000.999,
        "achievement": 1_735_689_599_999.999,
    },
    "postgresql": {
        "user": datetime(2024, 12, 31, 23, 59, 59, 999_999),
        "profile": datetime(2024, 12, 31, 23, 59, 59, 999),
        "l1_created": datetime(2024, 12, 31, 23, 59, 59, 999_999),
        "l1_completed": datetime(2024, 12, 31, 23, 59, 59, 999_999),
        "l2_created": datetime(2024, 12, 31, 23, 59, 59, 999),
        "l2_completed": datetime(2024, 12, 31, 23, 59, 59, 999),
        "achievement": datetime(2024, 12, 31, 23, 59, 59, 999_999),
    },
}
_EXPECTED = {
    "user": BEFORE_NEW_YEAR, "profile": AFTER_TICK, "l1_created": BEFORE_NEW_YEAR,
    "l1_completed": BEFORE_NEW_YEAR, "l2_created": AFTER_TICK, "l2_completed": AFTER_TICK,
    "achievement": BEFORE_NEW_YEAR,
}  # fmt: skip


def _store_learner(url: str, stored: dict[str, Any]) -> None:
    """Learner 3 with a profile, two lessons and an achievement; timestamps bound as given (raw
    text and numbers on SQLite, where SQLAlchemy's DateTime would refuse them)."""
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            for sql in (
                "INSERT INTO users (id, role, created_at) VALUES (3, 'LEARNER', :user)",
                "INSERT INTO learner_profiles (id, user_id, grade_level, created_at)"
                " VALUES ('P3', 3, 5, :profile)",
                "INSERT INTO lessons (id, learner_id, status, created_at, completed_at)"
                " VALUES ('L1', 3, 'DONE', :l1_created, :l1_completed),"
                " ('L2', 3, 'DONE', :l2_created, :l2_completed)",
                "INSERT INTO achievements (id, learner_id, type, awarded_at)"
                " VALUES ('6f1c2a5e-0000-4000-8000-000000000001', '3', 'X', :achievement)",
            ):
                conn.execute(sa.text(sql), stored)
    finally:
        engine.dispose()


def test_timestamps_read_from_a_database_are_truncated_not_rounded(target_url: str) -> None:
    """Every timestamp column on its way from a real database through the builder and encoder."""
    kind = "postgresql" if target_url.startswith("postgresql") else "sqlite"
    _store_learner(target_url, _STORED[kind])
    document = orjson.loads(export_all(target_url)[3])
    lessons = {lesson["id"]: lesson for lesson in document["lessons"]}
    exported = {
        "user": document["learner"]["createdAt"],
        "profile": document["profile"]["createdAt"],
        "l1_created": lessons["L1"]["createdAt"],
        "l1_completed": lessons["L1"]["completedAt"],
        "l2_created": lessons["L2"]["createdAt"],
        "l2_completed": lessons["L2"]["completedAt"],
        "achievement": document["achievements"][0]["earnedAt"],
    }
    assert exported == _EXPECTED


def test_unattended_export_has_null_exported_by() -> None:
    assert decoded(build(exported_by=None))["exportedBy"] is None


def test_row_order_is_kept_as_given() -> None:
    """Ordering is extract's job (tested there); the builder must not reorder."""
    lessons = [lesson_row(id=i) for i in ("c", "a", "b")]
    assert [x["id"] for x in decoded(build(lessons=lessons))["lessons"]] == ["c", "a", "b"]


def test_same_rows_same_bytes() -> None:
    assert encode_document(build().document) == encode_document(build().document)
