from __future__ import annotations

import io

import pytest
from pydantic import ValidationError

from load.errors import TerminalLoadError
from load.manifest import (
    ChunkPart,
    Failure,
    FileEntry,
    Manifest,
    ManifestError,
    ParquetPartEntry,
    RunParameters,
    RunPlan,
    build_head,
    build_manifest,
    chunked,
    manifest_entries,
    manifest_head,
    manifest_pieces,
    parquet_part_path,
    part_path,
    to_json,
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


def _plan(chunks: list[list[int]]) -> RunPlan:
    return RunPlan(
        run_id="r", started_at="s", export_date="e", parameters=PARAMETERS, chunks=chunks
    )


def _parts(chunks: list[list[int]]) -> list[ChunkPart]:
    return [
        ChunkPart(index=i, learner_ids=ids, files=[_file(n, n % 7 == 0) for n in ids], seconds=0)
        for i, ids in enumerate(chunks)
    ]


def test_a_streamed_manifest_is_the_manifest_and_streams_back_entry_by_entry() -> None:
    """`manifest_pieces` writes the JSON of the whole `Manifest` (files last, one per line), and
    `manifest_entries` gives its entries back in order, reading one line per entry."""
    chunks = [[1, 2, 3], [4, 5, 6], [7, 8]]
    whole = build_manifest(_plan(chunks), _parts(chunks), finished_at="f", seconds=1.0)
    entries = (f for part in _parts(chunks) for f in part.files)
    data = b"".join(manifest_pieces(whole.head(), entries))
    assert Manifest.model_validate_json(data) == whole
    lines = data.splitlines()
    opened = lines.index(b'  "files": [')
    assert len(lines) == opened + len(whole.files) + 3  # each entry on its own line, then "]}"
    assert list(manifest_entries(io.BytesIO(data))) == whole.files
    empty = b"".join(manifest_pieces(whole.head(), []))
    assert list(manifest_entries(io.BytesIO(empty))) == []
    assert Manifest.model_validate_json(empty).files == []


def test_a_manifest_written_whole_is_still_read() -> None:
    """Snapshots written before the entries were streamed (one field per line) read the same."""
    chunks = [[1, 2], [3]]
    whole = build_manifest(_plan(chunks), _parts(chunks), finished_at="f", seconds=1.0)
    assert list(manifest_entries(io.BytesIO(to_json(whole)))) == whole.files
    none = whole.model_copy(update={"files": []})
    assert list(manifest_entries(io.BytesIO(to_json(none)))) == []
    swapped = whole.model_copy(update={"files": whole.files[::-1]})
    with pytest.raises(ManifestError, match="learner 2 is listed twice or out of order"):
        list(manifest_entries(io.BytesIO(to_json(swapped))))


@pytest.mark.parametrize(
    ("ids", "problem"),
    [([1, 3, 2], "learner 2 comes after learner 3"), ([1, 1], "learner 1 comes after learner 1")],
)
def test_entries_out_of_order_or_twice_are_refused(ids: list[int], problem: str) -> None:
    head = build_manifest(_plan([ids]), [], finished_at="f", seconds=0).head()
    with pytest.raises(TerminalLoadError, match=problem):
        b"".join(manifest_pieces(head, [_file(i) for i in ids]))


def test_a_damaged_streamed_manifest_is_refused() -> None:
    chunks = [[1, 2, 3]]
    whole = build_manifest(_plan(chunks), _parts(chunks), finished_at="f", seconds=1.0)
    data = b"".join(manifest_pieces(whole.head(), whole.files))
    lines = data.splitlines(keepends=True)
    opened = lines.index(b'  "files": [\n')
    cut = b"".join(lines[: opened + 2])
    with pytest.raises(TerminalLoadError, match="cut short"):
        list(manifest_entries(io.BytesIO(cut)))
    swapped = [*lines[: opened + 1], lines[opened + 2], lines[opened + 1], *lines[opened + 3 :]]
    with pytest.raises(TerminalLoadError, match="listed twice or out of order"):
        list(manifest_entries(io.BytesIO(b"".join(swapped))))
    bad = data.replace(b'"learner_id":2', b'"learner_id":-2')
    with pytest.raises(ManifestError, match=r"\(files\.1\.learner_id: Input should be greater"):
        list(manifest_entries(io.BytesIO(bad)))
    assert b"-2" in bad
    followed = data.replace(b"\n  ]\n}\n", b'\n  ],\n  "report": null\n}\n')
    with pytest.raises(ManifestError, match=r"\(text follows its list of files\)"):
        list(manifest_entries(io.BytesIO(followed)))


def test_the_head_is_read_without_the_entries_of_a_streamed_manifest() -> None:
    """`manifest_head` stops at the entries of a manifest `manifest_pieces` wrote: an entry
    that is not valid does not stop the head from being read (it is found when the entries
    are); an earlier version's manifest (one field per line) or compact JSON is read whole."""
    chunks = [[1, 2], [3]]
    whole = build_manifest(_plan(chunks), _parts(chunks), finished_at="f", seconds=1.0)
    data = b"".join(manifest_pieces(whole.head(), whole.files))
    damaged = data.replace(b'"learner_id":3', b'"learner_id":"x"')
    assert manifest_head(io.BytesIO(damaged)) == whole.head()
    empty = b"".join(manifest_pieces(whole.head(), []))
    assert manifest_head(io.BytesIO(empty)) == whole.head()
    for other in (to_json(whole), whole.model_dump_json().encode()):
        assert manifest_head(io.BytesIO(other)) == whole.head()
    with pytest.raises(ValidationError, match="run_id"):
        manifest_head(io.BytesIO(data.replace(b'"run_id"', b'"run"')))


def test_a_tally_counts_what_its_part_lists() -> None:
    part = _parts([[6, 7, 14]])[0]
    tally = part.tally()
    assert (tally.index, tally.files, tally.bytes, tally.truncated) == (0, 3, 30, 2)
    assert build_head(_plan([[6, 7, 14]]), [tally], finished_at="f", seconds=1.0) == (
        build_manifest(_plan([[6, 7, 14]]), [part], finished_at="f", seconds=1.0).head()
    )
