"""The archive's Parquet side outputs, end to end: where each chunk's parts go, what the manifest
records, that every lesson and question is there, and that verify reads the footers. The tables'
content is tested with their modules (tests/transform/test_tables.py)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from learner_export.demo import MALFORMED_SPEC
from learner_export.verify import verify_snapshot
from load.destination import open_snapshot
from tests.conftest import DemoSource
from tests.flows.conftest import run_archive
from transform.pseudonyms import key_fingerprint
from transform.tables import TABLE_SCHEMAS

pytestmark = pytest.mark.usefixtures("prefect_server")

TABLES = tuple(sorted(TABLE_SCHEMAS))
KEY = "test-pseudonym-key"


def _question_count(spec: str | bytes | None) -> int:
    if spec is None or spec == MALFORMED_SPEC:
        return 0
    questions = orjson.loads(spec).get("questions")
    return len(questions) if isinstance(questions, list) else 0


def test_each_chunk_writes_its_parts_and_the_manifest_counts_rows(
    demo_source: DemoSource, tmp_path: Path
) -> None:
    result = run_archive(
        demo_source, tmp_path, run_id="pq", chunk_size=5, parquet=True,
        secrets={"pseudonym_key": KEY},
    )  # fmt: skip
    snapshot = tmp_path / "pq"
    parts = sorted(str(p.relative_to(snapshot)) for p in snapshot.glob("parquet/*/*"))
    assert parts == [f"parquet/{t}/part-0000{i}.parquet" for t in TABLES for i in range(3)]
    rows = demo_source.rows
    assert result.parquet_rows == {
        "learners": len(rows.learner_ids),
        "lessons": len(rows.lessons),  # every lesson, not capped at 1,000
        "quiz_questions": sum(_question_count(r["spec"]) for r in rows.lessons),
        "achievements": len(rows.achievements),
        "subject_performance": sum(
            len(orjson.loads(p["subject_performance"] or "{}")) for p in rows.learner_profiles
        ),
        "knowledge_graph_nodes": sum(
            len(orjson.loads(p["graph"])["nodes"]) for p in rows.learner_profiles if p["graph"]
        ),
        "knowledge_graph_edges": sum(
            len(orjson.loads(p["graph"])["edges"]) for p in rows.learner_profiles if p["graph"]
        ),
        "quiz_answers": len(rows.quiz_answers),
        "concept_mastery": len(rows.concept_mastery),
    }
    manifest = orjson.loads((snapshot / "manifest.json").read_bytes())
    fingerprint = key_fingerprint(KEY.encode())
    assert manifest["pseudonym_key_fingerprint"] == fingerprint
    assert manifest["parquet_skipped"] == []
    dictionary = orjson.loads((snapshot / "schema.json").read_bytes())
    assert manifest["dictionary"]["path"] == "schema.json"
    assert dictionary["pseudonym_key_fingerprint"] == fingerprint
    assert dictionary["run_id"] == "pq"
    assert list(dictionary["tables"]) == list(TABLE_SCHEMAS)
    for table in TABLES:  # the declared schema, whatever the chunk held
        assert ds.dataset(snapshot / "parquet" / table).schema == TABLE_SCHEMAS[table]
    fs, directory = open_snapshot(str(snapshot))
    assert verify_snapshot(fs, directory, None).problems == []
    # A part whose footer disagrees with the manifest is a mismatch.
    pq.write_table(pa.table({"learner": [1]}), snapshot / "parquet/learners/part-00000.parquet")
    problems = verify_snapshot(fs, directory, None).problems
    assert any("1 rows, the manifest says 5" in p for p in problems)
    # The data dictionary is checked like every other file.
    (snapshot / "schema.json").write_bytes(b"{}")
    problems = verify_snapshot(fs, directory, None).problems
    assert any(p.startswith("schema.json: ") for p in problems), problems


def test_a_source_without_the_optional_tables_skips_theirs(
    tmp_path: Path, sqlite_demo: DemoSource
) -> None:
    copy = tmp_path / "four-tables.sqlite3"
    shutil.copyfile(sqlite_demo.url.removeprefix("sqlite:///"), copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DROP TABLE quiz_answers")
        conn.execute("DROP TABLE concept_mastery")
    conn.close()
    source = DemoSource("sqlite", f"sqlite:///{copy}", f"sqlite:///{copy}", sqlite_demo.rows)
    result = run_archive(
        source, tmp_path / "dest", run_id="four", chunk_size=50, parquet=True,
        secrets={"pseudonym_key": KEY},
    )  # fmt: skip
    snapshot = tmp_path / "dest" / "four"
    manifest = orjson.loads((snapshot / "manifest.json").read_bytes())
    assert manifest["parquet_skipped"] == ["concept_mastery", "quiz_answers"]
    assert sorted(result.parquet_rows) == sorted(set(TABLES) - {"quiz_answers", "concept_mastery"})
    dictionary = orjson.loads((snapshot / "schema.json").read_bytes())
    assert dictionary["skipped_tables"] == ["concept_mastery", "quiz_answers"]
    fs, directory = open_snapshot(str(snapshot))
    assert verify_snapshot(fs, directory, None).problems == []


@pytest.mark.postgres
def test_on_postgresql_the_optional_tables_come_through_arrow(
    postgres_demo: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The speed of the analyst side rests on this: with nothing odd in them, the optional
    tables never go through psycopg's rows on PostgreSQL (extract.arrow_read)."""

    def through_psycopg(*args: object, **kwargs: object) -> None:
        raise AssertionError("the optional tables were read through psycopg")

    monkeypatch.setattr("flows.analyst.iter_optional_batches", through_psycopg)
    result = run_archive(
        postgres_demo, tmp_path, run_id="arrow", chunk_size=5, parquet=True,
        secrets={"pseudonym_key": KEY},
    )  # fmt: skip
    assert result.parquet_rows["quiz_answers"] == len(postgres_demo.rows.quiz_answers) > 0
    assert result.parquet_rows["concept_mastery"] == len(postgres_demo.rows.concept_mastery) > 0
    assert result.counts.failed == 0
