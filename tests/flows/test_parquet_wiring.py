"""The archive's Parquet side outputs, end to end: where each chunk's parts go, what the manifest
records, that every lesson and question is there, and that verify reads the footers. The tables'
content is tested with their modules (tests/transform/test_tables.py)."""

from __future__ import annotations

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
from transform.tables import TABLE_SCHEMAS

pytestmark = pytest.mark.usefixtures("prefect_server")

TABLES = ("achievements", "learners", "lessons", "quiz_questions")


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
        secrets={"pseudonym_key": "test-pseudonym-key"},
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
    }
    for table in TABLES:  # the declared schema, whatever the chunk held
        assert ds.dataset(snapshot / "parquet" / table).schema == TABLE_SCHEMAS[table]
    fs, directory = open_snapshot(str(snapshot))
    assert verify_snapshot(fs, directory, None).problems == []
    # A part whose footer disagrees with the manifest is a mismatch.
    pq.write_table(pa.table({"learner": [1]}), snapshot / "parquet/learners/part-00000.parquet")
    problems = verify_snapshot(fs, directory, None).problems
    assert any("1 rows, the manifest says 5" in p for p in problems)
