"""`transform.restore_rows`: a document back into rows, or a refusal listing every reason."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest

from transform.restore_rows import (
    DocumentRefused,
    is_canonical,
    json_text,
    naive_utc,
    restore_rows,
)


def document(**changes: Any) -> dict[str, Any]:
    """A small valid document of learner 3; `changes` replace top-level parts."""
    doc: dict[str, Any] = {
        "learner": {
            "id": 3,
            "username": "alice-123456",
            "email": None,
            "name": "Alice",
            "role": "LEARNER",
            "parentId": 1,
            "createdAt": "2024-01-01T00:00:00.123Z",
        },
        "profile": {
            "id": "550e8400-e29b-41d4-a716-446655440000",
            "userId": "3",
            "gradeLevel": 5,
            "graph": {"nodes": [], "edges": []},
            "subjects": ["Math", "Reading", "Science"],
            "subjectPerformance": {"Math": {"averageScore": 85}},
            "recommendedSubjects": ["History"],
            "strugglingAreas": [],
            "createdAt": None,
        },
        "lessons": [
            {
                "id": "lesson-b",
                "learnerId": 3,
                "moduleId": None,
                "status": "DONE",
                "subject": "Math",
                "category": "STEM",
                "difficulty": "beginner",
                "score": 85,
                "spec": {"topic": "Addition", "questions": [{"choices": ["3", "4"]}]},
                "imagePaths": [],
                "templateId": None,
                "createdAt": "2024-01-15T10:30:00.999Z",
                "completedAt": None,
            }
        ],
        "achievements": [
            {
                "id": "ach_1",
                "learnerId": "3",
                "type": "FIRST_PERFECT",
                "payload": {"icon": "🌟"},
                "earnedAt": "2024-01-15T10:30:00.000Z",
            }
        ],
        "exportDate": "2024-01-15T12:00:00.000Z",
        "exportedBy": 1,
    }
    doc.update(changes)
    return doc


def test_rows_use_the_column_names_and_types_of_the_tables() -> None:
    rows = restore_rows(document())

    assert rows.learner_id == 3 and rows.parent_id == 1
    assert rows.user == {
        "id": 3,
        "username": "alice-123456",
        "email": None,
        "name": "Alice",
        "role": "LEARNER",
        "parent_id": 1,
        "created_at": datetime(2024, 1, 1, 0, 0, 0, 123_000),
    }
    assert "password" not in rows.user
    assert rows.profile is not None
    assert rows.profile["user_id"] == 3 and rows.profile["created_at"] is None
    assert rows.profile["subject_performance"] == '{"Math":{"averageScore":85}}'
    (lesson,) = rows.lessons
    assert lesson["learner_id"] == 3
    assert lesson["spec"] == '{"topic":"Addition","questions":[{"choices":["3","4"]}]}'
    assert lesson["image_paths"] == "[]"
    assert lesson["created_at"] == datetime(2024, 1, 15, 10, 30, 0, 999_000)
    (achievement,) = rows.achievements
    assert achievement["learner_id"] == "3"
    assert achievement["awarded_at"] == datetime(2024, 1, 15, 10, 30)
    assert achievement["payload"] == '{"icon":"🌟"}'
    assert rows.nulled_defaults == ()


def test_json_values_become_compact_text_and_null_becomes_sql_null() -> None:
    assert json_text(None) is None
    assert json_text({"a": [1, 2.5, "é"]}) == '{"a":[1,2.5,"é"]}'
    assert json_text(0) == "0"


def test_timestamps_are_naive_utc() -> None:
    assert naive_utc("2024-01-15T10:30:00.000Z") == datetime(2024, 1, 15, 10, 30)
    with pytest.raises(ValueError):
        naive_utc("2024-01-15T10:30:00.000+01:00")


def test_a_learner_without_a_profile_has_no_profile_row() -> None:
    assert restore_rows(document(profile=None)).profile is None


def test_nulls_where_an_export_writes_defaults_are_listed() -> None:
    doc = document()
    doc["profile"]["graph"] = None
    doc["lessons"][0]["imagePaths"] = None

    rows = restore_rows(doc)

    assert rows.nulled_defaults == ("/profile/graph", "/lessons/0/imagePaths")
    assert rows.profile is not None and rows.profile["graph"] is None


def refusal(doc: Any) -> str:
    with pytest.raises(DocumentRefused) as info:
        restore_rows(doc)
    return str(info.value)


def test_a_document_failing_the_schema_is_refused_without_quoting_values() -> None:
    doc = document()
    doc["learner"]["password"] = "$2b$10$secret-hash"
    del doc["exportDate"]

    reason = refusal(doc)

    assert "fails the document schema at /learner" in reason and "'password'" in reason
    assert "exportDate" in reason
    assert "secret-hash" not in reason


def test_parts_naming_another_learner_are_refused_each_one_listed() -> None:
    doc = document()
    doc["profile"]["userId"] = "4"
    doc["lessons"][0]["learnerId"] = 4
    doc["achievements"][0]["learnerId"] = "4"

    reason = refusal(doc)

    assert "/profile/userId" in reason
    assert "/lessons/0/learnerId" in reason
    assert "/achievements/0/learnerId" in reason


def test_a_user_who_is_not_a_learner_is_refused() -> None:
    doc = document()
    doc["learner"]["role"] = "ADMIN"
    assert "/learner/role: is not LEARNER" in refusal(doc)


def test_repeated_ids_impossible_dates_and_oversized_integers_are_refused() -> None:
    doc = document()
    doc["lessons"].append(dict(doc["lessons"][0]))
    doc["lessons"][1]["createdAt"] = "2024-02-30T00:00:00.000Z"
    doc["profile"]["gradeLevel"] = 2**40

    reason = refusal(doc)

    assert "/lessons: the same id appears more than once" in reason
    assert "/lessons/1/createdAt: is not a real date and time" in reason
    assert "/profile/gradeLevel: does not fit a 32-bit integer column" in reason


def test_not_an_object_at_all_is_refused() -> None:
    assert "fails the document schema" in refusal([1, 2, 3])


def test_canonical_means_the_bytes_are_the_compact_encoding() -> None:
    doc = document()
    compact = orjson.dumps(doc)

    assert is_canonical(compact, doc)
    assert is_canonical(compact + b"\n", doc)
    assert not is_canonical(orjson.dumps(doc, option=orjson.OPT_INDENT_2), doc)
