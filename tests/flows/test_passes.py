"""flows.passes: on a source without the needed indexes an archive run reads its chunks in
ordered passes, and gives the snapshot, byte for byte, that the same run gives by index; it
resumes after a kill without redoing a finished chunk, and says in its summary how it read."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from extract.indexes import NEEDED_INDEXES
from flows import archive_steps, passes
from flows.chunk import ChunkJob, archive_chunk
from flows.options import ArchiveOptions, run_parameters
from load.manifest import ChunkPart
from tests.conftest import DemoSource, make_postgres_demo
from tests.flows.conftest import run_archive
from tests.pg import PostgresCluster

NOW = datetime(2026, 12, 1, 3, 0, 0, 250000, tzinfo=UTC)
KEY = "passes-pseudonym-key"
CHUNK_SIZE = 3
MISSING = ("lessons.learner_id", "achievements.learner_id", "learner_profiles.user_id")
TIMINGS = ("finished_at", "duration_seconds", "seconds")


def _drop_indexes(execute: object) -> None:
    for needed in NEEDED_INDEXES:
        execute(f"DROP INDEX {needed.name}")  # type: ignore[operator]


@pytest.fixture(scope="module")
def unindexed_sqlite(
    sqlite_demo: DemoSource, tmp_path_factory: pytest.TempPathFactory
) -> DemoSource:
    """A copy of `sqlite_demo` without the three indexes."""
    path = tmp_path_factory.mktemp("unindexed") / "demo.sqlite3"
    shutil.copyfile(sqlite_demo.url.removeprefix("sqlite:///"), path)
    with sqlite3.connect(path) as db:
        _drop_indexes(db.execute)
    db.close()
    url = f"sqlite:///{path}"
    return DemoSource("sqlite", url, url, sqlite_demo.rows)


@pytest.fixture(scope="module")
def unindexed_postgres(pg_cluster: PostgresCluster) -> DemoSource:
    source = make_postgres_demo(pg_cluster, "unindexed")
    with psycopg.connect(source.owner_url.replace("+psycopg", ""), autocommit=True) as db:
        _drop_indexes(db.execute)
    return source


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def both_ways(request: pytest.FixtureRequest) -> tuple[DemoSource, DemoSource]:
    """The demo with its indexes and the same rows without them, on SQLite or PostgreSQL."""
    kind = request.param
    indexed: DemoSource = request.getfixturevalue(
        f"{kind}_demo" if kind == "sqlite" else "postgres_demo"
    )
    bare: DemoSource = request.getfixturevalue(
        "unindexed_sqlite" if kind == "sqlite" else "unindexed_postgres"
    )
    assert bare.rows == indexed.rows
    return indexed, bare


def _job(source: DemoSource, dest: Path) -> ChunkJob:
    return ChunkJob(
        destination_url=str(dest), run_id="night", source_url=source.url, export_date=NOW,
        exported_by=None, compress=None, encryption_key=None, parquet=True, pseudonym_key=KEY,
    )  # fmt: skip


def _run(source: DemoSource, dest: Path) -> archive_steps.RunOutcome:
    options = ArchiveOptions(dest=str(dest), run_id="night", chunk_size=CHUNK_SIZE, parquet=True)
    return archive_steps.archive_run(
        _job(source, dest), run_parameters(options), now=NOW, tolerate_failures=False,
        audit_log=None, keep=None, log=logging.getLogger("passes"),
    )  # fmt: skip


def _snapshot_files(dest: Path) -> dict[str, bytes]:
    """Every file of the published snapshot, the manifest without its timings."""
    snapshot = dest / "night"
    files = {
        str(p.relative_to(snapshot)): p.read_bytes()
        for p in sorted(snapshot.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    manifest = (snapshot / "manifest.json").read_text()
    files["manifest.json"] = "\n".join(
        line for line in manifest.splitlines() if not any(f'"{t}"' in line for t in TIMINGS)
    ).encode()
    return files


def test_both_ways_of_reading_give_the_same_snapshot_byte_for_byte(
    both_ways: tuple[DemoSource, DemoSource], tmp_path: Path
) -> None:
    indexed, bare = both_ways
    by_index = _run(indexed, tmp_path / "indexed")
    by_pass = _run(bare, tmp_path / "bare")
    assert by_index.read == "read by index"
    assert by_pass.read == passes.read_way(MISSING)
    assert by_pass.read.startswith("one ordered pass per table: index missing on lessons.")
    assert by_pass.chunks_run == by_index.chunks_run > 3  # several chunks in the one pass
    expected = _snapshot_files(tmp_path / "indexed")
    assert sum(name.startswith("learner-data-") for name in expected) == len(
        indexed.rows.learner_ids
    )
    assert any(name.endswith(".parquet") for name in expected)
    assert _snapshot_files(tmp_path / "bare") == expected


class Killed(BaseException):
    """A kill -9 at a chunk boundary: nothing after it runs, no clean-up of the run."""


def test_a_pass_killed_midway_resumes_without_redoing_finished_chunks(
    sqlite_demo: DemoSource, unindexed_sqlite: DemoSource, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    started: list[int] = []
    kills = [2]

    def chunk(job: ChunkJob, index: int, ids: list[int], **kw: object) -> ChunkPart:
        started.append(index)
        if kills and index == kills[0]:
            kills.pop()
            raise Killed
        return archive_chunk(job, index, ids, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(passes, "archive_chunk", chunk)
    with pytest.raises(Killed):
        _run(unindexed_sqlite, tmp_path / "bare")
    assert started == [0, 1, 2]
    started.clear()
    outcome = _run(unindexed_sqlite, tmp_path / "bare")
    chunks = -(-len(unindexed_sqlite.rows.learner_ids) // CHUNK_SIZE)
    assert started == list(range(2, chunks))  # 0 and 1 are not read again
    assert outcome.chunks_run == chunks - 2
    _run(sqlite_demo, tmp_path / "indexed")
    assert _snapshot_files(tmp_path / "bare") == _snapshot_files(tmp_path / "indexed")


def test_a_rerun_pass_skips_its_finished_chunks_and_a_failed_one_keeps_them(
    unindexed_sqlite: DemoSource, tmp_path: Path
) -> None:
    ids = unindexed_sqlite.rows.learner_ids
    chunks = {0: ids[:4], 1: ids[4:8], 2: ids[8:]}
    job = _job(unindexed_sqlite, tmp_path)
    first = passes.archive_pass(job, {0: chunks[0], 1: chunks[1]})
    assert [p.index for p in first] == [0, 1]
    again = passes.archive_pass(job, chunks)
    assert again[:2] == first  # the recorded parts, timings and all: not exported again
    assert again[2].files == len(ids[8:])  # chunk 2 exported now
    parts, errors = passes.failed_pass(job, [1, 2, 3], "boom")
    assert sorted(parts) == [1, 2] and errors == {3: "boom"}


def test_pass_planning() -> None:
    assert passes.passes_of([3, 4, 5, 6, 7], 2) == [[3, 4, 5], [6, 7]]
    assert passes.passes_of([1, 2], 8) == [[1], [2]]
    assert passes.passes_of([], 4) == []
    assert passes.pass_count(ThreadPoolTaskRunner(max_workers=3), 2) == 3
    assert passes.pass_count(object(), 2) == 2
    assert passes.read_way(()) == "read by index"


@pytest.mark.usefixtures("prefect_server")
def test_the_flow_reads_in_passes_and_its_summary_says_so(
    unindexed_sqlite: DemoSource, tmp_path: Path
) -> None:
    result = run_archive(
        unindexed_sqlite, tmp_path, chunk_size=CHUNK_SIZE,
        task_runner=ThreadPoolTaskRunner(max_workers=2),
    )  # fmt: skip
    assert result.read == passes.read_way(MISSING)
    assert result.counts.files == len(unindexed_sqlite.rows.learner_ids)
    assert result.counts.failed == 0
    again = run_archive(unindexed_sqlite, tmp_path, chunk_size=CHUNK_SIZE, run_id=result.run_id)
    assert (again.status, again.read) == ("already-complete", None)
