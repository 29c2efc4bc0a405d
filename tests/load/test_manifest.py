from __future__ import annotations

from load.manifest import (
    ChunkPart,
    Failure,
    FileEntry,
    ParquetPartEntry,
    RunParameters,
    RunPlan,
    build_manifest,
    chunked,
    parquet_part_path,
    part_path,
)

PARAMETERS = RunParameters(
    learners="all", chunk_size=2, compress=None, encrypt=False, exported_by=None, parquet=True
)


def _file(learner_id: int, truncated: bool = False) -> FileEntry:
    return FileEntry(
        path=f"learner-data-{learner_id}-2024-01-15.json",
        learner_id=learner_id,
        bytes=10,
        sha256="0" * 64,
        lessons_exported=1000 if truncated else 3,
        lessons_total=1050 if truncated else 3,
        truncated=truncated,
    )


def test_chunked_sorts_dedupes_and_cuts() -> None:
    assert chunked([5, 3, 4, 3, 9], 2) == [[3, 4], [5, 9]]
    assert chunked([], 10) == []


def test_paths_are_zero_padded() -> None:
    assert part_path(7) == "parts/chunk-00007.json"
    assert parquet_part_path("lessons", 12) == "parquet/lessons/part-00012.parquet"


def test_manifest_counts_and_orders_what_the_parts_say() -> None:
    plan = RunPlan(
        run_id="r", started_at="s", export_date="e", parameters=PARAMETERS, chunks=[[3, 4], [5, 6]]
    )
    parts = [
        ChunkPart(
            index=1,
            learner_ids=[5, 6],
            files=[_file(6)],
            not_found=[5],
            parquet=[ParquetPartEntry(table="t", path="p1", rows=4, bytes=1, sha256="a" * 64)],
            seconds=1,
        ),
        ChunkPart(
            index=0,
            learner_ids=[3, 4],
            files=[_file(4, truncated=True)],
            failures=[Failure(learner_id=3, chunk=0, error="x")],
            parquet=[ParquetPartEntry(table="t", path="p0", rows=3, bytes=1, sha256="b" * 64)],
            seconds=1,
        ),
    ]
    manifest = build_manifest(plan, parts, finished_at="f", seconds=2.0)
    assert [f.learner_id for f in manifest.files] == [4, 6]
    assert manifest.counts.learners_requested == 4
    assert (manifest.counts.files, manifest.counts.truncated) == (2, 1)
    assert (manifest.counts.failed, manifest.counts.not_found) == (1, 1)
    assert manifest.parquet["t"].rows == 7
    assert [p.path for p in manifest.parquet["t"].parts] == ["p0", "p1"]
