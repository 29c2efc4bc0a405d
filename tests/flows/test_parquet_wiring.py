"""The archive's Parquet call site, with stand-ins for the two modules another branch provides
(`transform.tables.analyst_tables`, `load.parquet.write_parquet_part`): where each chunk's parts
go, what the manifest records, and that verify reads the footers. The tables' content is the
other branch's business and is tested there."""

from __future__ import annotations

import hashlib
import importlib.machinery
import io
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extract.records import LearnerRows
from learner_export.verify import verify_snapshot
from load.snapshot import open_snapshot
from tests.conftest import DemoSource
from tests.flows.conftest import run_archive

pytestmark = pytest.mark.usefixtures("prefect_server")


def _analyst_tables(rows: Sequence[LearnerRows], *, pseudonym_key: bytes) -> dict[str, pa.Table]:
    assert pseudonym_key == b"test-pseudonym-key"
    return {
        "learners": pa.table({"learner": [r.learner_id for r in rows]}),
        "lessons": pa.table({"lesson": [str(lesson["id"]) for r in rows for lesson in r.lessons]}),
    }


def _write_parquet_part(fs: Any, directory: str, name: str, table: pa.Table) -> Any:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue()
    fs.makedirs(directory, exist_ok=True)
    fs.pipe_file(f"{directory}/{name}", data)
    return types.SimpleNamespace(
        path=f"{directory}/{name}", rows=table.num_rows, bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


@pytest.fixture
def parquet_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, attribute, function in (
        ("transform.tables", "analyst_tables", _analyst_tables),
        ("load.parquet", "write_parquet_part", _write_parquet_part),
    ):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        setattr(module, attribute, function)
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.usefixtures("parquet_modules")
def test_each_chunk_writes_its_parts_and_the_manifest_counts_rows(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    result = run_archive(
        sqlite_demo, tmp_path, run_id="pq", chunk_size=5, parquet=True,
        secrets={"pseudonym_key": "test-pseudonym-key"},
    )  # fmt: skip
    snapshot = tmp_path / "pq"
    parts = sorted(str(p.relative_to(snapshot)) for p in snapshot.glob("parquet/*/*"))
    assert parts == [
        f"parquet/{t}/part-0000{i}.parquet" for t in ("learners", "lessons") for i in range(3)
    ]
    assert result.parquet_rows == {
        "learners": len(sqlite_demo.rows.learner_ids),
        "lessons": len(sqlite_demo.rows.lessons),  # every lesson, not capped at 1,000
    }
    fs, directory = open_snapshot(str(snapshot))
    assert verify_snapshot(fs, directory, None).problems == []
    # A part whose footer disagrees with the manifest is a mismatch.
    pq.write_table(pa.table({"learner": [1]}), snapshot / "parquet/learners/part-00000.parquet")
    problems = verify_snapshot(fs, directory, None).problems
    assert any("1 rows, the manifest says 5" in p for p in problems)
