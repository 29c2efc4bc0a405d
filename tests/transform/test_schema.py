"""transform.schema: the shipped JSON Schema accepts documents and reports without leaking values."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from tests.factories import EXPORT_DATE, learner_rows
from transform.document import build_document
from transform.encoding import encode_document
from transform.schema import document_schema, schema_errors


@pytest.fixture
def document() -> dict[str, Any]:
    built = build_document(learner_rows(), export_date=EXPORT_DATE, exported_by=1)
    decoded: dict[str, Any] = orjson.loads(encode_document(built.document))
    return decoded


def test_schema_is_2020_12_and_ships_in_the_package() -> None:
    assert document_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_a_built_document_is_valid(document: dict[str, Any]) -> None:
    assert schema_errors(document) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["learner"].__setitem__("password", "hunter2"),
            "/learner: Additional properties",
        ),
        (lambda d: d["learner"].__setitem__("id", "3"), "/learner/id: fails 'type'"),
        (lambda d: d["profile"].__setitem__("userId", 3), "/profile: fails 'anyOf'"),
        (
            lambda d: d.__setitem__("exportDate", "2024-01-15T12:00:00Z"),
            "/exportDate: fails 'pattern'",
        ),
        (lambda d: d.__setitem__("lessons", d["lessons"] * 1001), "/lessons: fails 'maxItems'"),
        (lambda d: d.pop("achievements"), "/: 'achievements' is a required property"),
    ],
)
def test_violations_are_reported_by_place_without_values(
    document: dict[str, Any], mutate: Any, expected: str
) -> None:
    broken = copy.deepcopy(document)
    mutate(broken)
    errors = schema_errors(broken)
    assert any(error.startswith(expected) for error in errors), errors
    assert not any("hunter2" in error or "alice" in error for error in errors)
