"""Whole documents from the demo databases: golden files, schema, and SQLite == PostgreSQL.

Golden files live in tests/golden/ and change only with `pytest --update-golden`, after which the
diff is reviewed like code. They hold the exact bytes of the document with a newline between the
streamed pieces (one lesson per line), so a diff shows which lesson changed; removing those
newlines gives `encode_document`'s bytes (`iter_encoded`'s invariant).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from extract.engine import create_source_engine, snapshot
from extract.reader import read_learners
from tests.conftest import DemoSource
from tests.factories import EXPORT_DATE
from transform.document import LESSON_CAP, BuiltDocument, build_document
from transform.encoding import encode_document, iter_encoded
from transform.schema import schema_errors

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_POSITIONS = (2, 3, -1)
"""Learners by position: no profile, NULL profile JSON, a learner without a parent on record."""


def export_all(source: DemoSource) -> dict[int, BuiltDocument]:
    engine = create_source_engine(source.url)
    try:
        with snapshot(engine) as conn:
            rows = read_learners(conn, source.rows.learner_ids, lesson_limit=LESSON_CAP)
    finally:
        engine.dispose()
    return {i: build_document(r, export_date=EXPORT_DATE, exported_by=2) for i, r in rows.items()}


@pytest.fixture(scope="module")
def sqlite_documents(sqlite_demo: DemoSource) -> dict[int, BuiltDocument]:
    return export_all(sqlite_demo)


def test_every_demo_learner_gets_one_valid_document(
    demo_source: DemoSource, sqlite_documents: dict[int, BuiltDocument]
) -> None:
    documents = export_all(demo_source) if demo_source.kind != "sqlite" else sqlite_documents
    assert sorted(documents) == demo_source.rows.learner_ids
    for learner_id, built in documents.items():
        document = orjson.loads(encode_document(built.document))
        assert schema_errors(document) == [], learner_id
        assert document["learner"]["id"] == learner_id
        expected_lessons = sum(r["learner_id"] == learner_id for r in demo_source.rows.lessons)
        assert built.lessons_total == expected_lessons
        assert len(document["lessons"]) == min(expected_lessons, LESSON_CAP)
        assert built.truncated is (expected_lessons > LESSON_CAP)


def test_no_password_reaches_any_document(
    demo_source: DemoSource, sqlite_documents: dict[int, BuiltDocument]
) -> None:
    documents = export_all(demo_source) if demo_source.kind != "sqlite" else sqlite_documents
    hashes = [u["password"].encode() for u in demo_source.rows.users]
    for built in documents.values():
        encoded = encode_document(built.document)
        assert b'"password"' not in encoded
        assert not any(h in encoded for h in hashes)


def test_the_malformed_spec_is_null_and_reported_on_sqlite(
    sqlite_demo: DemoSource, sqlite_documents: dict[int, BuiltDocument]
) -> None:
    table, column, row_id = sqlite_demo.rows.malformed[0]
    built = sqlite_documents[3]
    assert [(p.table, p.column, p.row_id) for p in built.problems] == [(table, column, row_id)]
    lesson = next(x for x in built.document["lessons"] if x["id"] == row_id)
    assert lesson["spec"] is None


@pytest.mark.postgres
def test_sqlite_and_postgresql_give_byte_identical_documents(
    postgres_demo: DemoSource, sqlite_documents: dict[int, BuiltDocument]
) -> None:
    postgres_documents = export_all(postgres_demo)
    assert sorted(postgres_documents) == sorted(sqlite_documents)
    for learner_id, built in sqlite_documents.items():
        assert encode_document(postgres_documents[learner_id].document) == encode_document(
            built.document
        ), f"learner {learner_id} differs between SQLite and PostgreSQL"


@pytest.mark.parametrize("position", GOLDEN_POSITIONS)
def test_golden_documents(
    demo_source: DemoSource,
    sqlite_documents: dict[int, BuiltDocument],
    position: int,
    request: pytest.FixtureRequest,
) -> None:
    learner_id = demo_source.rows.learner_ids[position]
    documents = export_all(demo_source) if demo_source.kind != "sqlite" else sqlite_documents
    document = documents[learner_id].document
    encoded = b"\n".join(iter_encoded(document, batch=1)) + b"\n"
    assert encoded.replace(b"\n", b"") == encode_document(document)  # no newline inside a piece
    golden = GOLDEN / f"learner-{learner_id}.json"
    if request.config.getoption("--update-golden") and demo_source.kind == "sqlite":
        GOLDEN.mkdir(exist_ok=True)
        golden.write_bytes(encoded)
    assert golden.is_file(), f"no golden file {golden.name}: run pytest --update-golden"
    assert encoded == golden.read_bytes()
