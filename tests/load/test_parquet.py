"""load/parquet.py: atomic parts, and the snapshot layout read by pandas, pyarrow and DuckDB."""

from __future__ import annotations

import gc
import hashlib
import re
import stat
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from extract.records import LearnerRows
from load.errors import TerminalLoadError
from load.files import FILE_MODE
from load.parquet import (
    PARQUET_DIRECTORY,
    ParquetPart,
    ParquetPartWriter,
    part_name,
    read_parquet_rows,
    write_parquet_part,
)
from tests.analyst import KEY, RUN, demo_chunks, demo_learners, personal_values
from tests.conftest import DemoSource
from transform.analyst_schema import LEARNER_TABLES
from transform.tables import TABLE_SCHEMAS, analyst_tables

CHUNK_LEARNERS = 5


def small_table() -> pa.Table:
    return pa.table({"n": pa.array([1, 2, 3], pa.int32()), "s": ["a", None, "c"]})


def write_snapshot(
    fs: fsspec.AbstractFileSystem, dest: str, run_id: str, source: DemoSource
) -> int:
    """Per chunk, build the tables of the learners' rows and write one part of each."""
    chunks = 0
    for index, rows in enumerate(demo_chunks(source, CHUNK_LEARNERS)):
        for name, table in analyst_tables(rows, pseudonym_key=KEY, run=RUN).items():
            directory = f"{dest}/{run_id}/{PARQUET_DIRECTORY}/{name}"
            write_parquet_part(fs, directory, part_name(index), table)
        chunks += 1
    return chunks


@pytest.fixture
def snapshots(tmp_path: Path, demo_source: DemoSource) -> tuple[Path, DemoSource]:
    """Two snapshots of the demo under one destination, written part by part."""
    fs = LocalFileSystem()
    for run_id in ("2026-01-01T000000Z", "2026-01-02T000000Z"):
        assert write_snapshot(fs, str(tmp_path), run_id, demo_source) == 3
    return tmp_path, demo_source


# --- one part -------------------------------------------------------------------------------------


def test_a_part_is_one_zstd_parquet_file_with_its_checksum(tmp_path: Path) -> None:
    part = write_parquet_part(LocalFileSystem(), str(tmp_path / "t"), part_name(7), small_table())
    path = tmp_path / "t" / "part-00007.parquet"
    data = path.read_bytes()
    assert part == ParquetPart(str(path), 3, len(data), hashlib.sha256(data).hexdigest())
    assert pq.read_table(path).equals(small_table())
    metadata = pq.ParquetFile(path).metadata
    assert {metadata.row_group(0).column(i).compression for i in range(2)} == {"ZSTD"}
    assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert read_parquet_rows(LocalFileSystem(), str(path)) == 3


def test_a_part_written_again_is_replaced(tmp_path: Path) -> None:
    fs = LocalFileSystem()
    write_parquet_part(fs, str(tmp_path), "part-00000.parquet", small_table())
    part = write_parquet_part(fs, str(tmp_path), "part-00000.parquet", small_table().slice(0, 1))
    assert part.rows == read_parquet_rows(fs, part.path) == 1


def test_any_fsspec_file_system_gets_a_moved_complete_file() -> None:
    fs = MemoryFileSystem()
    part = write_parquet_part(fs, "/dest/run/parquet/lessons", part_name(0), small_table())
    assert part.path == "/dest/run/parquet/lessons/part-00000.parquet"
    assert fs.ls("/dest/run/parquet/lessons", detail=False) == [part.path]
    assert hashlib.sha256(fs.cat_file(part.path)).hexdigest() == part.sha256
    assert read_parquet_rows(fs, part.path) == 3


class BrokenMove(MemoryFileSystem):
    """A file system whose move fails half-way (after the temporary file was written)."""

    def mv(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")


def test_a_failed_write_leaves_no_file_under_either_name() -> None:
    fs = BrokenMove()
    with pytest.raises(TerminalLoadError, match=re.escape("/d/part-00000.parquet")):
        write_parquet_part(fs, "/d", part_name(0), small_table())
    assert fs.ls("/d", detail=False) == []


def test_a_failed_local_write_leaves_no_file_under_either_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(TerminalLoadError, match=re.escape("part-00000.parquet")):
        write_parquet_part(LocalFileSystem(), str(tmp_path), part_name(0), small_table())
    assert list(tmp_path.iterdir()) == []


# --- a part streamed a row group at a time -------------------------------------------------------


@pytest.mark.parametrize("fs", [LocalFileSystem(), MemoryFileSystem()], ids=["local", "memory"])
def test_a_streamed_part_has_one_row_group_per_write(fs: Any, tmp_path: Path) -> None:
    directory = str(tmp_path / "t") if isinstance(fs, LocalFileSystem) else "/streamed/t"
    writer = ParquetPartWriter(fs, directory, part_name(3), small_table().schema)
    assert fs.ls(directory, detail=False) != [f"{directory}/part-00003.parquet"]
    for _ in range(3):
        writer.write(small_table())
    writer.write(small_table().slice(0, 0))  # an empty batch adds no row group
    part = writer.close()
    data = fs.cat_file(part.path)
    assert part == ParquetPart(part.path, 9, len(data), hashlib.sha256(data).hexdigest())
    assert fs.ls(directory, detail=False) == [part.path]  # the temporary file was moved
    with fs.open(part.path, "rb") as handle:
        file = pq.ParquetFile(handle)
        assert file.metadata.num_row_groups == 3
        assert file.read().equals(pa.concat_tables([small_table()] * 3))
    if isinstance(fs, LocalFileSystem):
        assert stat.S_IMODE(Path(part.path).stat().st_mode) == FILE_MODE


def test_an_aborted_or_failed_stream_leaves_nothing(tmp_path: Path) -> None:
    writer = ParquetPartWriter(LocalFileSystem(), str(tmp_path), part_name(0), small_table().schema)
    writer.write(small_table())
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    fs = BrokenMove()
    writer = ParquetPartWriter(fs, "/d", part_name(0), small_table().schema)
    writer.write(small_table())
    with pytest.raises(TerminalLoadError, match=re.escape("/d/part-00000.parquet")):
        writer.close()
    assert fs.ls("/d", detail=False) == []


def test_an_empty_stream_is_a_part_of_the_schema(tmp_path: Path) -> None:
    writer = ParquetPartWriter(LocalFileSystem(), str(tmp_path), part_name(0), small_table().schema)
    part = writer.close()
    assert part.rows == read_parquet_rows(LocalFileSystem(), part.path) == 0
    assert pq.read_schema(part.path).equals(small_table().schema)


@pytest.mark.parametrize("content", [None, b"", b"PAR1 not really", b"{}\n"])
def test_reading_rows_of_a_missing_or_broken_file_names_it(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "part-00000.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TerminalLoadError, match=re.escape(str(path))):
        read_parquet_rows(LocalFileSystem(), str(path))


def test_reading_rows_of_a_truncated_part_names_it(tmp_path: Path) -> None:
    part = write_parquet_part(LocalFileSystem(), str(tmp_path), part_name(0), small_table())
    Path(part.path).write_bytes(Path(part.path).read_bytes()[: part.bytes // 2])
    with pytest.raises(TerminalLoadError, match=re.escape("part-00000.parquet")):
        read_parquet_rows(LocalFileSystem(), part.path)


# --- the snapshot layout, read as analysts read it ------------------------------------------------


def test_one_snapshot_reads_with_pandas_pyarrow_and_duckdb(
    snapshots: tuple[Path, DemoSource],
) -> None:
    dest, source = snapshots
    expected = analyst_tables(
        [learner for chunk in demo_chunks(source, 1_000) for learner in chunk],
        pseudonym_key=KEY,
        run=RUN,
    )
    for name in LEARNER_TABLES:
        schema = TABLE_SCHEMAS[name]
        directory = dest / "2026-01-01T000000Z" / "parquet" / name
        rows = expected[name].num_rows
        assert sorted(p.name for p in directory.iterdir()) == [part_name(i) for i in range(3)]
        for path in directory.iterdir():
            assert pq.read_schema(path).equals(schema, check_metadata=True), path
        assert len(pd.read_parquet(directory)) == rows
        dataset = ds.dataset(directory, format="parquet")
        assert dataset.schema.equals(schema, check_metadata=True)
        assert (
            dataset.to_table()
            .sort_by(_sort_keys(name))
            .equals(expected[name].sort_by(_sort_keys(name)))
        )
        query = f"SELECT count(*) FROM read_parquet('{directory}/*.parquet')"
        assert duckdb.sql(query).fetchall() == [(rows,)]


def _sort_keys(table: str) -> list[tuple[str, str]]:
    keys = {
        "learners": ["learner_pseudonym"],
        "lessons": ["lesson_id"],
        "quiz_questions": ["lesson_id", "question_index"],
        "achievements": ["achievement_id"],
        "subject_performance": ["learner_pseudonym", "subject"],
        "knowledge_graph_nodes": ["learner_pseudonym", "node_index"],
        "knowledge_graph_edges": ["learner_pseudonym", "edge_index"],
    }
    return [(key, "ascending") for key in keys[table]]


def test_empty_and_all_null_parts_read_with_the_others(
    tmp_path: Path, sqlite_demo: DemoSource
) -> None:
    columns = "template_id module_id status subject category difficulty image_paths spec score"
    lesson = dict.fromkeys([*columns.split(), "created_at", "completed_at"])
    nulls = LearnerRows(
        learner_id=99,
        user={"id": 99, "created_at": None},
        profile=None,
        lessons=[lesson | {"id": "l-1", "learner_id": 99}],
        lesson_total=1,
        achievements=[],
        json_checked=False,
    )
    chunks = [[], [nulls], next(demo_chunks(sqlite_demo, CHUNK_LEARNERS))]
    fs = LocalFileSystem()
    for index, rows in enumerate(chunks):
        for name, table in analyst_tables(rows, pseudonym_key=KEY, run=RUN).items():
            write_parquet_part(fs, str(tmp_path / name), part_name(index), table)
    for name in LEARNER_TABLES:
        schema = TABLE_SCHEMAS[name]
        dataset = ds.dataset(tmp_path / name, format="parquet")
        assert dataset.schema.equals(schema, check_metadata=True)
        assert dataset.to_table().schema.equals(schema)
        assert len(pd.read_parquet(tmp_path / name)) == dataset.count_rows()
        query = f"SELECT count(*) FROM read_parquet('{tmp_path / name}/*.parquet')"
        assert duckdb.sql(query).fetchall() == [(dataset.count_rows(),)]


def test_pandas_keeps_types_with_the_arrow_backend(snapshots: tuple[Path, DemoSource]) -> None:
    dest, _ = snapshots
    lessons = pd.read_parquet(dest / "2026-01-01T000000Z" / "parquet" / "lessons")
    assert str(lessons["created_at"].dtype) == "datetime64[ms, UTC]"
    typed = pd.read_parquet(
        dest / "2026-01-01T000000Z" / "parquet" / "lessons", dtype_backend="pyarrow"
    )
    assert str(typed["score"].dtype) == "int32[pyarrow]"


def test_all_snapshots_read_together_with_the_snapshot_as_a_column(
    snapshots: tuple[Path, DemoSource],
) -> None:
    dest, _ = snapshots
    one = ds.dataset(dest / "2026-01-01T000000Z" / "parquet" / "lessons").count_rows()

    files = sorted(str(p) for p in dest.glob("*/parquet/lessons/*.parquet"))
    dataset = ds.dataset(
        files,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("snapshot", pa.string())])),
        partition_base_dir=str(dest),
    )
    snapshot_counts = dataset.to_table(columns=["snapshot"]).column("snapshot").value_counts()
    assert {item["values"].as_py(): item["counts"].as_py() for item in snapshot_counts} == {
        "2026-01-01T000000Z": one,
        "2026-01-02T000000Z": one,
    }
    assert dataset.schema.remove(dataset.schema.get_field_index("snapshot")).equals(
        TABLE_SCHEMAS["lessons"]
    )

    rows = duckdb.sql(
        f"""SELECT regexp_extract(filename, '([^/]+)/parquet/lessons/', 1) AS snapshot, count(*)
            FROM read_parquet('{dest}/*/parquet/lessons/*.parquet', filename = true)
            GROUP BY ALL ORDER BY snapshot"""
    ).fetchall()
    assert rows == [("2026-01-01T000000Z", one), ("2026-01-02T000000Z", one)]

    assert len(pd.read_parquet(files)) == 2 * one


def test_a_learner_keeps_its_pseudonym_across_snapshots(
    snapshots: tuple[Path, DemoSource],
) -> None:
    dest, _ = snapshots
    rows = duckdb.sql(
        f"""SELECT count(DISTINCT learner_pseudonym), count(*)
            FROM read_parquet('{dest}/*/parquet/learners/*.parquet')"""
    ).fetchall()
    assert rows == [(12, 24)]


def test_no_personal_value_is_in_any_written_byte(snapshots: tuple[Path, DemoSource]) -> None:
    dest, source = snapshots
    personal = personal_values(source.rows)
    files = sorted(dest.rglob("*.parquet"))
    assert len(files) == 2 * len(LEARNER_TABLES) * 3
    for path in files:
        raw = path.read_bytes()  # footers, statistics and schema metadata are not compressed
        decoded = pq.read_table(path).to_pylist()  # and the compressed pages, decompressed
        text = repr(decoded) + repr(pq.read_metadata(path).to_dict())
        for value in personal:
            assert value.encode() not in raw, path
            assert value not in text, path


# --- memory ---------------------------------------------------------------------------------------


def peak_memory(run: Callable[[], None]) -> int:
    """Peak bytes held while `run` runs: Python objects (tracemalloc) plus Arrow buffers, which
    tracemalloc cannot see, counted in a pool of their own for this run."""
    previous = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(previous)
    pa.set_memory_pool(pool)
    gc.collect()
    tracemalloc.start()
    try:
        run()
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(previous)
    arrow_peak: int = pool.max_memory() or 0
    return python_peak + arrow_peak


def test_memory_is_bounded_by_one_chunk(tmp_path: Path, sqlite_demo: DemoSource) -> None:
    # One chunk's rows, the input of every round: the demo without its 1,050-lesson learner,
    # which would only make the test slower.
    chunk = [rows for rows in demo_learners(sqlite_demo) if len(rows.lessons) < 100]

    def write_chunks(count: int, kept: list[Any] | None = None) -> Callable[[], None]:
        def run() -> None:
            for index in range(count):
                tables = analyst_tables(chunk, pseudonym_key=KEY, run=RUN)
                for name, table in tables.items():
                    directory = str(tmp_path / name)
                    write_parquet_part(LocalFileSystem(), directory, part_name(index), table)
                if kept is not None:
                    kept.append(tables)

        return run

    two = peak_memory(write_chunks(2))
    twenty = peak_memory(write_chunks(20))
    hoarding = peak_memory(write_chunks(20, kept=[]))
    print(f"peak bytes: 2 chunks {two}, 20 chunks {twenty}, 20 chunks kept {hoarding}")
    assert twenty < 1.5 * two, (two, twenty)
    assert hoarding > 2 * two, (two, hoarding)  # the measure does see tables that pile up
    assert sum(1 for _ in tmp_path.rglob("*.parquet")) == len(LEARNER_TABLES) * 20
