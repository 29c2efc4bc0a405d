from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pytest
from fsspec.implementations.local import LocalFileSystem

from flows.chunk import ChunkJob, archive_chunk, export_one
from flows.run import open_plan, publish_run, write_manifest
from learner_export.verify import verify_snapshot
from load.destination import open_destination, open_snapshot
from load.manifest import ChunkPart, RunParameters, part_path
from load.parquet import promote_parts
from tests.conftest import DemoSource
from transform.schema import schema_errors

EXPORT_DATE = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def _job(source: DemoSource, dest: Path, **changes: object) -> ChunkJob:
    values: dict[str, object] = {
        "destination_url": str(dest),
        "run_id": "r1",
        "source_url": source.url,
        "export_date": EXPORT_DATE,
        "exported_by": 1,
        "compress": None,
        "encryption_key": None,
        "parquet": False,
        "pseudonym_key": None,
    }
    values.update(changes)
    return ChunkJob(**values)  # type: ignore[arg-type]


def test_a_chunk_writes_one_valid_document_per_learner_then_its_part(
    demo_source: DemoSource, tmp_path: Path
) -> None:
    ids = demo_source.rows.learner_ids
    part = archive_chunk(_job(demo_source, tmp_path), 0, ids)
    run_dir = tmp_path / ".incomplete" / "r1"
    assert sorted(f.learner_id for f in part.files) == sorted(ids)
    for entry in part.files:
        data = (run_dir / entry.path).read_bytes()
        assert entry.path == f"learner-data-{entry.learner_id}-2024-01-15.json"
        assert (entry.bytes, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        document = orjson.loads(data)
        assert schema_errors(document) == []
        assert document["learner"]["id"] == entry.learner_id
        assert len(document["lessons"]) == entry.lessons_exported
    recorded = ChunkPart.model_validate_json((run_dir / part_path(0)).read_bytes())
    assert recorded == part
    assert part.failures == [] and part.not_found == []


def test_truncation_and_malformed_values_are_recorded(
    demo_source: DemoSource, tmp_path: Path
) -> None:
    big = demo_source.rows.learner_ids[1]  # SPECIAL_LEARNERS["big"]
    part = archive_chunk(_job(demo_source, tmp_path), 0, demo_source.rows.learner_ids)
    entries = {f.learner_id: f for f in part.files}
    assert entries[big].truncated
    assert (entries[big].lessons_exported, entries[big].lessons_total) == (1000, 1050)
    assert sum(f.truncated for f in part.files) == 1
    if demo_source.kind == "sqlite":  # PostgreSQL's json type cannot hold the malformed text
        assert [(p.table, p.column) for p in entries[3].problems] == [("lessons", "spec")]


def test_ids_that_are_not_learners_are_reported(demo_source: DemoSource, tmp_path: Path) -> None:
    part = archive_chunk(_job(demo_source, tmp_path), 4, [1, 2, 3, 999_999])
    assert [f.learner_id for f in part.files] == [3]
    assert part.not_found == [1, 2, 999_999]


def test_the_chunk_and_the_one_learner_export_write_the_same_bytes(
    demo_source: DemoSource, tmp_path: Path
) -> None:
    part = archive_chunk(_job(demo_source, tmp_path / "a"), 0, [3, 4])
    single = export_one(_job(demo_source, tmp_path / "b"), 4)
    assert single.sha256 == next(f.sha256 for f in part.files if f.learner_id == 4)
    assert (tmp_path / "b" / single.path).is_file()


def test_an_unreachable_source_fails_every_learner_of_the_chunk(tmp_path: Path) -> None:
    source = DemoSource("sqlite", f"sqlite:///{tmp_path}/missing.db", "", None)  # type: ignore[arg-type]
    part = archive_chunk(_job(source, tmp_path), 2, [3, 4])
    assert [(f.learner_id, f.chunk) for f in part.failures] == [(3, 2), (4, 2)]
    assert "does not exist" in part.failures[0].error


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_documents_decode_to_the_plain_bytes(
    sqlite_demo: DemoSource, tmp_path: Path, compress: str
) -> None:
    from load.codec import decode_stored

    plain = archive_chunk(_job(sqlite_demo, tmp_path / "p"), 0, [3]).files[0]
    packed = archive_chunk(_job(sqlite_demo, tmp_path / "c", compress=compress), 0, [3]).files[0]
    stored = (tmp_path / "c" / ".incomplete" / "r1" / packed.path).read_bytes()
    assert hashlib.sha256(decode_stored(packed.path, stored)).hexdigest() == plain.sha256


def test_no_parquet_glob_matches_a_run_in_progress_until_it_is_published(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    destination = open_destination(str(tmp_path))
    parameters = RunParameters(
        learners="all", chunk_size=6, compress=None, encrypt=False, exported_by=None, parquet=True
    )
    ids = sqlite_demo.rows.learner_ids
    plan = open_plan(destination, "r1", parameters, now=EXPORT_DATE, learner_ids=lambda: ids)
    job = _job(sqlite_demo, tmp_path, parquet=True, pseudonym_key="tests-only pseudonym key")
    parts = {i: archive_chunk(job, i, chunk).tally() for i, chunk in enumerate(plan.chunks)}
    in_progress = tmp_path / ".incomplete" / "r1" / "parquet" / "lessons"
    assert sorted(p.name for p in in_progress.iterdir()) == [
        "part-00000.parquet.inprogress",
        "part-00001.parquet.inprogress",
    ]
    assert list(tmp_path.rglob("*.parquet")) == []
    with pytest.raises(duckdb.IOException, match="No files found"):
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/**/lessons/*.parquet')")

    manifest = write_manifest(
        destination, plan, parts, chunk_errors={}, tolerate_failures=False,
        now=EXPORT_DATE, seconds=1.0,
    )  # fmt: skip
    publish_run(destination, manifest)
    published = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet*"))
    assert published == sorted(
        f"r1/{part.path}" for table in manifest.parquet.values() for part in table.parts
    )
    rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/**/lessons/*.parquet')")
    assert rows.fetchall() == [(len(sqlite_demo.rows.lessons),)]
    fs, directory = open_snapshot(str(tmp_path / "r1"))
    assert verify_snapshot(fs, directory, None).problems == []


def test_publishing_parts_again_after_an_interruption_changes_nothing(tmp_path: Path) -> None:
    fs = LocalFileSystem()
    (tmp_path / "parquet" / "t").mkdir(parents=True)
    (tmp_path / "parquet" / "t" / "part-00000.parquet.inprogress").write_bytes(b"a")
    (tmp_path / "parquet" / "t" / "part-00001.parquet").write_bytes(b"b")  # renamed before a kill
    paths = ["parquet/t/part-00000.parquet", "parquet/t/part-00001.parquet"]
    for _ in range(2):
        promote_parts(fs, str(tmp_path), paths)
        assert sorted(p.name for p in (tmp_path / "parquet" / "t").iterdir()) == [
            "part-00000.parquet",
            "part-00001.parquet",
        ]
